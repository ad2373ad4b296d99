"""Guards of a process that writes a run: one writer per directory (an flock held for
the process's life), refusal to start a new run over an existing one, and SIGTERM/SIGINT
turned into a flag the loop checks between windows."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
from collections.abc import Iterator
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


# Directories this process holds the lock of, with how deeply: ``train`` takes the lock
# of its run, and the trainer inside it (or a prune's step) takes it again. flock belongs
# to an open file description, so a second open in the same process would refuse itself.
_HELD: dict[str, int] = {}


@contextmanager
def run_lock(run_dir: str | Path, what: str = "run") -> Iterator[None]:
    """One writing process per directory (a run, a pruning's output, a sweep's --out).

    ``DIR/.lock`` is opened and locked with ``flock(LOCK_EX | LOCK_NB)``: the kernel
    grants it to exactly one open file at a time and releases it when the holder exits,
    however it dies (kill -9 included), so a stale lock needs no recovery and no pid is
    trusted. The file holds the holder's pid only to name it in the refusal. On release
    the file is removed; a process that locked the file just before it was removed sees
    that the path no longer names its file and locks the new one, so two holders never
    coexist. Taken before the command reads or writes anything in the directory.
    """
    run_dir = Path(run_dir)
    key = os.path.realpath(run_dir)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DualsparseError(f"cannot create {run_dir} ({exc.strerror})") from None
    fd = _acquire(run_dir / ".lock", run_dir, what)
    _HELD[key] = 1
    remove_stale_temporaries(run_dir)
    try:
        yield
    finally:
        del _HELD[key]
        try:
            os.unlink(run_dir / ".lock")  # while still locked: nobody holds the new path yet
        except FileNotFoundError:
            pass
        os.close(fd)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files (``fileio``'s ``.NAME.*.tmp``) that a killed writer left in
    ``run_dir`` and its ``checkpoints/``. Only a holder of the directory's lock writes there,
    so with the lock held every such file is a leftover, never a write in progress."""
    removed = []
    for directory in (run_dir, run_dir / "checkpoints"):
        if directory.is_dir():
            for path in directory.glob(".*.tmp"):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def _acquire(path: Path, run_dir: Path, what: str) -> int:
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            holder = f" (pid {owner})" if owner.isdigit() and int(owner) > 0 else ""
            raise DualsparseError(
                f"{run_dir} is in use by another dualsparse process{holder}; wait for it or "
                f"stop it, or give this {what} another directory"
            ) from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode("ascii"))
            return fd
        os.close(fd)  # the holder released and removed it between our open and lock: again


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether a run directory holds a checkpoint a pointer names (a run to resume)."""
    root = Path(run_dir) / "checkpoints"
    return (root / "latest.json").exists() or (root / "best.json").exists()


def check_new_run_dir(run_dir: str | Path) -> None:
    """A new run must not be written over an existing one. A directory whose training
    was stopped before its first checkpoint was complete holds nothing to resume: its
    leftovers (metrics of the lost epoch, a half-written checkpoint) are cleared, and the
    new run starts there. Call it holding the directory's ``run_lock``."""
    run_dir = Path(run_dir)
    if has_checkpoint(run_dir):
        raise DualsparseError(
            f"{run_dir} already holds a run; use --resume {run_dir} to continue it, "
            "or choose a new --out"
        )
    if (run_dir / "prune.json").exists() or (run_dir / "step-1").is_dir():
        raise DualsparseError(f"{run_dir} holds a pruning; choose a new --out")
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
