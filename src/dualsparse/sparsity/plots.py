"""Figures of an activity report: Fig. 4 (per-neuron activity) and Fig. 5 (ĉ − θ).

matplotlib is an optional extra (``pip install dualsparse[plots]``) and is
imported only here, when a figure is drawn. The figures are built with the
object-oriented API (``matplotlib.figure.Figure``, Agg canvas), so drawing sets
no global backend and needs no display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dualsparse.errors import DualsparseError
from dualsparse.fileio import atomic_write_bytes
from dualsparse.sparsity.activity import ActivityReport

FORMATS = ("png", "svg")


def new_figure(panels: int) -> tuple[Any, Any]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise DualsparseError(
            "drawing the activity figures needs matplotlib: pip install dualsparse[plots] "
            "(or pass --no-plots; activity.json and activity.npz are written without it)"
        ) from None
    fig = Figure(figsize=(4.2 * panels, 3.6), layout="constrained")
    return fig, fig.subplots(1, panels, squeeze=False)[0]


def _subtitle(report: ActivityReport) -> str:
    decay = "" if report.weight_decay is None else f", weight decay {report.weight_decay:g}"
    return f"{report.model_type}, {report.split or 'data'} split{decay}"


def save_figure(fig: Any, stem: Path) -> dict[str, Path]:
    """PNG and SVG next to each other; the same figure gives the same bytes (no date in the
    SVG, its element ids from a fixed salt), so a regenerated report diffs only where the
    data changed."""
    from matplotlib import rc_context

    paths = {}
    for fmt in FORMATS:
        path = stem.with_suffix(f".{fmt}")
        metadata = {"Date": None} if fmt == "svg" else None

        def write(handle: Any, fmt: str = fmt, metadata: Any = metadata) -> None:
            with rc_context({"svg.hashsalt": "dualsparse"}):
                fig.savefig(handle, format=fmt, dpi=120, metadata=metadata)

        atomic_write_bytes(path, write)
        paths[f"{stem.name}_{fmt}"] = path
    return paths


def plot_neuron_activity(report: ActivityReport, stem: Path) -> dict[str, Path]:
    """Fig. 4: per layer, how many units are active at which fraction of time steps."""
    fig, axes = new_figure(len(report.layers))
    for ax, layer in zip(axes, report.layers, strict=True):
        ax.stairs(layer.neuron_hist_counts, layer.neuron_hist_edges, fill=True, color="tab:blue")
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel("fraction of time steps the unit is active")
        ax.set_ylabel("units")
        ax.set_title(
            f"layer {layer.layer} ({layer.units} units), activity {layer.activity:.3f}\n"
            f"never active {layer.dead_units}, always active "
            f"{layer.always_active_units}",
            fontsize=10,
        )
    fig.suptitle(f"Per-neuron activity ({_subtitle(report)})")
    return save_figure(fig, stem)


def _zoom(counts: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """The x range holding all but 0.1% of the mass on each side, always showing 0."""
    cumulative = np.cumsum(counts) / max(counts.sum(), 1)
    first = int(np.searchsorted(cumulative, 0.001))
    last = int(np.searchsorted(cumulative, 0.999))
    low, high = min(edges[first], -0.05), max(edges[min(last + 1, len(edges) - 1)], 0.05)
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def plot_c_minus_theta(report: ActivityReport, stem: Path) -> dict[str, Path]:
    """Fig. 5: per EGRU layer, the distribution of ĉ − θ; events are the mass right of 0."""
    layers = [layer for layer in report.layers if layer.c_minus_theta is not None]
    fig, axes = new_figure(len(layers))
    for ax, layer in zip(axes, layers, strict=True):
        dist = layer.c_minus_theta
        share = dist.counts / max(dist.counts.sum(), 1)
        ax.stairs(share, dist.bin_edges, fill=True, color="tab:gray")
        above = dist.bin_edges[:-1] >= 0
        ax.stairs(
            np.where(above, share, 0.0),
            dist.bin_edges,
            fill=True,
            color="tab:red",
            label=f"ĉ > θ (event): {dist.fraction_above_zero:.3f}",
        )
        ax.axvline(0.0, color="black", linewidth=1, linestyle="--", label="θ crossing")
        ax.set_xlim(*_zoom(dist.counts, dist.bin_edges))
        ax.set_yscale("log")
        ax.set_xlabel("ĉ − θ (pre-reset state minus threshold)")
        ax.set_ylabel("fraction of values (log)")
        ax.set_title(
            f"layer {layer.layer} ({layer.units} units), mean θ "
            f"{layer.threshold_stats()['mean']:.3f}",
            fontsize=10,
        )
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"Distribution of ĉ − θ ({_subtitle(report)})")
    return save_figure(fig, stem)


def write_activity_figures(report: ActivityReport, out_dir: Path) -> dict[str, Path]:
    """Fig. 4 always; Fig. 5 only for models with thresholds (EGRU)."""
    paths = plot_neuron_activity(report, Path(out_dir) / "fig4_neuron_activity")
    if any(layer.c_minus_theta is not None for layer in report.layers):
        paths.update(plot_c_minus_theta(report, Path(out_dir) / "fig5_c_minus_theta"))
    return paths
