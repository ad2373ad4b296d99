"""Command line: parse → call the library → print. ``main`` is the only place that
turns a DualsparseError into ``error: …`` on stderr and exit code 2.

This module imports nothing heavy at load time: the ``dualsparse`` script imports it
before ``main`` runs, and a Ctrl-C during the imports must end in one line, not a
traceback, so the command modules are imported inside ``main``'s guard."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading

# pip's `dualsparse` script runs a line of its own between importing this module and
# calling main (outside any guard of ours): started so, a Ctrl-C is held until main runs.
_HELD_INTERRUPTS: list[int] = []


def _hold_interrupt(signum, _frame) -> None:
    _HELD_INTERRUPTS.append(signum)


def _interrupt(signum, frame) -> None:
    """SIGINT while the program runs a command: KeyboardInterrupt, as Python's own handler
    raises, but never inside an import. Importing torch runs Python callbacks from C++
    (pybind11); a KeyboardInterrupt raised in one either aborts the process (C++'s
    terminate, exit -6) or, escaping a nested PyRun_String, makes the interpreter kill
    itself with SIGINT at exit after the command said "interrupted" (exit -2; 6 of 27
    Ctrl-Cs spread over torch's import). There the signal is sent again 50 ms later,
    until the import is over."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            retry = threading.Timer(0.05, os.kill, (os.getpid(), signum))
            retry.daemon = True
            retry.start()
            return
        frame = frame.f_back
    raise KeyboardInterrupt


if (
    os.path.basename(getattr(sys.modules.get("__main__"), "__file__", None) or "") == "dualsparse"
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
):
    signal.signal(signal.SIGINT, _hold_interrupt)


def _modules():
    from dualsparse.cli import engine_commands, run_commands, sparsity_commands, sweep_commands

    return (run_commands, sparsity_commands, engine_commands, sweep_commands)


def commands() -> dict:
    """Subcommand name → handler."""
    return {name: fn for module in _modules() for name, fn in module.HANDLERS.items()}


def build_parser():
    import argparse

    from dualsparse import __version__

    parser = argparse.ArgumentParser(
        prog="dualsparse",
        description="Recurrent language models with sparse activity (EGRU) and sparse weights.",
    )
    parser.add_argument("--version", action="version", version=f"dualsparse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _modules():
        module.register(sub)
    return parser


def check_budget_args(args) -> None:
    """Time budgets and worker counts argparse accepts but no command can use."""
    from dualsparse.errors import DualsparseError

    for name in ("max_minutes", "minutes_per_model"):
        value = getattr(args, name, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            flag = "--" + name.replace("_", "-")
            raise DualsparseError(f"{flag} {value} must be a positive number of minutes")
    jobs = getattr(args, "jobs", None)
    if jobs is not None and jobs < 1:
        raise DualsparseError(f"--jobs {jobs} must be at least 1 (runs at a time)")


def main(argv: list[str] | None = None) -> int:
    """Run one command. A Ctrl-C at any moment of it, the imports included, ends it with
    one line and exit 130. ``argv`` None means the program itself (``dualsparse``,
    ``python -m dualsparse``), which ignores Ctrl-C once the command is over: what is left
    is Python's exit, where an interrupt would print a traceback."""
    try:
        if argv is None or signal.getsignal(signal.SIGINT) is _hold_interrupt:
            signal.signal(signal.SIGINT, _interrupt)
        if _HELD_INTERRUPTS:
            raise KeyboardInterrupt
        code = _command(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        # the reader went away (`dualsparse presets | head`): stop quietly, as cat does;
        # stdout goes to devnull so that the interpreter's last flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    finally:
        if argv is None:
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            except KeyboardInterrupt:  # it came just before: the command is over all the same
                signal.signal(signal.SIGINT, signal.SIG_IGN)
    if argv is None and _left_a_torchrun_job():
        # Every file is written and the process group destroyed, but gloo's C++ threads
        # can still abort the interpreter's own exit (SIGABRT, "terminate called without
        # an active exception": once in CI on a finished 2-rank run, after the fix in
        # distributed.process_group; pytorch/pytorch#179291 traces it to work objects that
        # outlive the group into finalization). torchrun would call a finished job failed,
        # so a rank that took part in one skips finalization.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _left_a_torchrun_job() -> bool:
    module = sys.modules.get("dualsparse.training.distributed")
    return bool(module and module.JOINED_A_JOB)


def _command(argv: list[str] | None) -> int:
    """Parse and run; a DualsparseError is the one ``error:`` line and exit 2."""
    from dualsparse.errors import DualsparseError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        check_budget_args(args)
        code = commands()[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, inside the guard, not at exit
        return code
    except DualsparseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def __getattr__(name: str):
    # COMMANDS was a module constant; kept for callers, built on first use
    if name == "COMMANDS":
        return commands()
    raise AttributeError(name)
