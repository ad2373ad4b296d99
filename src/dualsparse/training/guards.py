"""Guards of a training process: one process per run directory (a pid lock), and
SIGTERM/SIGINT turned into a flag the loop checks between windows."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path

from dualsparse.errors import DualsparseError


@contextmanager
def stop_on_signals(flag: dict):
    """SIGTERM/SIGINT set a flag; the loop checkpoints and stops between windows."""

    def handler(signum, _frame):
        flag["signal"] = signal.Signals(signum).name

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not in the main thread: signals cannot be caught here
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def run_lock(run_dir: Path):
    """One training process per run directory: ``RUN/.lock`` holds the owner's pid.

    Two processes writing one run would interleave metrics and checkpoints. A lock
    whose process is gone (a crash, a killed machine) is taken over.
    """
    path = Path(run_dir) / ".lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _alive(owner):
                raise DualsparseError(
                    f"{run_dir} is being trained by another process (pid {owner}); wait for it "
                    "or stop it, or train into another --out"
                ) from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
