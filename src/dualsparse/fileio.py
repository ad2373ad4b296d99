"""Atomic file writes: a reader never sees half a file, a crash never leaves one.

Everything dualsparse writes goes to a temporary file in the target's directory
first, is flushed to disk (fsync) and renamed into place with ``os.replace`` (atomic
on POSIX), and the directory is synced so that the rename survives a crash too. A
directory written file by file (a checkpoint) is finished with ``sync_directory``
before it is renamed into place. Modes: files 0644, and such directories 0755,
whatever the umask (results are meant to be shared; docs/formats.md). JSON dualsparse reads back
goes through ``read_json``, so a damaged file is one line, not a traceback.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from dualsparse.errors import DualsparseError

FILE_MODE = 0o644
DIR_MODE = 0o755


def atomic_write_bytes(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Let ``write`` fill a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode("utf-8")))


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """The JSON value in ``path``; if the file is not JSON, a DualsparseError naming it and
    ``fix`` (what the user should do about it)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        raise DualsparseError(f"{path} is not JSON; {fix}") from None


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_directory(path: str | os.PathLike) -> None:
    """Finish a directory that was written file by file (by libraries that take a file
    name, such as safetensors) before it is renamed into place: every file in it gets
    mode 0644 and is flushed to disk, then the directory gets 0755 and is flushed."""
    path = Path(path)
    for child in path.iterdir():
        if child.is_file():
            os.chmod(child, FILE_MODE)
            with child.open("rb") as handle:
                os.fsync(handle.fileno())
    os.chmod(path, DIR_MODE)
    fsync_directory(path)
