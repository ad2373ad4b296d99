"""Figures over a sweep's grids, as the paper draws them: activity against weight
sparsity (Fig. 1C/D), test perplexity over pruning target × number of pruning steps
(× fine-tuning rate; Fig. 3), and the dense runs across weight decays (the trade-off
of perplexity, activity and MACs, and Fig. 4/5's per-layer distributions per decay).

Each figure function returns its paths and the rows of the values it plotted (the
report writes them beside it as CSV), or raises ``MissingRuns`` naming what is
missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dualsparse.fileio import read_json
from dualsparse.reports import records as rec
from dualsparse.reports.curves import plain_numbers
from dualsparse.sparsity.plots import Run, figure4, figure5, new_figure, save_figure

Drawn = tuple[dict[str, Path], list[list[str]]]

ACTIVITY_COLUMNS = [
    "panel",
    "run",
    "target sparsity",
    "weight sparsity",
    "activity",
    "RNN event MACs/token (M)",
    "test ppl",
]


def activity_vs_sparsity(records: list[rec.Record], stem: Path) -> Drawn:
    """Fig. 1C/D: one point per EGRU run of each group that prunes (its dense runs at the
    same decays included): x weight sparsity, y activity, size event MACs, colour test
    perplexity; one panel per group."""
    pruned = [r for r in records if r["model"] == "egru" and rec.target(r) > 0]
    if not pruned:
        raise rec.MissingRuns("a pruned EGRU run (a group with sparsity: targets)")
    panels: dict[str, list[rec.Record]] = {}
    for group, runs in rec.group_by(pruned, lambda r: str(r.get("group", "egru"))).items():
        decays = {(r["weight_decay"], r["bias_decay"]) for r in runs}
        sources = [
            r for r in rec.dense(records, "egru") if (r["weight_decay"], r["bias_decay"]) in decays
        ]
        panels[group] = sources + runs
    all_points = [r for runs in panels.values() for r in runs]
    largest = max(rec.event_macs(r) for r in all_points) or 1.0
    ppl = [rec.test_ppl(r) for r in all_points]
    fig, axes = new_figure(len(panels))
    rows = []
    for ax, (group, runs) in zip(axes, panels.items(), strict=True):
        points = ax.scatter(
            [rec.number(r, "weight_sparsity") for r in runs],
            [rec.activity(r) for r in runs],
            s=[20 + 280 * rec.event_macs(r) / largest for r in runs],
            c=[rec.test_ppl(r) for r in runs],
            vmin=min(ppl),
            vmax=max(ppl),
            cmap="viridis",
            edgecolors="black",
            linewidths=0.5,
        )
        ax.set_xlabel("weight sparsity")
        ax.set_ylabel("activity (validation, all layers)")
        ax.set_xlim(-0.05, 1.0)
        ax.set_title(f"{group}: marker area ∝ event MACs", fontsize=10)
        fig.colorbar(points, ax=ax, label="test perplexity")
        for r in runs:
            rows.append(
                [
                    group,
                    rec.name(r),
                    f"{rec.target(r):.2f}",
                    f"{rec.number(r, 'weight_sparsity'):.4f}",
                    f"{rec.activity(r):.4f}",
                    f"{rec.event_macs(r) / 1e6:.5f}",
                    f"{rec.test_ppl(r):.3f}",
                ]
            )
    return save_figure(fig, stem), rows


STEPS_COLUMNS = [
    "model",
    "weight decay",
    "bias decay",
    "fine-tuning lr",
    "chained",
    "pruning steps",
    "target sparsity",
    "seeds",
    "test ppl mean",
    "test ppl std",
]


def _line(record: rec.Record) -> tuple[float, float, bool, int]:
    """One line of Fig. 3: decays, not chained (dashed), number of steps."""
    return (
        record["weight_decay"],
        record["bias_decay"],
        not rec.chained(record),
        rec.prune_steps(record),
    )


def pruning_steps(records: list[rec.Record], stem: Path) -> Drawn:
    """Fig. 3: mean test perplexity (± sample std over seeds) over the pruning target,
    where one target was pruned in several ways (steps, fine-tuning rate, chaining),
    one line per number of steps (dashed: pruned from the dense run, not chained), one
    panel per model and fine-tuning rate; the dense runs' level dotted."""
    pruned = [r for r in records if rec.target(r) > 0]
    settings = rec.group_by(pruned, lambda r: (r["model"], rec.target(r)))
    if not any(len({rec.pruning(r)[1:] for r in v}) > 1 for v in settings.values()):
        raise rec.MissingRuns(
            "pruned runs of one target in two or more settings of pruning steps, "
            "fine-tuning rate or chaining (a prune: steps:, lr: or chain: list in the spec)"
        )
    panels = rec.group_by(pruned, lambda r: (r["model"], rec.finetune_lr(r)))
    fig, axes = new_figure(len(panels))
    rows = []
    for ax, ((model, lr), runs) in zip(axes, panels.items(), strict=True):
        lines = rec.group_by(runs, _line)
        for i, ((wd, bd, unchained, steps), line) in enumerate(lines.items()):
            cells = rec.group_by(line, rec.target)
            stats = [rec.mean_std([rec.test_ppl(r) for r in c]) for c in cells.values()]
            ax.errorbar(
                list(cells),
                [m for m, _ in stats],
                yerr=[s for _, s in stats],
                fmt="--o" if unchained else "-o",
                color=f"C{i % 10}",
                capsize=3,
                label=f"{steps} step{'s' if steps > 1 else ''}"
                + (" (from dense)" if unchained else "")
                + f", wd {wd:g}",
            )
            for t, c, (m, s) in zip(cells, cells.values(), stats, strict=True):
                rows.append(
                    [
                        model.upper(),
                        f"{wd:g}",
                        f"{bd:g}",
                        rec.lr_label(lr),
                        "no" if unchained else "yes",
                        str(steps),
                        f"{t:.2f}",
                        str(len(c)),
                        f"{m:.3f}",
                        f"{s:.3f}",
                    ]
                )
        levels = {r["weight_decay"] for r in runs}
        base = [rec.test_ppl(r) for r in rec.dense(records, model) if r["weight_decay"] in levels]
        if base:
            ax.axhline(rec.mean_std(base)[0], color="gray", linestyle=":", label="dense")
        ax.set_xlabel("pruning target (weight sparsity)")
        ax.set_ylabel("test perplexity (mean ± std over seeds)")
        ax.set_title(f"{model.upper()}, fine-tuning lr {rec.lr_label(lr)}", fontsize=10)
        ax.legend(fontsize=7)
    return save_figure(fig, stem), rows


