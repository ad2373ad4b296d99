"""Activity analysis of a trained model on real data (the paper's Fig. 4 and Fig. 5).

Three views of activity sparsity, all measured with the model in eval mode on a
split read as ``evaluation.evaluate`` reads it (batchified columns, windows of
``bptt`` steps, the hidden state carried across windows):

* per layer: the fraction of nonzero outputs y_t (equal to
  ``evaluate(...).layer_activity`` on the same data and batch size);
* per neuron (Fig. 4): for each unit the fraction of (time, batch) positions at
  which it emits an event. In the paper most EGRU units are rarely active; units
  that never fire ("dead") cost nothing at inference and are free to prune;
* EGRU only (Fig. 5): the distribution of ĉ − θ, the pre-reset state minus the
  unit's threshold. A unit emits an event exactly where ĉ − θ > 0 (eq. for y_t
  in DEVELOPERS.md), so the mass above zero is the activity again, a check that
  the thresholds and the counted outputs agree.

Weight decay is the paper's knob for activity (sec. 4.2), so the report carries
the run's ``weight_decay`` and ``bias_decay`` beside the numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dualsparse.config import RunConfig
from dualsparse.evaluation import DEFAULT_BPTT, walk_split
from dualsparse.fileio import atomic_write_bytes, atomic_write_text
from dualsparse.models.lm import LanguageModel
from dualsparse.sparsity.plots import write_activity_figures

# ĉ is a convex combination of tanh outputs and earlier states, so |ĉ| ≤ 1, and
# thresholds are kept in [0, 1]: ĉ − θ always lies in [−2, 1]. A fixed range makes
# histograms of different runs and layers directly comparable (bin width 0.005).
C_MINUS_THETA_RANGE = (-2.0, 1.0)
C_MINUS_THETA_BINS = 600
NEURON_ACTIVITY_BINS = 50  # per-neuron activity in [0, 1], bin width 0.02
QUANTILES = (0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)


@dataclass
class CMinusTheta:
    """Distribution of ĉ − θ over all (time, batch, unit) values of one EGRU layer."""

    counts: np.ndarray  # int64 [bins]; values outside the range go to the end bins
    bin_edges: np.ndarray  # float64 [bins + 1]
    fraction_above_zero: float  # = the layer's activity
    mean: float
    std: float
    quantiles: dict[str, float]  # read off the histogram, to within one bin width
    outside_range: int  # values beyond C_MINUS_THETA_RANGE (0 unless θ left [0, 1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts.tolist(),
            "bin_edges": self.bin_edges.tolist(),
            "fraction_above_zero": self.fraction_above_zero,
            "mean": self.mean,
            "std": self.std,
            "quantiles": self.quantiles,
            "outside_range": self.outside_range,
        }


@dataclass
class LayerActivity:
    layer: int
    units: int
    positions: int  # (time, batch) positions seen
    nonzero_outputs: int  # over all positions and units
    neuron_activity: np.ndarray  # float64 [units]: fraction of positions with output ≠ 0
    neuron_hist_counts: np.ndarray  # int64 [NEURON_ACTIVITY_BINS], sums to units
    neuron_hist_edges: np.ndarray
    dead_units: int  # never active
    always_active_units: int
    thresholds: np.ndarray | None = None  # θ per unit (EGRU)
    c_minus_theta: CMinusTheta | None = None

    @property
    def activity(self) -> float:
        """Fraction of nonzero outputs (DEVELOPERS.md, "Activity of a layer")."""
        return self.nonzero_outputs / max(self.positions * self.units, 1)

    def threshold_stats(self) -> dict[str, float] | None:
        if self.thresholds is None:
            return None
        t = self.thresholds
        return {"mean": float(t.mean()), "min": float(t.min()), "max": float(t.max())}

    def to_dict(self) -> dict[str, Any]:
        """JSON form; the per-neuron array itself is in activity.npz."""
        return {
            "layer": self.layer,
            "units": self.units,
            "positions": self.positions,
            "activity": self.activity,
            "nonzero_outputs": self.nonzero_outputs,
            "dead_units": self.dead_units,
            "always_active_units": self.always_active_units,
            "threshold": self.threshold_stats(),
            "neuron_activity_histogram": {
                "counts": self.neuron_hist_counts.tolist(),
                "bin_edges": self.neuron_hist_edges.tolist(),
            },
            "c_minus_theta": self.c_minus_theta.to_dict() if self.c_minus_theta else None,
        }


@dataclass
class ActivityReport:
    model_type: str
    split: str
    batch_size: int
    bptt: int
    tokens: int  # predicted tokens = (time, batch) positions
    layers: list[LayerActivity]
    weight_decay: float | None = None  # from the run's config (sec. 4.2's activity knob)
    bias_decay: float | None = None
    config: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def overall_activity(self) -> float:
        """Nonzero outputs / outputs over all layers (what activity-sparse MACs scale with)."""
        nonzero = sum(layer.nonzero_outputs for layer in self.layers)
        return nonzero / max(sum(layer.positions * layer.units for layer in self.layers), 1)

    def record_config(self, config: RunConfig) -> None:
        """Keep the run's config, and its decay settings in view beside the activity."""
        self.weight_decay = config.train.weight_decay
        self.bias_decay = config.train.bias_decay
        self.config = config.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_type,
            "split": self.split,
            "batch_size": self.batch_size,
            "bptt": self.bptt,
            "tokens": self.tokens,
            "weight_decay": self.weight_decay,
            "bias_decay": self.bias_decay,
            "overall_activity": self.overall_activity,
            "has_threshold": any(layer.thresholds is not None for layer in self.layers),
            "layers": [layer.to_dict() for layer in self.layers],
            "config": self.config,
        }


