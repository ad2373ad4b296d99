"""Commands that train, evaluate and demonstrate models."""

from __future__ import annotations

import json
from pathlib import Path

from dualsparse.cli.common import (
    add_data_args,
    add_run_split_args,
    data_choice,
    read_source,
    run_split,
    write_source,
)
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
        help="stop (with a checkpoint) after M minutes of training",
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
    from dualsparse.config import RunConfig, apply_overrides, resolve_config
    from dualsparse.data.download import resolve_corpus
    from dualsparse.training.distributed import torchrun_launch
    from dualsparse.training.loop import check_new_run_dir, train

    if args.resume:
        from dualsparse.data.corpus import Vocabulary
        from dualsparse.training.checkpoint import checkpoint_dir, read_state

        if args.out or args.preset or args.config:
            raise DualsparseError(
                "--resume RUN takes the run's own config; drop --out/--preset/--config"
            )
        run_dir = Path(args.resume)
        latest = checkpoint_dir(run_dir, "latest")
        state = read_state(latest)
        if "config" not in state:
            raise DualsparseError(f"{latest}/state.json has no config; the checkpoint is damaged")
        cfg = RunConfig.from_dict(state["config"], source=f"{run_dir}")
        source = read_source(run_dir)
        vocab = Vocabulary.load(latest / "vocab.json")
    else:
        if not args.out:
            raise DualsparseError("give --out RUN_DIR for the new run (or --resume RUN_DIR)")
        run_dir = Path(args.out)
        cfg = resolve_config(args.preset, args.config, [])
        source, vocab = {}, None
    overrides = list(args.overrides)
    for key, value in (("epochs", args.epochs), ("seed", args.seed), ("device", args.device)):
        if value is not None:
            overrides.append(f"train.{key}={value}")
    cfg = apply_overrides(cfg, overrides)
    data, dataset, cache_dir = data_choice(args, source)
    corpus = resolve_corpus(data, dataset, cache_dir, vocab=vocab)
    launch = torchrun_launch()  # under torchrun only rank 0 writes into the run
    rank = launch.rank if launch else 0
    if not args.resume and rank == 0:
        check_new_run_dir(run_dir)  # before source.json, which would clobber the old run's
        write_source(run_dir, data, dataset, cache_dir)
    summary = train(
        cfg,
        corpus,
        run_dir,
        resume=bool(args.resume),
        max_minutes=args.max_minutes,
        progress=not args.no_progress,
    )
    if rank != 0:
        return 0
    print(
        f"run {summary.run_dir}: {summary.stopped} after {summary.epochs_done} epoch(s), "
        f"best valid ppl {summary.best_valid_ppl:.2f}, {summary.elapsed_seconds:.0f} s"
    )
    if summary.stopped in ("interrupted", "time-budget"):
        print(f"continue with: dualsparse train --resume {summary.run_dir}")
    return 0


def cmd_evaluate(args) -> int:
    from dualsparse.evaluation import evaluate, format_eval_table

    run, data, batch = run_split(args)
    result = evaluate(run.model, data, batch, args.bptt, split=args.split, progress=args.progress)
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