TRADEOFF_COLUMNS = [
    "model",
    "bias decay",
    "weight decay",
    "seeds",
    "test ppl mean",
    "test ppl std",
    "activity mean",
    "activity std",
    "RNN event MACs/token (M)",
]


def decay_series(records: list[rec.Record]) -> dict[tuple[str, float], dict[float, list]]:
    """Per (model, its fixed bias decay): the dense runs by weight decay, where two or
    more weight decays were trained."""
    out = {}
    for model in sorted({r["model"] for r in records}):
        bd = rec.fixed_bias_decay(records, model)
        runs = [r for r in rec.dense(records, model) if r["bias_decay"] == bd]
        by_wd = rec.group_by(runs, lambda r: r["weight_decay"])
        if len(by_wd) > 1:
            out[(model, bd)] = by_wd
    return out


def _decay_axis(ax: Any, decays: list[float]) -> None:
    positive = [d for d in decays if d > 0]
    if len(positive) == len(decays):
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=min(positive, default=1e-3))
    ax.set_xlabel("weight decay")


def decay_tradeoff(records: list[rec.Record], stem: Path) -> Drawn:
    """Across weight decays (dense runs, one bias decay): test perplexity and activity
    against weight decay, and perplexity against event MACs with each decay named (the
    MACs per decay are in the table)."""
    series = decay_series(records)
    if not series:
        raise rec.MissingRuns("dense runs of one model at two or more weight decays")
    fig, axes = new_figure(3)
    rows = []
    for i, ((model, bd), by_wd) in enumerate(series.items()):
        wds = list(by_wd)
        ppl = [rec.mean_std([rec.test_ppl(r) for r in v]) for v in by_wd.values()]
        act = [rec.mean_std([rec.activity(r) for r in v]) for v in by_wd.values()]
        macs = [rec.mean_std([rec.event_macs(r) / 1e6 for r in v])[0] for v in by_wd.values()]
        style = {"color": f"C{i % 10}", "capsize": 3, "fmt": "-o"}
        label = f"{model.upper()} bias decay {bd:g}"
        axes[0].errorbar(wds, [m for m, _ in ppl], yerr=[s for _, s in ppl], label=label, **style)
        axes[1].errorbar(wds, [m for m, _ in act], yerr=[s for _, s in act], label=label, **style)
        axes[2].plot(macs, [m for m, _ in ppl], "-o", color=style["color"], label=label)
        for wd, x, (y, _) in zip(wds, macs, ppl, strict=True):
            axes[2].annotate(
                f"{wd:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        for wd, (pm, ps), (am, asd), m in zip(wds, ppl, act, macs, strict=True):
            numbers = [f"{pm:.3f}", f"{ps:.3f}", f"{am:.4f}", f"{asd:.4f}", f"{m:.5f}"]
            rows.append([model.upper(), f"{bd:g}", f"{wd:g}", str(len(by_wd[wd])), *numbers])
    decays = [wd for by_wd in series.values() for wd in by_wd]
    titles = ("test perplexity (mean ± std over seeds)", "activity (validation)")
    for ax, title in zip(axes[:2], titles, strict=True):
        _decay_axis(ax, decays)
        ax.set_ylabel(title)
        ax.legend(fontsize=7)
    all_macs = [float(row[-1]) for row in rows]
    if max(all_macs) > 10 * min(all_macs) > 0:  # models far apart (an LSTM beside an EGRU)
        axes[2].set_xscale("log")
        plain_numbers(axes[2].xaxis)
    axes[2].set_xlabel("RNN event MACs/token (M)")
    axes[2].set_ylabel("test perplexity (labels: weight decay)")
    return save_figure(fig, stem), rows


def _activity_file(record: rec.Record, sweep_dir: Path) -> dict[str, Any] | None:
    given = Path(str(record["activity"].get("file", "")))
    for path in (given, sweep_dir / "runs" / rec.name(record) / "activity-valid" / "activity.json"):
        if str(path) and path.is_file():
            return read_json(path, "delete the run's results file and run the sweep again")
    return None


def activity_by_decay(records: list[rec.Record], sweep_dir: Path) -> list[Run]:
    """Fig. 4/5's runs across weight decays: one dense EGRU per weight decay at the fixed
    bias decay (lowest seed with an activity file)."""
    bd = rec.fixed_bias_decay(records)
    runs = [r for r in rec.dense(records, "egru") if r["bias_decay"] == bd]
    chosen = []
    for wd, candidates in rec.group_by(runs, lambda r: r["weight_decay"]).items():
        for r in candidates:
            data = _activity_file(r, sweep_dir)
            if data is not None:
                chosen.append((f"wd {wd:g}, seed {r.get('seed', 0)}", data))
                break
    return chosen


def distributions_by_decay(
    records: list[rec.Record], sweep_dir: Path, out: Path
) -> dict[str, Path]:
    """Fig. 4 (per-neuron activity) and Fig. 5 (ĉ − θ) with one curve per weight decay."""
    runs = activity_by_decay(records, sweep_dir)
    if len(runs) < 2:
        raise rec.MissingRuns(
            "dense EGRU runs with activity files at two or more weight decays of one bias decay"
        )
    paths = figure4(runs, out / "fig4_by_weight_decay", "Per-neuron activity by weight decay")
    paths.update(figure5(runs, out / "fig5_by_weight_decay", "ĉ − θ by weight decay") or {})
    return paths