# ---------------------------------------------------------------- pure helpers


def neuron_activity_histogram(neuron_activity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of units per activity bin on [0, 1] (Fig. 4); fully active units in the last bin."""
    counts, edges = np.histogram(neuron_activity, bins=NEURON_ACTIVITY_BINS, range=(0.0, 1.0))
    return counts.astype(np.int64), edges


def c_minus_theta_bin_edges() -> np.ndarray:
    return np.linspace(*C_MINUS_THETA_RANGE, C_MINUS_THETA_BINS + 1)


def c_minus_theta_bin_counts(values: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Counts of ``values`` in the fixed ĉ − θ bins, and how many fell outside the range."""
    low, high = C_MINUS_THETA_RANGE
    flat = values.reshape(-1).double()
    outside = int(((flat < low) | (flat > high)).sum())
    index = torch.floor((flat - low) * (C_MINUS_THETA_BINS / (high - low))).long()
    index.clamp_(0, C_MINUS_THETA_BINS - 1)  # the last bin is closed: it holds ĉ − θ = 1
    return torch.bincount(index, minlength=C_MINUS_THETA_BINS), outside


def histogram_quantiles(
    counts: np.ndarray, edges: np.ndarray, qs: tuple[float, ...] = QUANTILES
) -> dict[str, float]:
    """Quantiles of binned data, linear within the bin (exact to one bin width)."""
    total = counts.sum()
    if total == 0:
        return {f"q{q:g}": float("nan") for q in qs}
    cumulative = np.concatenate([[0], np.cumsum(counts)])
    return {f"q{q:g}": float(np.interp(q * total, cumulative, edges)) for q in qs}


# ---------------------------------------------------------------- measurement


class _LayerTally:
    """Running counts of one layer over the windows of a split."""

    def __init__(self, layer: torch.nn.Module) -> None:
        self.units = layer.hidden_size
        self.threshold = getattr(layer, "threshold", None)  # EGRU's θ, none for LSTM/GRU
        self.nonzero = layer.weight_hh.new_zeros(self.units, dtype=torch.long)
        self.hist = layer.weight_hh.new_zeros(C_MINUS_THETA_BINS, dtype=torch.long)
        self.above = self.outside = 0
        self.sum = self.sum_sq = 0.0  # of ĉ − θ, for mean and std

    def add(self, y: torch.Tensor, c_pre: torch.Tensor | None) -> None:
        self.nonzero += (y != 0).sum(dim=(0, 1))
        if c_pre is None or self.threshold is None:
            return
        shifted = c_pre - self.threshold
        counts, outside = c_minus_theta_bin_counts(shifted)
        self.hist += counts
        self.outside += outside
        self.above += int((shifted > 0).sum())
        self.sum += float(shifted.double().sum())
        self.sum_sq += float(shifted.double().pow(2).sum())

    def result(self, index: int, positions: int) -> LayerActivity:
        counts_per_unit = self.nonzero.cpu().numpy()
        per_neuron = counts_per_unit / max(positions, 1)
        hist_counts, hist_edges = neuron_activity_histogram(per_neuron)
        entry = LayerActivity(
            layer=index,
            units=self.units,
            positions=positions,
            nonzero_outputs=int(counts_per_unit.sum()),
            neuron_activity=per_neuron,
            neuron_hist_counts=hist_counts,
            neuron_hist_edges=hist_edges,
            dead_units=int((counts_per_unit == 0).sum()),
            always_active_units=int((counts_per_unit == positions).sum()),
        )
        if self.threshold is not None:
            entry.thresholds = self.threshold.detach().cpu().double().numpy()
            n_values = max(positions * self.units, 1)
            mean = self.sum / n_values
            counts, edges = self.hist.cpu().numpy(), c_minus_theta_bin_edges()
            entry.c_minus_theta = CMinusTheta(
                counts=counts,
                bin_edges=edges,
                fraction_above_zero=self.above / n_values,
                mean=mean,
                std=float(np.sqrt(max(self.sum_sq / n_values - mean**2, 0.0))),
                quantiles=histogram_quantiles(counts, edges),
                outside_range=self.outside,
            )
        return entry


@torch.no_grad()  # ĉ − θ reads the thresholds, which are parameters
def analyze_activity(
    model: LanguageModel,
    data: torch.Tensor,
    batch_size: int = 10,
    bptt: int = DEFAULT_BPTT,
    progress: bool = False,
    *,
    split: str = "",
    config: RunConfig | None = None,
) -> ActivityReport:
    """Per-layer and per-neuron activity and the ĉ − θ distribution on ``data``.

    ``config`` (the run's RunConfig) is optional: with it the report records the
    run's ``weight_decay`` and ``bias_decay`` and the whole config.
    """
    tallies = [_LayerTally(layer) for layer in model.layers]
    positions = 0
    windows = walk_split(model, data, batch_size, bptt, progress=progress, desc=f"activity {split}")
    for window in windows:
        positions += window.inputs.numel()
        out = window.output
        for tally, y, c_pre in zip(tallies, out.layer_outputs, out.pre_reset_states, strict=True):
            tally.add(y, c_pre)
    layers = [tally.result(k, positions) for k, tally in enumerate(tallies)]
    report = ActivityReport(model.cfg.type, split, batch_size, bptt, positions, layers)
    if config is not None:
        report.record_config(config)
    return report


# ---------------------------------------------------------------- outputs


def activity_arrays(report: ActivityReport) -> dict[str, np.ndarray]:
    """The numeric arrays of a report under flat names (the layout of activity.npz)."""
    arrays: dict[str, np.ndarray] = {}
    for layer in report.layers:
        key = f"layer{layer.layer}_"
        arrays[key + "neuron_activity"] = layer.neuron_activity
        arrays[key + "neuron_hist_counts"] = layer.neuron_hist_counts
        arrays[key + "neuron_hist_edges"] = layer.neuron_hist_edges
        if layer.thresholds is not None:
            arrays[key + "threshold"] = layer.thresholds
        if layer.c_minus_theta is not None:
            arrays[key + "c_minus_theta_counts"] = layer.c_minus_theta.counts
            arrays[key + "c_minus_theta_edges"] = layer.c_minus_theta.bin_edges
    return arrays


def write_activity_outputs(
    report: ActivityReport,
    out_dir: str | Path,
    config: RunConfig | None = None,
    *,
    plots: bool = True,
) -> dict[str, Path]:
    """activity.json, activity.npz and (with ``plots``) the Fig. 4 / Fig. 5 PNG + SVG files.

    The data files are written first, so they exist even when matplotlib is
    missing and the figures raise a DualsparseError. ``config`` (a RunConfig)
    fills in the decay settings when the report was made without it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config is not None and report.config is None:
        report.record_config(config)
    paths = {"json": out / "activity.json", "npz": out / "activity.npz"}
    atomic_write_text(paths["json"], json.dumps(report.to_dict(), indent=1))
    arrays = activity_arrays(report)
    atomic_write_bytes(paths["npz"], lambda handle: np.savez(handle, **arrays))
    if plots:
        paths.update(write_activity_figures(report, out))
    return paths


def _decay(value: float | None) -> str:
    return "unknown" if value is None else f"{value:g}"


def format_activity_table(report: ActivityReport, title: str = "") -> str:
    lines = [title] if title else []
    lines += [
        f"model          {report.model_type}",
        f"split          {report.split or '-'} ({report.tokens:,} positions, "
        f"batch size {report.batch_size}, bptt {report.bptt})",
        f"weight_decay   {_decay(report.weight_decay)}   bias_decay {_decay(report.bias_decay)}",
        f"activity       {report.overall_activity:.4f} (all layers)",
        "",
        "layer  units  activity  dead  always  mean θ   frac ĉ>θ",
    ]
    for layer in report.layers:
        stats = layer.threshold_stats()
        theta = f"{stats['mean']:.4f}" if stats else "-"
        frac = f"{layer.c_minus_theta.fraction_above_zero:.4f}" if layer.c_minus_theta else "-"
        lines.append(
            f"{layer.layer:>5}  {layer.units:>5}  {layer.activity:>8.4f}  "
            f"{layer.dead_units:>4}  {layer.always_active_units:>6}  {theta:>7}  "
            f"{frac:>8}"
        )
    lines.append("dead: units never active; always: units active at every position")
    if not any(layer.c_minus_theta for layer in report.layers):
        lines += ["", f"{report.model_type} has no threshold: no ĉ − θ distribution (Fig. 5)"]
    return "\n".join(lines)
