"""Command line: parse → call the library → print. ``main`` is the only place that
turns a DualsparseError into ``error: …`` on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys

from dualsparse import __version__
from dualsparse.cli import engine_commands, run_commands, sparsity_commands, sweep_commands
from dualsparse.errors import DualsparseError

COMMANDS = {
    **run_commands.HANDLERS,
    **sparsity_commands.HANDLERS,
    **engine_commands.HANDLERS,
    **sweep_commands.HANDLERS,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dualsparse",
        description="Recurrent language models with sparse activity (EGRU) and sparse weights.",
    )
    parser.add_argument("--version", action="version", version=f"dualsparse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (run_commands, sparsity_commands, engine_commands, sweep_commands):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except DualsparseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
