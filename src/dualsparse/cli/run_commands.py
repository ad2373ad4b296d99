"""Commands that train, evaluate and demonstrate models."""

from __future__ import annotations

import json
from pathlib import Path

from dualsparse.cli.common import add_data_args, add_run_split_args, run_split
from dualsparse.errors import DualsparseError


def register(sub) -> None:
    """Add this module's subcommands (parsers) to ``sub``; HANDLERS maps them to functions."""
    p = sub.add_parser(
        "train",
        help="train an EGRU/LSTM/GRU language model",
        description="Train a language model into a run directory, or resume one.",
    )
    p.add_argument("--preset", help="a shipped preset (see `dualsparse presets`)")
    p.add_argument("--config", metavar="FILE", help="a YAML/JSON config with model: and train:")
    add_data_args(p)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="stop between two windows, with a checkpoint, so that training and its closing "
        "validation end within M minutes (no window is started that would end past that, by "
        "the last window's time); the validation's time is the last validation's, or "
        "before the first one a few validation windows (half a second of them at least) "
        "timed at the start and scaled to the split (an estimate: a machine that slows down "
        "can overrun by the difference). Not "
        "counted: start-up, data loading and the final checkpoint's write",
    )
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--device", help="cpu or cuda (override train.device)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=0.002 (repeatable)",
    )
    p.add_argument(
        "--other-data",
        action="store_true",
        help="with --resume: train on the --data/--dataset given although the run recorded "
        "other data (it is then recorded as the run's data)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = sub.add_parser(
        "evaluate",
        help="perplexity and per-layer activity of a run",
        description="Evaluate a trained run on a split.",
    )
    add_run_split_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p = sub.add_parser(
        "demo",
        help="offline demo on a synthetic source with known entropy",
        description="Generate a corpus from a seeded source whose true perplexity "
        "is exact, train a small EGRU and LSTM, compare.",
    )
    p.add_argument("--out", metavar="DIR", default="runs/demo", help="where to put corpus and runs")
    p.add_argument(
        "--minutes-per-model",
        type=float,
        default=None,
        help="training budget per model (default: the demo's own)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser(
        "presets", help="list the shipped presets", description="List the shipped presets."
    )


def cmd_train(args) -> int:
    from dualsparse.config import resolve_config
    from dualsparse.runs import format_train_summary, new_run, resume_run
    from dualsparse.training.distributed import torchrun_launch

    overrides = list(args.overrides)
    for key, value in (("epochs", args.epochs), ("seed", args.seed), ("device", args.device)):
        if value is not None:
            overrides.append(f"train.{key}={value}")
    data = (args.data, args.dataset, args.cache_dir)
    budget = {"max_minutes": args.max_minutes, "progress": not args.no_progress}
    if args.resume:
        if args.out or args.preset or args.config:
            raise DualsparseError(
                "--resume RUN takes the run's own config; drop --out/--preset/--config"
            )
        summary = resume_run(args.resume, overrides, *data, other_data=args.other_data, **budget)
    else:
        if not args.out:
            raise DualsparseError("give --out RUN_DIR for the new run (or --resume RUN_DIR)")
        if args.other_data:
            raise DualsparseError("--other-data goes with --resume; a new run records its data")
        summary = new_run(
            args.out, resolve_config(args.preset, args.config, overrides), *data, **budget
        )
    launch = torchrun_launch()  # under torchrun only rank 0 reports
    if launch is not None and launch.rank != 0:
        return 0
    print(format_train_summary(summary))
    if summary.stopped in ("interrupted", "time-budget"):
        print(f"continue with: dualsparse train --resume {summary.run_dir}")
    return 0


def cmd_evaluate(args) -> int:
    from dualsparse.evaluation import evaluate, format_eval_table

    run, data, batch, bptt = run_split(args)
    result = evaluate(run.model, data, batch, bptt, split=args.split, progress=args.progress)
    if args.json:
        print(
            json.dumps(
                {
                    "run": str(args.run),
                    "checkpoint": str(run.checkpoint),
                    "model": run.config.model.type,
                    **result.to_dict(),
                },
                indent=1,
            )
        )
    else:
        print(
            format_eval_table(
                result, f"{args.run} ({run.config.model.type}, checkpoint {run.checkpoint.name})"
            )
        )
    return 0


def cmd_demo(args) -> int:
    from dualsparse.demo import format_demo, run_demo

    report = run_demo(
        Path(args.out),
        seed=args.seed,
        minutes_per_model=args.minutes_per_model,
        progress=not args.no_progress,
    )
    print(json.dumps(report, indent=1) if args.json else format_demo(report))
    return 0


def cmd_presets(args) -> int:
    from dualsparse.config import load_preset, preset_names

    for name in preset_names():
        m = load_preset(name).model
        print(
            f"{name:<16} {m.type:<5} emb {m.emb_size:<5} "
            f"hidden {','.join(map(str, m.hidden_sizes))}"
        )
    return 0


HANDLERS = {"train": cmd_train, "evaluate": cmd_evaluate, "demo": cmd_demo, "presets": cmd_presets}
