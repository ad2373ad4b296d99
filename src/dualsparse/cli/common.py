"""Argument groups and run/data loading shared by the subcommands."""

from __future__ import annotations

import argparse

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
    # default None, not evaluation.DEFAULT_BPTT: importing evaluation would load torch for
    # every command, the engine's included
    p.add_argument("--bptt", type=int, help="window length (state is carried)")
    p.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    add_data_args(p)


def run_split(args):
    """The run, the token stream of ``--split``, the batch size and the window length
    (evaluate's defaults)."""
    from dualsparse.evaluation import DEFAULT_BPTT
    from dualsparse.runs import load_run, run_corpus

    run = load_run(args.run, args.checkpoint)
    corpus = run_corpus(args.run, run.vocab, args.data, args.dataset, args.cache_dir)
    t = run.config.train
    batch = args.batch_size or (t.test_batch_size if args.split == "test" else t.eval_batch_size)
    bptt = DEFAULT_BPTT if args.bptt is None else args.bptt
    if batch <= 0 or bptt <= 0:
        raise DualsparseError("--batch-size and --bptt must be positive integers")
    return run, getattr(corpus, args.split), batch, bptt


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
