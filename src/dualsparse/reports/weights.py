"""Fig. 2C/D: how weight decay shapes the distributions of the RNN layers' weights and
biases (dense EGRU runs at one bias decay, one run per weight decay, means marked).

The values come from each run's best checkpoint, read by ``runs.load_run``
(safetensors; nothing unpickled). Weights: every matrix of the recurrent layers
(input and recurrent); biases: every vector of them except the thresholds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualsparse.reports import records as rec
from dualsparse.reports.curves import plain_numbers
from dualsparse.sparsity.plots import new_figure, save_figure

DISTRIBUTION_COLUMNS = [
    "weight decay",
    "bias decay",
    "run",
    "weights",
    "weight mean",
    "weight std",
    "mean |weight|",
    "biases",
    "bias mean",
    "bias std",
]


def rnn_parameters(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(weights, biases) of the recurrent layers of a run's best checkpoint, flattened."""
    from dualsparse.runs import load_run

    model = load_run(run_dir, "best").model
    weights, biases = [], []
    for pname, param in model.named_parameters():
        if not pname.startswith("layers.") or pname.endswith("threshold"):
            continue
        values = param.detach().cpu().numpy().ravel()
        (weights if param.ndim >= 2 else biases).append(values)
    return np.concatenate(weights), np.concatenate(biases) if biases else np.zeros(0)


def decay_runs(records: list[rec.Record], sweep_dir: Path) -> list[tuple[rec.Record, Path]]:
    """One dense EGRU per weight decay at the fixed bias decay (the lowest seed whose
    directory exists), in order of weight decay."""
    bd = rec.fixed_bias_decay(records)
    if bd is None:
        raise rec.MissingRuns("a dense EGRU run")
    chosen = []
    by_wd = rec.group_by(
        [r for r in rec.dense(records, "egru") if r["bias_decay"] == bd],
        lambda r: r["weight_decay"],
    )
    for runs in by_wd.values():
        found = next(((r, d) for r in runs if (d := rec.run_dir(r, sweep_dir))), None)
        if found:
            chosen.append(found)
    if len(chosen) < 2:
        raise rec.MissingRuns(
            f"dense EGRU runs at two or more weight decays with one bias decay (found "
            f"{len(by_wd)} weight decay(s) at bias decay {bd:g}, {len(chosen)} with a run "
            "directory)"
        )
    return chosen


def figure(
    records: list[rec.Record], sweep_dir: Path, stem: Path
) -> tuple[dict[str, Path], list[list[str]]]:
    """Fig. 2C (weights) and 2D (biases): one density histogram per weight decay, a
    dashed line at each mean; returns the paths and the table of the plotted statistics."""
    chosen = decay_runs(records, sweep_dir)
    data = [(r, *rnn_parameters(d)) for r, d in chosen]
    fig, axes = new_figure(2)
    rows = []
    for i, (r, weights, biases) in enumerate(data):
        color = f"C{i % 10}"
        label = f"wd {r['weight_decay']:g}"
        for ax, values in zip(axes, (weights, biases), strict=True):
            if values.size:
                ax.hist(values, bins=60, density=True, histtype="step", color=color, label=label)
                ax.axvline(float(values.mean()), color=color, linestyle="--", linewidth=1)
        rows.append(
            [
                f"{r['weight_decay']:g}",
                f"{r['bias_decay']:g}",
                rec.name(r),
                str(weights.size),
                f"{weights.mean():.5f}",
                f"{weights.std():.5f}",
                f"{np.abs(weights).mean():.5f}",
                str(biases.size),
                f"{biases.mean():.5f}" if biases.size else "—",
                f"{biases.std():.5f}" if biases.size else "—",
            ]
        )
    bd = chosen[0][0]["bias_decay"]
    for ax, what in zip(axes, ("weights", "biases"), strict=True):
        ax.set_yscale("log")
        plain_numbers(ax.yaxis)
        ax.set_xlabel(f"value of the RNN layers' {what}")
        ax.set_ylabel("density (log)")
        ax.legend(fontsize=7, title="dashed: mean", title_fontsize=7)
    axes[0].set_title(f"C: weights by weight decay (bias decay {bd:g})", fontsize=10)
    axes[1].set_title(f"D: biases by weight decay (bias decay {bd:g})", fontsize=10)
    return save_figure(fig, stem), rows
