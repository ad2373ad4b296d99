"""``RUN/metrics.jsonl``: one JSON record per validation (epoch end, or a mid-epoch stop).

Records are appended as training goes, before the checkpoint of the same position is
written. A process killed between the two leaves a record the checkpoint does not
have, so a resume first cuts the file back to its checkpoint's position
(``keep_metrics_until``, an atomic rewrite); otherwise the resumed run would write that
position's record a second time. JSON has no NaN or infinity, so a non-finite number is
written as ``null``. ``read_metrics`` also reads files written before both rules:
``NaN``/``Infinity`` literals are accepted, and of several records of one position the
last one wins.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dualsparse.fileio import atomic_write_text

FILE = "metrics.jsonl"


def finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite float (also inside lists and dicts) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value


def metrics_line(record: dict[str, Any]) -> str:
    """One record as strict JSON (no NaN/Infinity literals), with its newline."""
    return json.dumps(finite_or_null(record), allow_nan=False) + "\n"


def append_metrics(run_dir: str | Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / FILE, "a", encoding="utf-8") as handle:
        handle.write(metrics_line(record))


def _position(record: dict[str, Any]) -> float | None:
    epoch = record.get("epoch")
    is_number = isinstance(epoch, int | float) and not isinstance(epoch, bool)
    return epoch if is_number and math.isfinite(epoch) else None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's records in file order, one per position (``epoch``, fractional for a
    mid-epoch stop): of several records of one position the last one wins, as a resumed
    run wrote it again. Lines that are not a JSON object (a write cut short by a crash)
    are skipped. A run without the file has no records."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return []
    records: dict[Any, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        try:
            record = json.loads(line)  # NaN and Infinity literals too (older files)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        position = _position(record)
        key = ("line", number) if position is None else position
        records.pop(key, None)  # the later record takes the earlier one's place in order
        records[key] = record
    return list(records.values())


def keep_metrics_until(run_dir: str | Path, position: float) -> None:
    """Cut ``metrics.jsonl`` back to the records at or before ``position`` (a restored
    checkpoint's epoch + windows done / windows of the epoch), atomically; records of the
    same position are merged (the last wins) and non-finite numbers become null. The file
    is left alone when that changes nothing."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return
    kept = [r for r in read_metrics(run_dir) if (_position(r) or 0) <= position]
    text = "".join(metrics_line(r) for r in kept)
    if text != path.read_text(encoding="utf-8", errors="replace"):
        atomic_write_text(path, text)
