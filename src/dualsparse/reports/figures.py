"""The report's figures (PNG + SVG): Fig. 1 perplexity vs MAC reduction, Fig. 2 weight
decay vs perplexity and activity, Fig. 4/5 activity distributions per layer (drawn by
``sparsity.plots``, as ``dualsparse activity`` draws them, for the runs chosen here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dualsparse.fileio import read_json
from dualsparse.reports.paper import PaperRow, paper_dense_lstm_macs
from dualsparse.reports.tables import Cell, reduction, reference_lstm
from dualsparse.sparsity.plots import Run, figure4, figure5, new_figure, save_figure

__all__ = ["activity_pair", "figure1", "figure2", "figure4", "figure5"]

COLORS = {"egru": "tab:blue", "lstm": "tab:orange", "gru": "tab:green"}


def _series(all_cells: list[Cell]) -> dict[tuple, list[Cell]]:
    """Cells grouped by (model, weight decay, bias decay, way of pruning), each way's
    series starting at the dense cell of its decays, in order of target sparsity. A
    sweep that prunes in one way has one series per decays, as before."""
    out: dict[tuple, list[Cell]] = {}
    dense: dict[tuple, Cell] = {}
    for c in all_cells:
        decays = (c.model, c.weight_decay, c.bias_decay)
        if c.target == 0:
            dense[decays] = c
        else:
            out.setdefault((*decays, c.pruning), []).append(c)
    for decays, c in dense.items():
        ways = [k for k in out if k[:3] == decays]
        for k in ways:
            out[k].append(c)
        if not ways:
            out[(*decays, c.pruning)] = [c]
    return {k: sorted(v, key=lambda c: c.target) for k, v in out.items()}


def figure1(all_cells: list[Cell], paper: list[PaperRow], stem: Path) -> dict[str, Path] | None:
    """Test perplexity vs MAC reduction factor (ours; the paper's beside it)."""
    ref = reference_lstm(all_cells)
    if ref is None:
        return None
    fig, axes = new_figure(2 if paper else 1)
    ax = axes[0]
    all_series = _series(all_cells)
    ways = {k[3] for k in all_series if k[3] != "—"}
    for (model, wd, bd, way), series in all_series.items():
        x = [reduction(c, ref) for c in series]
        y = [c.mean("test.perplexity") for c in series]
        err = [c.std("test.perplexity") for c in series]
        style = "-o" if len(series) > 1 else "s"
        ax.errorbar(
            x,
            y,
            yerr=err,
            fmt=style,
            color=COLORS.get(model),
            alpha=1.0 if len(series) > 1 else 0.5,
            capsize=3,
            label=f"{model.upper()} wd {wd:g}"
            + (f" bd {bd:g}" if bd else "")
            + (f" ({way})" if len(ways) > 1 and way != "—" else ""),
        )
        if len(series) > 1:
            for c, xi, yi in zip(series, x, y, strict=True):
                ax.annotate(
                    f"{c.target:.0%}",
                    (xi, yi),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    ax.set_xscale("log")
    ax.set_xlabel("MAC reduction × (vs the dense LSTM of this sweep)")
    ax.set_ylabel("test perplexity (mean ± std over seeds)")
    ax.set_title("this sweep")
    ax.legend(fontsize=7)
    if paper:
        dense = paper_dense_lstm_macs(paper)
        ax = axes[1]
        for model in ("egru", "lstm"):
            rows = [r for r in paper if r.model == model]
            ax.errorbar(
                [dense / r.macs_millions for r in rows],
                [r.test_ppl_mean for r in rows],
                yerr=[r.test_ppl_std for r in rows],
                fmt="-o",
                color=COLORS[model],
                capsize=3,
                label=model.upper(),
            )
        ax.set_xscale("log")
        ax.set_xlabel("MAC reduction × (vs the paper's dense LSTM)")
        ax.set_ylabel("test perplexity (mean ± std, 15 seeds)")
        ax.set_title(f"published ({paper[0].dataset})")
        ax.legend(fontsize=7)
    return save_figure(fig, stem)


def figure2(all_cells: list[Cell], stem: Path) -> dict[str, Path] | None:
    """Weight decay vs validation perplexity and vs activity (dense runs)."""
    groups: dict[tuple, list[Cell]] = {}
    for c in all_cells:
        if c.target == 0:
            groups.setdefault((c.model, c.bias_decay), []).append(c)
    groups = {k: sorted(v, key=lambda c: c.weight_decay) for k, v in groups.items() if len(v) > 1}
    if not groups:
        return None
    fig, axes = new_figure(2)
    for (model, bd), series in groups.items():
        x = [c.weight_decay for c in series]
        label = f"{model.upper()} bias decay {bd:g}"
        for ax, path in zip(axes, ("valid.perplexity", "activity.overall"), strict=True):
            ax.errorbar(
                x,
                [c.mean(path) for c in series],
                yerr=[c.std(path) for c in series],
                fmt="-o",
                color=COLORS.get(model),
                capsize=3,
                label=label,
            )
    decays = [c.weight_decay for v in groups.values() for c in v]
    positive = [d for d in decays if d > 0]
    ylabels = ("validation perplexity", "activity (fraction of nonzero outputs)")
    for ax, ylabel in zip(axes, ylabels, strict=True):
        if len(positive) == len(decays):
            ax.set_xscale("log")
        else:  # a decay of 0 on a log-like axis
            ax.set_xscale("symlog", linthresh=min(positive, default=1e-3))
        ax.set_xlabel("weight decay")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    axes[0].set_title("A: weight decay vs validation perplexity")
    axes[1].set_title("B: weight decay vs activity")
    return save_figure(fig, stem)


def _activity(record: dict[str, Any]) -> dict[str, Any] | None:
    path = Path(record["activity"]["file"])
    if not path.is_file():
        return None
    return read_json(path, "delete the run's results file and run the sweep again")


def activity_pair(all_cells: list[Cell]) -> list[Run]:
    """The EGRU runs Fig. 4/5 compare: the dense one of the main series and its most
    pruned descendant (first seed), where their activity files exist."""
    series = [s for k, s in _series(all_cells).items() if k[0] == "egru"]
    if not series:
        return []
    main = max(series, key=len)
    chosen = [main[0]] if len(main) == 1 else [main[0], main[-1]]
    out = []
    for c in chosen:
        record = min(c.records, key=lambda r: r.get("seed", 0))
        data = _activity(record)
        if data is not None:
            out.append((f"{c.target:.0%} pruned, seed {record.get('seed', 0)}", data))
    return out
