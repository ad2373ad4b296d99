"""Figures of activity reports: Fig. 4 (per-neuron activity) and Fig. 5 (ĉ − θ).

Each figure is drawn by one function for one run (``dualsparse activity``) or
several (the sweep report compares a dense run with its pruned descendant). A run
is given as (label, its activity report in the activity.json form), which is what
``ActivityReport.to_dict`` returns and what the report reads back from disk.

matplotlib is an optional extra (``pip install dualsparse[plots]``) and is
imported only here, when a figure is drawn. The figures are built with the
object-oriented API (``matplotlib.figure.Figure``, Agg canvas), so drawing sets
no global backend and needs no display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dualsparse.errors import DualsparseError
from dualsparse.fileio import atomic_write_bytes

if TYPE_CHECKING:  # activity imports this module to draw; only the type comes back
    from dualsparse.sparsity.activity import ActivityReport

FORMATS = ("png", "svg")

Run = tuple[str, dict[str, Any]]  # (legend label, activity report as in activity.json)


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


def _legend(label: str, text: str) -> str:
    return f"{label}: {text}" if label else text


def _run_color(i: int) -> str:
    """The colour of run ``i`` in every panel of a figure of several runs."""
    return f"C{i % 10}"


def _layer_panels(runs: Sequence[Run], key: str | None = None) -> list[int]:
    """Layer indices with a panel: every layer of any run (with ``key`` set, if given)."""
    return sorted(
        {
            layer["layer"]
            for _, data in runs
            for layer in data["layers"]
            if not key or layer.get(key)
        }
    )


def _panel_title(runs: Sequence[Run], k: int) -> str:
    units = next(layer["units"] for _, d in runs for layer in d["layers"] if layer["layer"] == k)
    return f"layer {k} ({units} units)"


def figure4(runs: Sequence[Run], stem: Path, title: str | None = None) -> dict[str, Path] | None:
    """Fig. 4 of ``runs`` saved as ``stem``.png and .svg; None without runs."""
    fig = draw_figure4(runs, title)
    return None if fig is None else save_figure(fig, stem)


def figure5(runs: Sequence[Run], stem: Path, title: str | None = None) -> dict[str, Path] | None:
    """Fig. 5 of ``runs`` saved as ``stem``.png and .svg; None without thresholds."""
    fig = draw_figure5(runs, title)
    return None if fig is None else save_figure(fig, stem)


def draw_figure4(runs: Sequence[Run], title: str | None = None) -> Any:
    """Fig. 4: per layer, how many units are active at which fraction of time steps, one
    histogram per run (filled when there is one); None without runs."""
    if not runs:
        return None
    panels = _layer_panels(runs)
    fig, axes = new_figure(len(panels))
    for i, (label, data) in enumerate(runs):
        for layer in data["layers"]:
            hist = layer["neuron_activity_histogram"]
            axes[panels.index(layer["layer"])].stairs(
                hist["counts"],
                hist["bin_edges"],
                fill=len(runs) == 1,
                color="tab:blue" if len(runs) == 1 else _run_color(i),
                label=_legend(
                    label,
                    f"activity {layer['activity']:.3f}, never active {layer['dead_units']}, "
                    f"always active {layer['always_active_units']}",
                ),
            )
    for ax, k in zip(axes, panels, strict=True):
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel("fraction of time steps the unit is active")
        ax.set_ylabel("units")
        ax.set_title(_panel_title(runs, k), fontsize=10)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    return fig


def _zoom(counts: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """The x range holding all but 0.1% of the mass on each side, always showing 0."""
    cumulative = np.cumsum(counts) / max(counts.sum(), 1)
    first = int(np.searchsorted(cumulative, 0.001))
    last = int(np.searchsorted(cumulative, 0.999))
    low, high = min(edges[first], -0.05), max(edges[min(last + 1, len(edges) - 1)], 0.05)
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def draw_figure5(runs: Sequence[Run], title: str | None = None) -> Any:
    """Fig. 5: per EGRU layer, the share of ĉ − θ values per bin, one curve per run; events
    are the mass right of 0 (shaded red when there is one run). None without thresholds."""
    runs = [(label, d) for label, d in runs if _layer_panels([(label, d)], "c_minus_theta")]
    if not runs:
        return None
    panels = _layer_panels(runs, "c_minus_theta")
    fig, axes = new_figure(len(panels))
    ranges: dict[int, list[tuple[float, float]]] = {k: [] for k in panels}
    for i, (label, data) in enumerate(runs):
        for layer in data["layers"]:
            dist = layer.get("c_minus_theta")
            if not dist:
                continue
            ax = axes[panels.index(layer["layer"])]
            counts, edges = np.asarray(dist["counts"]), np.asarray(dist["bin_edges"])
            share = counts / max(counts.sum(), 1)
            text = (
                f"ĉ > θ (event) {dist['fraction_above_zero']:.3f}, "
                f"mean θ {layer['threshold']['mean']:.3f}"
            )
            if len(runs) == 1:
                ax.stairs(share, edges, fill=True, color="tab:gray")
                above = np.where(edges[:-1] >= 0, share, 0.0)
                ax.stairs(above, edges, fill=True, color="tab:red", label=_legend(label, text))
            else:
                ax.stairs(share, edges, color=_run_color(i), label=_legend(label, text))
            ranges[layer["layer"]].append(_zoom(counts, edges))
    for ax, k in zip(axes, panels, strict=True):
        ax.axvline(0.0, color="black", linewidth=1, linestyle="--", label="θ crossing")
        ax.set_xlim(min(r[0] for r in ranges[k]), max(r[1] for r in ranges[k]))
        ax.set_yscale("log")
        ax.set_xlabel("ĉ − θ (pre-reset state minus threshold)")
        ax.set_ylabel("fraction of values (log)")
        ax.set_title(_panel_title(runs, k), fontsize=10)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    return fig


def write_activity_figures(report: ActivityReport, out_dir: Path) -> dict[str, Path]:
    """Fig. 4 always; Fig. 5 only for models with thresholds (EGRU); one run each."""
    decay = "" if report.weight_decay is None else f", weight decay {report.weight_decay:g}"
    about = f"{report.model_type}, {report.split or 'data'} split{decay}"
    runs = [("", report.to_dict())]
    paths = figure4(runs, Path(out_dir) / "fig4_neuron_activity", f"Per-neuron activity ({about})")
    paths.update(
        figure5(runs, Path(out_dir) / "fig5_c_minus_theta", f"Distribution of ĉ − θ ({about})")
        or {}
    )
    return paths
