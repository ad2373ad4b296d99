"""Learning curves: validation perplexity and activity per epoch of every run of a
sweep, read from the runs' ``metrics.jsonl``, and whether each run had settled.

A trained run logs one record per validation (``event`` "epoch", or the stop that
ended it: "interrupted", "time-budget") with its position in epochs, ``valid_ppl``
and ``valid_activity`` (per layer). A pruned run fine-tunes in ``step-1`` …
``step-K`` (``sparsity.prune``); its curve is the steps one after another, and
whether it settled is judged on its last step alone (the earlier steps were at
other sparsities). Old files may repeat a position (a resumed run): the last
record wins. Null or NaN values are gaps, and no evidence either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualsparse.reports import records as rec
from dualsparse.sparsity.plots import new_figure, save_figure
from dualsparse.training.metrics import read_metrics

# A run has settled when its last validation improved on the one before by less than
# this fraction (a rise counts as settled: training no longer lowers it).
SETTLED_IMPROVEMENT = 0.01
SETTLED_RULE = (
    f"a run has settled when its last validation perplexity is less than "
    f"{SETTLED_IMPROVEMENT:.0%} below the one before it (relative improvement "
    f"(previous − last) / previous < {SETTLED_IMPROVEMENT:g}); a pruned run is judged on "
    "its last fine-tuning step; with fewer than two finite values it cannot be told"
)


@dataclass
class Curve:
    """One run's validations in order of position (epochs since its own start)."""

    name: str
    pruned: bool
    epochs: list[float] = field(default_factory=list)
    valid_ppl: list[float] = field(default_factory=list)
    activity: list[float] = field(default_factory=list)
    last_step: list[float] = field(default_factory=list)  # the ppls settledness is judged on

    def settled(self) -> bool | None:
        finite = [p for p in self.last_step if math.isfinite(p)]
        if len(finite) < 2:
            return None
        previous, last = finite[-2:]
        return (previous - last) / previous < SETTLED_IMPROVEMENT


def _float(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _activity(layers: Any, units: list[int]) -> float:
    """Activity over all layers: the per-layer fractions weighted by the layers' units
    (as ``activity.overall`` counts it); unweighted when the sizes do not match."""
    if isinstance(layers, (int, float)):
        return _float(layers)
    values = [_float(v) for v in layers] if isinstance(layers, list) else []
    if not values:
        return math.nan
    weights = units if len(units) == len(values) else [1] * len(values)
    return sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights)


def read_validations(directory: Path, units: list[int]) -> list[tuple[float, float, float]]:
    """(position, valid ppl, activity) of each validation in ``directory``'s metrics.jsonl
    (``training.metrics.read_metrics``: the last record of a repeated position wins,
    unreadable lines are skipped), in order of position."""
    points = []
    for record in read_metrics(directory):
        position = _float(record.get("epoch"))
        if "valid_ppl" in record and math.isfinite(position):
            ppl = _float(record.get("valid_ppl"))
            points.append((position, ppl, _activity(record.get("valid_activity"), units)))
    return sorted(points)


def run_curve(record: rec.Record, sweep_dir: Path) -> Curve | None:
    """The curve of one results record's run; None when its directory is gone."""
    directory = rec.run_dir(record, sweep_dir)
    if directory is None:
        return None
    units = [int(u) for u in record.get("hidden_sizes") or []]
    pruned = rec.target(record) > 0
    curve = Curve(rec.name(record), pruned)
    steps = sorted(
        directory.glob("step-*"), key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else 0
    )
    offset = 0.0
    for source in steps if pruned and steps else [directory]:
        points = read_validations(source, units)
        for position, ppl, act in points:
            curve.epochs.append(offset + position)
            curve.valid_ppl.append(ppl)
            curve.activity.append(act)
        if points:
            offset += points[-1][0]
            curve.last_step = [ppl for _, ppl, _ in points]
    return curve


def curves(records: list[rec.Record], sweep_dir: Path) -> list[Curve]:
    found = [run_curve(r, sweep_dir) for r in sorted(records, key=rec.name)]
    return [c for c in found if c is not None and c.epochs]


CURVE_COLUMNS = ["run", "validations", "second-last valid ppl", "last valid ppl", "settled"]


def settled_rows(all_curves: list[Curve]) -> list[list[str]]:
    rows = []
    for c in all_curves:
        finite = [p for p in c.last_step if math.isfinite(p)]
        previous = f"{finite[-2]:.2f}" if len(finite) > 1 else "—"
        last = f"{finite[-1]:.2f}" if finite else "—"
        verdict = {True: "yes", False: "no", None: "cannot tell"}[c.settled()]
        rows.append([c.name, str(len(c.epochs)), previous, last, verdict])
    return rows


def plain_numbers(axis: Any) -> None:
    """Tick labels of a log axis as plain numbers (152, 0.3), not 1.52×10²; minor ticks
    are labelled as matplotlib's default does (all within a decade, none over several),
    since a perplexity range is often less than a decade."""
    from matplotlib.ticker import LogFormatter

    axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def figure(all_curves: list[Curve], stem: Path) -> dict[str, Path]:
    """Validation perplexity (log) and activity per epoch: dense runs above, the pruned
    runs' fine-tuning below (the steps one after another)."""
    if not all_curves:
        raise rec.MissingRuns("run directories with a metrics.jsonl")
    kinds = [k for k in (False, True) if any(c.pruned == k for c in all_curves)]
    fig, _ = new_figure(2)
    fig.clear()
    fig.set_size_inches(10, 3.8 * len(kinds))
    axes = fig.subplots(len(kinds), 2, squeeze=False)
    for row, pruned in zip(axes, kinds, strict=True):
        chosen = [c for c in all_curves if c.pruned == pruned]
        for i, c in enumerate(chosen):
            style = {"color": f"C{i % 10}", "marker": "o", "markersize": 3, "label": c.name}
            row[0].plot(c.epochs, c.valid_ppl, **style)
            row[1].plot(c.epochs, c.activity, **style)
        what = "pruned runs: fine-tuning epochs" if pruned else "trained runs: epochs"
        row[0].set_yscale("log")
        plain_numbers(row[0].yaxis)
        row[0].set_ylabel("validation perplexity (log)")
        row[1].set_ylabel("activity (validation, all layers)")
        for ax in row:
            ax.set_xlabel(what)
        row[1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(fig, stem)
