"""Commands for studies: sweep grids of runs, and report on them."""

from __future__ import annotations

import signal
from pathlib import Path

from dualsparse.cli.common import add_data_args


def register(sub) -> None:
    """Add this module's subcommands (parsers) to ``sub``; HANDLERS maps them to functions."""
    p = sub.add_parser(
        "sweep",
        help="run a grid of runs (seeds, sparsities, weight decay) from a spec",
        description="Train, prune and measure every run of a sweep spec (a YAML file, or a "
        "shipped study: see `dualsparse studies`). Started again on the same --out, it skips "
        "finished runs and resumes unfinished ones.",
    )
    p.add_argument("spec", metavar="SPEC", help="a sweep YAML file or a shipped study name")
    p.add_argument("--out", metavar="DIR", required=True, help="sweep directory")
    add_data_args(p)
    p.add_argument("--jobs", type=int, help="runs at a time (default: the spec's jobs:)")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = sub.add_parser(
        "report",
        help="tables and figures of a sweep (Markdown + HTML)",
        description="Write the paper's tables and figures for a sweep directory: "
        "report.md, report.html (self-contained), CSV tables, PNG and SVG figures.",
    )
    p.add_argument("sweep", metavar="DIR", help="a sweep directory (dualsparse sweep --out)")
    p.add_argument("--out", metavar="DIR", help="where to write (default: DIR/report)")
    p.add_argument(
        "--paper",
        choices=["ptb", "wt2", "none"],
        help="which published table to draw beside ours (default: from the sweep's data)",
    )
    sub.add_parser(
        "studies",
        help="list the shipped sweep specs",
        description="List the shipped study specs for `dualsparse sweep`.",
    )
    # Internal: one step of a sweep job, in a process of its own (sweeps/steps.py). No
    # help= so that argparse leaves it out of the command list.
    p = sub.add_parser(
        "sweep-step",
        description="Run one step of a sweep job (internal; the sweep starts it).",
    )
    p.add_argument("step", metavar="STEP_JSON", help="a step record (sweeps/steps.py)")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_sweep(args) -> int:
    from dualsparse.sweeps.runner import run_sweep, sweep_summary
    from dualsparse.sweeps.spec import load_spec

    spec = load_spec(args.spec)
    if args.dry_run:
        for job in spec.job_list:
            origin = f"prune {job.source} → {job.sparsity:g}" if job.source else "train"
            print(f"{job.name:<40} {job.model:<5} {origin}")
        print(f"{len(spec.job_list)} runs")
        return 0
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # stop children cleanly
    try:
        state = run_sweep(
            spec,
            Path(args.out),
            data=args.data,
            dataset=args.dataset,
            cache_dir=args.cache_dir,
            jobs=args.jobs,
            executor=args.executor,
            address=args.address,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            f"interrupted; continue with the same command (dualsparse sweep {args.spec} "
            f"--out {args.out} …)"
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"sweep {spec.name} in {args.out}: {sweep_summary(state)}")
    print(f"report: dualsparse report {args.out}")
    return 1 if any(r["status"] != "done" for r in state["jobs"].values()) else 0


def cmd_report(args) -> int:
    from dualsparse.reports.build import write_report

    paths = write_report(Path(args.sweep), Path(args.out) if args.out else None, paper=args.paper)
    for kind, path in paths.items():
        print(f"{kind:<8} {path}")
    return 0


def cmd_studies(args) -> int:
    from dualsparse.sweeps.spec import load_spec, study_names

    for name in study_names():
        spec = load_spec(name)
        print(f"{name:<10} {len(spec.job_list):>4} runs  {spec.description.splitlines()[0]}")
    return 0


def cmd_sweep_step(args) -> int:
    from dualsparse.sweeps.steps import step_from_json

    print(step_from_json(args.step).run_step())
    return 0


HANDLERS = {
    "sweep": cmd_sweep,
    "report": cmd_report,
    "studies": cmd_studies,
    "sweep-step": cmd_sweep_step,
}
