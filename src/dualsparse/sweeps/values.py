"""Checked values of a sweep spec (numbers, lists of numbers, known keys) and the
number format of run names; shared by the spec's grids and its pruning grid."""

from __future__ import annotations

import math
from typing import Any

from dualsparse.errors import DualsparseError


def number(value: Any, where: str, kind=float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DualsparseError(f"{where}: expected a number, got {value!r}")
    if kind is int and (not float(value).is_integer()):
        raise DualsparseError(f"{where}: expected an integer, got {value!r}")
    if not math.isfinite(value):
        raise DualsparseError(f"{where}: {value!r} is not finite")
    return kind(value)


def numbers(value: Any, where: str, kind=float, default=None) -> list:
    if value is None:
        if default is None:
            raise DualsparseError(f"{where} is missing; give a list, e.g. [1, 2]")
        return default
    values = value if isinstance(value, list) else [value]
    if not values:
        raise DualsparseError(f"{where} is empty; give at least one value")
    out = [number(v, f"{where}[{i}]", kind) for i, v in enumerate(values)]
    if len(set(out)) != len(out):
        raise DualsparseError(f"{where} repeats a value: {values}")
    return out


def unknown_keys(mapping: dict, allowed: set[str], where: str) -> None:
    extra = set(mapping) - allowed
    if extra:
        raise DualsparseError(
            f"{where}: unknown key(s) {sorted(extra)}; allowed: {', '.join(sorted(allowed))}"
        )


def fmt(value: float) -> str:
    """A number as it appears in run names: 0.01 → '0.01', 0.0 → '0', 1e-4 → '0.0001'.

    Values that six decimals do not hold keep all their digits (1.2e-6 → '1.2e-06'):
    otherwise AWD-LSTM's weight decay 1.2e-6 would be named like 1e-6, and 1e-7 like 0."""
    text = f"{value:.6f}".rstrip("0").rstrip(".") or "0"
    if abs(float(text) - value) > 1e-9 * max(1.0, abs(value)):
        return repr(value)
    return text
