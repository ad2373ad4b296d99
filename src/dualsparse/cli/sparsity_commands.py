"""Commands for pruning, activity analysis and MAC accounting."""

from __future__ import annotations

import json
from pathlib import Path

from dualsparse.cli.common import (
    add_data_args,
    add_run_split_args,
    positive_ints,
    run_split,
)
from dualsparse.errors import DualsparseError


def register(sub) -> None:
    """Add this module's subcommands (parsers) to ``sub``; HANDLERS maps them to functions."""
    p = sub.add_parser(
        "prune",
        help="iterative global magnitude pruning with fine-tuning",
        description="Prune the RNN weights of a trained run to a target sparsity "
        "in K steps (K=1: one-shot), fine-tuning after each step.",
    )
    p.add_argument("run", metavar="RUN", help="trained run directory (its best checkpoint)")
    p.add_argument(
        "--target",
        type=float,
        required=True,
        help="fraction of RNN weights to prune, in [0, 1), e.g. 0.85",
    )
    p.add_argument("--steps", type=int, default=1, help="pruning steps (default 1)")
    p.add_argument("--finetune-epochs", type=int, default=1, help="epochs after each step")
    p.add_argument(
        "--lr",
        type=float,
        help="fine-tuning learning rate (default 0.1x the run's for targets < 0.7, 1x from 0.7 on)",
    )
    p.add_argument("--out", metavar="NEW_RUN", required=True, help="directory of the pruned run")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a fine-tuning config key (repeatable)",
    )
    add_data_args(p)
    p.add_argument(
        "--other-data",
        action="store_true",
        help="fine-tune on data other than the run recorded in source.json (then recorded "
        "as the pruned run's)",
    )
    p.add_argument("--json", action="store_true", help="print the pruning record as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = sub.add_parser(
        "activity",
        help="per-layer and per-neuron activity, ĉ − θ (Fig. 4/5)",
        description="Measure the activity of a trained run on a split: per layer, "
        "per neuron (never/always active units) and, for EGRU, the "
        "distribution of ĉ − θ; writes activity.json, activity.npz "
        "and the figures.",
    )
    add_run_split_args(p)
    p.add_argument("--out", metavar="DIR", help="output directory (default RUN/activity-SPLIT)")
    p.add_argument("--no-plots", action="store_true", help="write only activity.json and .npz")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p = sub.add_parser(
        "macs",
        help="exact event-driven MACs per token of a run (or dense MACs)",
        description="Count multiply-accumulates per token of a trained run on a "
        "split: dense, weight-sparse, the paper's activity x density "
        "estimate and the exact event-driven count; or the dense MACs "
        "of a described model (--model/--emb/--hidden instead of RUN).",
    )
    add_run_split_args(p, run_required=False)
    g = p.add_argument_group("a described dense model (instead of RUN)")
    g.add_argument("--model", metavar="TYPE", help="egru, lstm or gru")
    g.add_argument("--emb", metavar="E", help="embedding size, e.g. 400")
    g.add_argument("--hidden", metavar="H1,H2,...", help="hidden sizes, e.g. 1150,1150,400")
    g.add_argument(
        "--vocab", metavar="V", help="vocabulary size: also count projection and decoder"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--progress", action="store_true", help="show a progress bar")


def cmd_prune(args) -> int:
    from dualsparse.runs import prune_trained_run

    record = prune_trained_run(
        args.run,
        args.out,
        args.data,
        args.dataset,
        args.cache_dir,
        target=args.target,
        steps=args.steps,
        finetune_epochs=args.finetune_epochs,
        lr=args.lr,
        overrides=args.overrides,
        progress=not args.no_progress,
        other_data=args.other_data,
    )
    if args.json:
        print(json.dumps(record, indent=1))
        return 0
    print(
        f"pruned {args.run} -> {args.out} in {args.steps} step(s), "
        f"fine-tuning lr {record['finetune_lr']:g}"
    )
    print(f"{'step':>4} {'target':>7} {'sparsity':>9} {'valid ppl':>10}")
    for h in record["history"]:
        print(
            f"{h['step']:>4} {h['target']:>7.3f} {h['weight_sparsity']:>9.3f} "
            f"{h['valid_ppl']:>10.2f}"
        )
    print()
    print(f"{'matrix':<22} {'shape':>12} {'nonzero':>9} {'sparsity':>9}")
    for m in record["sparsity"]["matrices"]:
        shape = "x".join(map(str, m["shape"]))
        print(f"{m['name']:<22} {shape:>12} {m['nonzero']:>9,} {m['weight_sparsity']:>9.3f}")
    total = record["sparsity"]
    print(
        f"{'all RNN weights':<22} {'':>12} {total['weights'] - total['zeros']:>9,} "
        f"{total['weight_sparsity']:>9.3f}"
    )
    return 0


def cmd_activity(args) -> int:
    from dualsparse.sparsity.activity import (
        analyze_activity,
        format_activity_table,
        write_activity_outputs,
    )

    out_dir = Path(args.out) if args.out else Path(args.run) / f"activity-{args.split}"
    if out_dir.exists() and not out_dir.is_dir():  # checked before the (long) measurement
        raise DualsparseError(
            f"{out_dir} is a file; activity writes a directory of JSON and figures: "
            "give a new or existing directory as --out"
        )
    run, data, batch, bptt = run_split(args)
    report = analyze_activity(
        run.model,
        data,
        batch,
        bptt,
        progress=args.progress,
        split=args.split,
        config=run.config,
    )
    paths = write_activity_outputs(report, out_dir, plots=not args.no_plots)
    if args.json:
        print(
            json.dumps(
                {
                    "run": str(args.run),
                    "checkpoint": str(run.checkpoint),
                    "outputs": {k: str(v) for k, v in paths.items()},
                    **report.to_dict(),
                },
                indent=1,
            )
        )
    else:
        print(format_activity_table(report, f"{args.run} (checkpoint {run.checkpoint.name})"))
        print(f"\nwritten to {out_dir}: {', '.join(sorted(path.name for path in paths.values()))}")
    return 0


def cmd_macs(args) -> int:
    from dualsparse.sparsity.macs import dense_macs_per_token, format_mac_table, measure_macs

    described = [args.model, args.emb, args.hidden, args.vocab]
    if args.run and any(v is not None for v in described):
        raise DualsparseError(
            "give either RUN (measure a trained run) or --model/--emb/--hidden "
            "(a described dense model), not both"
        )
    if not args.run:
        if args.model is None or args.emb is None or args.hidden is None:
            raise DualsparseError(
                "give RUN to measure a trained run, or --model egru|lstm|gru "
                "--emb E --hidden H1,H2,... for the dense MACs of a model"
            )
        vocab = positive_ints(args.vocab, "--vocab")[0] if args.vocab is not None else None
        report = dense_macs_per_token(
            args.model,
            positive_ints(args.emb, "--emb")[0],
            positive_ints(args.hidden, "--hidden", several=True),
            vocab,
        )
        print(json.dumps(report.to_dict(), indent=1) if args.json else format_mac_table(report))
        return 0
    run, data, batch, bptt = run_split(args)
    report = measure_macs(run.model, data, batch, bptt, progress=args.progress)
    if args.json:
        print(
            json.dumps(
                {
                    "run": str(args.run),
                    "checkpoint": str(run.checkpoint),
                    "split": args.split,
                    "batch_size": batch,
                    "bptt": bptt,
                    **report.to_dict(),
                },
                indent=1,
            )
        )
    else:
        print(
            format_mac_table(
                report,
                f"{args.run} ({run.config.model.type}, checkpoint "
                f"{run.checkpoint.name}), {args.split} split, "
                f"batch size {batch}",
            )
        )
    return 0


HANDLERS = {"prune": cmd_prune, "activity": cmd_activity, "macs": cmd_macs}
