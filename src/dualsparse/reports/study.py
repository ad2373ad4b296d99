"""The report's study sections: the figures a spec can ask for by name (``figures:``,
``sweeps.spec.FIGURES``), the learning curves, and the closing findings table.

They are returned as parts (heading, text, table, CSV, figure) that ``build`` puts in
the document, so this module decides what to say and ``build`` how to render it. A
figure the spec asked for whose runs are missing gets one line naming what is
missing; one it did not ask for (or every one, when the spec names none) is drawn
when the data allows and otherwise skipped with a line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dualsparse.reports import curves as crv
from dualsparse.reports import findings as fnd
from dualsparse.reports import grids, weights
from dualsparse.reports import records as rec

Part = tuple[Any, ...]  # ("heading", text) | ("text", text) | ("table"/"csv", name, cols, rows)
#                         | ("figure", paths, caption)

TITLES = {
    "activity-vs-sparsity": "Figure 1C/D: EGRU activity against weight sparsity",
    "decay-distributions": "Figure 2C/D: weights and biases by weight decay",
    "pruning-steps": "Figure 3: test perplexity over pruning target and steps",
    "decay-tradeoff": "Figures 4 and 5 across weight decays",
    "learning-curves": "Learning curves: had each run settled?",
}


def _activity_vs_sparsity(records, sweep_dir, out, curves) -> list[Part]:
    paths, rows = grids.activity_vs_sparsity(records, out / "fig1cd_activity_vs_sparsity")
    return [
        (
            "figure",
            paths,
            "Activity (validation) against weight sparsity per EGRU run; marker "
            "area ∝ RNN event MACs per token, colour = test perplexity",
        ),
        ("csv", "fig1cd_activity_vs_sparsity", grids.ACTIVITY_COLUMNS, rows),
        ("text", "Plotted values: `fig1cd_activity_vs_sparsity.csv`."),
    ]


def _decay_distributions(records, sweep_dir, out, curves) -> list[Part]:
    paths, rows = weights.figure(records, sweep_dir, out / "fig2cd_decay_distributions")
    return [
        (
            "figure",
            paths,
            "Distributions (density, log) of the RNN layers' weights (C) and "
            "biases (D) of one dense EGRU per weight decay; dashed lines: means",
        ),
        ("text", "Read from each run's best checkpoint (model.safetensors); thresholds excluded."),
        ("table", "fig2cd_decay_distributions", weights.DISTRIBUTION_COLUMNS, rows),
    ]


def _pruning_steps(records, sweep_dir, out, curves) -> list[Part]:
    paths, rows = grids.pruning_steps(records, out / "fig3_pruning_steps")
    return [
        (
            "figure",
            paths,
            "Test perplexity over pruning target, one line per number of "
            "pruning steps (dashed: pruned from the dense run), a panel per model and "
            "fine-tuning learning rate; dotted: the dense runs",
        ),
        ("table", "fig3_pruning_steps", grids.STEPS_COLUMNS, rows),
    ]


def _decay_tradeoff(records, sweep_dir, out, curves) -> list[Part]:
    paths, rows = grids.decay_tradeoff(records, out / "fig45_decay_tradeoff")
    parts: list[Part] = [
        (
            "figure",
            paths,
            "Dense runs across weight decays at one bias decay: test perplexity and "
            "activity against weight decay (mean ± std over seeds), and perplexity against "
            "RNN event MACs (labels: weight decay; the MACs per decay in the table)",
        ),
        ("table", "fig45_decay_tradeoff", grids.TRADEOFF_COLUMNS, rows),
    ]
    try:
        found = grids.distributions_by_decay(records, sweep_dir, out)
    except rec.MissingRuns as missing:
        return [
            *parts,
            ("text", f"Fig. 4/5 by weight decay not drawn: this sweep lacks {missing}."),
        ]
    stems = sorted({p.stem for p in found.values()})
    captions = {
        "fig4_by_weight_decay": "Per-neuron activity histograms per layer, one dense EGRU "
        "per weight decay (validation split)",
        "fig5_by_weight_decay": "ĉ − θ per layer, one dense EGRU per weight decay",
    }
    for stem in stems:
        figure = {k: p for k, p in found.items() if p.stem == stem}
        parts.append(("figure", figure, captions[stem]))
    return parts


def _learning_curves(records, sweep_dir, out, curves) -> list[Part]:
    paths = crv.figure(curves, out / "learning_curves")
    return [
        (
            "figure",
            paths,
            "Validation perplexity and activity per epoch of every run "
            "(pruned runs: their fine-tuning steps one after another)",
        ),
        ("text", f"Settled: {crv.SETTLED_RULE}."),
        ("table", "learning_curves", crv.CURVE_COLUMNS, crv.settled_rows(curves)),
    ]


DRAW: dict[str, Callable[..., list[Part]]] = {
    "activity-vs-sparsity": _activity_vs_sparsity,
    "decay-distributions": _decay_distributions,
    "pruning-steps": _pruning_steps,
    "decay-tradeoff": _decay_tradeoff,
    "learning-curves": _learning_curves,
}


def figure_parts(
    records: list[rec.Record],
    sweep_dir: Path,
    out: Path,
    requested: tuple[str, ...] | None,
    curves: list[crv.Curve],
) -> list[Part]:
    """The named figures in the order of TITLES: drawn, or a line saying why not."""
    parts: list[Part] = []
    left_out = []
    for figure_name, title in TITLES.items():
        if requested is not None and figure_name not in requested:
            left_out.append(figure_name)
            continue
        parts.append(("heading", title))
        try:
            parts += DRAW[figure_name](records, sweep_dir, out, curves)
        except rec.MissingRuns as missing:
            if requested is None:
                parts.append(("text", f"Not drawn: this sweep lacks {missing}."))
            else:
                parts.append(
                    (
                        "text",
                        f"The spec asks for `{figure_name}`, but the sweep lacks its "
                        f"runs: {missing}.",
                    )
                )
    if left_out:
        parts.append(("text", f"Not asked for by the spec (figures:): {', '.join(left_out)}."))
    return parts


def findings_parts(records: list[rec.Record], curves: list[crv.Curve]) -> list[Part]:
    """The closing findings table and the rules it applies."""
    settled = {c.name: c.settled() for c in curves}
    found = fnd.findings(records, settled)
    return [
        ("heading", "Findings: the paper's claims tested on this sweep"),
        (
            "text",
            "Each claim of the paper with the number this sweep measured and a verdict "
            "by the rules below (thresholds in `dualsparse.reports.findings`). Rules: "
            + " ".join(fnd.RULES)
            + f" Settled: {crv.SETTLED_RULE}.",
        ),
        ("table", "findings", fnd.COLUMNS, [f.row() for f in found]),
    ]
