"""Atomic file writes: a reader never sees half a file, a crash never leaves one.

Everything dualsparse writes goes to a temporary file in the target's directory
first and is renamed into place with ``os.replace`` (atomic on POSIX). JSON it
reads back goes through ``read_json``, so a damaged file is one line, not a traceback.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from dualsparse.errors import DualsparseError


def atomic_write_bytes(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Let ``write`` fill a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode("utf-8")))


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """The JSON value in ``path``; if the file is not JSON, a DualsparseError naming it and
    ``fix`` (what the user should do about it)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        raise DualsparseError(f"{path} is not JSON; {fix}") from None
