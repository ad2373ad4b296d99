"""Argument groups and run/data loading shared by the subcommands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dualsparse.errors import DualsparseError


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (one of)")
    g.add_argument(
        "--data",
        metavar="DIR",
        help="directory with train/valid/test splits (train.txt…, ptb.*.txt, wiki.*.tokens)",
    )
    g.add_argument(
        "--dataset",
        choices=["ptb", "wikitext2"],
        help="download the standard files (md5-verified) into the cache",
    )
    g.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="dataset cache (default $DUALSPARSE_CACHE or ~/.cache/dualsparse)",
    )


def add_run_split_args(p: argparse.ArgumentParser, run_required: bool = True) -> None:
    """RUN, --split, --batch-size, --bptt, --checkpoint and the data options."""
    p.add_argument("run", metavar="RUN", nargs=None if run_required else "?", help="run directory")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument(
        "--batch-size",
        type=int,
        help="batch size (default: train.test_batch_size for test, "
        "train.eval_batch_size for valid)",
    )
    p.add_argument("--bptt", type=int, default=70, help="window length (state is carried)")
    p.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    add_data_args(p)


def write_source(run_dir: Path, data, dataset, cache_dir) -> None:
    from dualsparse.fileio import atomic_write_text

    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "data": str(Path(data).resolve()) if data else None,
        "dataset": dataset,
        "cache_dir": cache_dir,
    }
    atomic_write_text(run_dir / "source.json", json.dumps(record, indent=1))


def read_source(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def data_choice(args, source: dict) -> tuple[str | None, str | None, str | None]:
    """(data, dataset, cache_dir): what the command line gives, else what the run recorded."""
    data = args.data or (None if args.dataset else source.get("data"))
    dataset = args.dataset or (None if args.data else source.get("dataset"))
    return data, dataset, args.cache_dir or source.get("cache_dir")


def run_corpus(args, run_dir: Path, vocab):
    """The corpus a run was trained on (or the one given), encoded with the run's vocabulary."""
    from dualsparse.data.download import resolve_corpus

    return resolve_corpus(*data_choice(args, read_source(run_dir)), vocab=vocab)


def run_split(args):
    """The run, the token stream of ``--split`` and the batch size (evaluate's defaults)."""
    from dualsparse.runs import load_run

    run = load_run(args.run, args.checkpoint)
    corpus = run_corpus(args, Path(args.run), run.vocab)
    t = run.config.train
    batch = args.batch_size or (t.test_batch_size if args.split == "test" else t.eval_batch_size)
    if batch <= 0 or args.bptt <= 0:
        raise DualsparseError("--batch-size and --bptt must be positive integers")
    return run, getattr(corpus, args.split), batch


def positive_ints(text: str, flag: str, *, several: bool = False) -> list[int]:
    """'1150,1150,400' (several) or '400' → the integers; a DualsparseError for anything else."""
    try:
        values = [int(part) for part in (text.split(",") if several else [text])]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        what = (
            "positive integers separated by commas, e.g. 1150,1150,400"
            if several
            else "one positive integer"
        )
        raise DualsparseError(f"{flag} takes {what}; got {text!r}")
    return values
