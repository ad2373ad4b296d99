"""``dualsparse report DIR``: report.md and a self-contained report.html (figures
inlined), the tables as CSV, the figures as PNG and SVG."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
from pathlib import Path
from typing import Any

from dualsparse.errors import DualsparseError
from dualsparse.fileio import atomic_write_text, read_json
from dualsparse.reports import figures, study, tables
from dualsparse.reports.curves import curves as run_curves
from dualsparse.reports.paper import DATASETS, NAMES, TABLE_NUMBER, PaperRow, paper_rows
from dualsparse.reports.records import requested_figures
from dualsparse.sweeps.runner import status_counts


def _paper_dataset(state: dict[str, Any], choice: str | None) -> str | None:
    if choice == "none":
        return None
    if choice:
        return DATASETS[choice]
    args = state.get("data_args") or []
    if "--dataset" in args:
        return DATASETS[args[args.index("--dataset") + 1]]
    return "ptb"  # the paper's main table, for data of its own


def _csv_text(columns: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def _md_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Document:
    """Sections written once, rendered as Markdown and as HTML."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, Any]] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(("h", (level, text)))

    def text(self, text: str) -> None:
        self.parts.append(("p", text))

    def table(self, columns: list[str], rows: list[list[str]]) -> None:
        self.parts.append(("table", (columns, rows)))

    def figure(self, paths: dict[str, Path] | None, caption: str) -> None:
        if paths:
            png = next(p for k, p in paths.items() if k.endswith("_png"))
            svg = next(p for k, p in paths.items() if k.endswith("_svg"))
            self.parts.append(("fig", (png, svg, caption)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.parts:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "table":
                out.append(_md_table(*value))
            else:
                png, svg, caption = value
                out.append(f"![{caption}]({png.name})\n\n*{caption}* ([SVG]({svg.name}))")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = []
        for kind, value in self.parts:
            if kind == "h":
                out.append(f"<h{value[0]}>{html.escape(value[1])}</h{value[0]}>")
            elif kind == "p":
                out.append(f"<p>{html.escape(value)}</p>")
            elif kind == "table":
                out.append(_html_table(*value))
            else:
                png, _svg, caption = value
                data = base64.b64encode(png.read_bytes()).decode("ascii")
                out.append(
                    f'<figure><img alt="{html.escape(caption)}" '
                    f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}'
                    "</figcaption></figure>"
                )
        style = (
            "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:1em 0;font-size:0.85em}"
            "td,th{border:1px solid #bbb;padding:3px 6px;text-align:right}"
            "th{background:#eee}img{max-width:100%}figcaption{font-style:italic}"
        )
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(out)}</body></html>\n"
        )


def write_report(sweep_dir: Path, out_dir: Path | None = None, paper: str | None = None) -> dict:
    """Write the report of ``sweep_dir``; returns the paths written."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise DualsparseError(f"{sweep_dir} is not a directory; give a sweep's --out directory")
    state_path = sweep_dir / "sweep.json"
    state = (
        read_json(state_path, "move it away (the report then reads results/ alone)")
        if state_path.is_file()
        else {}
    )
    records = tables.load_results(sweep_dir)
    out = Path(out_dir) if out_dir else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    cells = tables.cells(records)
    dataset = _paper_dataset(state, paper)
    published = paper_rows(dataset) if dataset else []
    name = state.get("name", sweep_dir.name)
    doc = _Document()
    _introduction(doc, state, name, sweep_dir, len(records))
    paths = _main_table(doc, out, cells)
    if published:
        _published_table(doc, dataset, published)
    paths.update(_figures(doc, out, cells, published))
    curves = run_curves(records, sweep_dir)
    requested = requested_figures(state)
    parts = study.figure_parts(records, sweep_dir, out, requested, curves)
    paths.update(_parts(doc, out, parts))
    paths.update(_independence_check(doc, out, cells))
    paths.update(_bench(doc, out, sweep_dir))
    _unfinished_runs(doc, state.get("jobs", {}))
    paths.update(_parts(doc, out, study.findings_parts(records, curves)))
    paths["markdown"] = out / "report.md"
    atomic_write_text(paths["markdown"], doc.markdown())
    paths["html"] = out / "report.html"
    atomic_write_text(paths["html"], doc.html(f"dualsparse report: {name}"))
    return paths


def _table_with_csv(
    doc: _Document, out: Path, name: str, columns: list[str], rows: list[list[str]]
) -> dict[str, Path]:
    """The table in the document, and the same rows as OUT/NAME.csv."""
    doc.table(columns, rows)
    path = out / f"{name}.csv"
    atomic_write_text(path, _csv_text(columns, rows))
    return {f"{name}_csv": path}


def _parts(doc: _Document, out: Path, parts: list[study.Part]) -> dict[str, Path]:
    """The study sections (``study.py``) in the document; tables also as OUT/NAME.csv."""
    paths: dict[str, Path] = {}
    for kind, *args in parts:
        if kind == "heading":
            doc.heading(args[0])
        elif kind == "text":
            doc.text(args[0])
        elif kind == "figure":
            doc.figure(*args)
            paths.update(args[0])
        elif kind == "table":
            paths.update(_table_with_csv(doc, out, *args))
        else:  # "csv": the plotted values, beside the figure only
            name, columns, rows = args
            paths[f"{name}_csv"] = out / f"{name}.csv"
            atomic_write_text(paths[f"{name}_csv"], _csv_text(columns, rows))
    return paths


def _introduction(
    doc: _Document, state: dict[str, Any], name: str, sweep_dir: Path, n_records: int
) -> None:
    doc.heading(f"Sweep report: {name}", 1)
    data = " ".join(state.get("data_args") or []) or "unknown"
    doc.text(
        f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `dualsparse report "
        f"{sweep_dir}` from {n_records} finished runs "
        f"({status_counts(state) or 'no sweep.json'}); "
        f"data: {data}."
    )
    description = (state.get("spec") or {}).get("description")
    if description:
        doc.text(description.strip())


def _main_table(doc: _Document, out: Path, cells: list[tables.Cell]) -> dict[str, Path]:
    """The paper's Tables 2/3 for this sweep (OUT/table.csv)."""
    ref = tables.reference_lstm(cells)
    doc.heading("Table: perplexity and effective MACs per model and weight sparsity")
    doc.text(
        "As the paper's Tables 2 and 3: RNN MACs per token are the exact event-driven count "
        "Σ_j [a_j ≠ 0]·nnz(W[:, j]) on the test split at batch 1 (embedding and decoder not "
        "counted); MAC reduction is relative to the dense LSTM of this sweep"
        + (
            f" (weight decay {ref.weight_decay:g}, "
            f"{ref.mean('macs.rnn.event_macs_per_token') / 1e6:.3f}M)"
            if ref
            else " (none in this sweep)"
        )
        + "; perplexities are min and mean ± std (sample) over seeds; test at batch 1; "
        "activity is per layer on the validation split."
    )
    return _table_with_csv(doc, out, "table", tables.MAIN_COLUMNS, tables.main_table(cells))


def _published_table(doc: _Document, dataset: str, published: list[PaperRow]) -> None:
    doc.heading(f"Published: Table {TABLE_NUMBER[dataset]} ({NAMES[dataset]}), 15 seeds", 3)
    doc.table(tables.PAPER_COLUMNS, tables.paper_table(published))
    doc.text(
        "Source: Mukherji, Schöne, Nazeer, Mayr, Subramoney, Activity Sparsity "
        "Complements Weight Sparsity for Efficient RNN Inference (arXiv:2311.07625, 2023)."
    )


def _figures(
    doc: _Document, out: Path, cells: list[tables.Cell], published: list[PaperRow]
) -> dict[str, Path]:
    """Figures 1, 2, 4 and 5 as PNG and SVG; a line in place of each that has no data."""
    doc.heading("Figure 1: test perplexity vs MAC reduction")
    fig1 = figures.figure1(cells, published, out / "fig1_ppl_vs_macs")
    doc.figure(
        fig1,
        "Test perplexity vs MAC reduction factor, mean ± std over seeds; "
        "published points on the right",
    )
    if fig1 is None:
        doc.text("No dense LSTM in this sweep, so no reduction factor to plot.")
    doc.heading("Figure 2: weight decay vs validation perplexity and activity")
    fig2 = figures.figure2(cells, out / "fig2_weight_decay")
    doc.figure(fig2, "Dense runs: weight decay vs validation perplexity (A) and activity (B)")
    if fig2 is None:
        doc.text("The sweep has fewer than two weight-decay values for any model.")
    pairs = figures.activity_pair(cells)
    doc.heading("Figures 4 and 5: activity per neuron and ĉ − θ per layer (EGRU)")
    fig4 = figures.figure4(pairs, out / "fig4_neuron_activity")
    fig5 = figures.figure5(pairs, out / "fig5_c_minus_theta")
    doc.figure(fig4, "Per-neuron activity histograms per layer (validation split)")
    doc.figure(fig5, "Distribution of ĉ − θ per layer (validation split); events where > 0")
    if fig4 is None:
        doc.text("No EGRU run with activity data in this sweep.")
    paths: dict[str, Path] = {}
    for fig in (fig1, fig2, fig4, fig5):
        paths.update(fig or {})
    return paths


def _independence_check(doc: _Document, out: Path, cells: list[tables.Cell]) -> dict[str, Path]:
    doc.heading("Independence check: exact event MACs vs λa·λw·dense")
    doc.text(
        "The paper estimates MACs as activity × weight density × dense MACs, assuming the "
        "two sparsities independent; the exact count sums, per input unit, its events times "
        "the nonzeros of its weight column. A ratio above 1: the units that fire more often "
        "keep more of their weights."
    )
    rows = tables.independence_table(cells)
    return _table_with_csv(doc, out, "independence", tables.INDEPENDENCE_COLUMNS, rows)


def _bench(doc: _Document, out: Path, sweep_dir: Path) -> dict[str, Path]:
    """Engine latencies from DIR/bench/*.json, if the sweep has any."""
    benches = tables.bench_results(sweep_dir)
    if not benches:
        return {}
    doc.heading("Measured inference speed (dualsparse bench)")
    doc.text(
        "Engine latency per token at batch 1 (median, ms) from `DIR/bench/*.json` "
        "(`dualsparse bench EXPORT --json`): every contender timed in the same run, on the "
        "same tokens, at the same thread count. Against the dense model of the same size "
        "and type as the benchmarked one: the fastest contender running it (PyTorch addmv, "
        "ONNX Runtime, OpenVINO, whichever the bench ran; an engine row without the "
        "first-layer table meets only contenders without it); the MAC ratio is that dense "
        "model's MACs over the engine's event-driven MACs, so both columns compare the same "
        "two models."
    )
    paths = _table_with_csv(doc, out, "bench", tables.BENCH_COLUMNS, tables.bench_table(benches))
    doc.heading("Against the paper-size AWD-LSTM (a different, larger model)", 3)
    doc.text(
        "The same engine rows against the fastest contender of the same bench running the "
        "dense AWD-LSTM of the paper (emb 400, hidden 1150/1150/400, this model's "
        "vocabulary). Measured speedup only, no MAC ratio: between models of different "
        "sizes the MAC ratio does not predict time (a small model's weights stay in cache, "
        "the AWD-LSTM's do not)."
    )
    rows = tables.bench_awd_lstm_table(benches)
    paths.update(_table_with_csv(doc, out, "bench_awd_lstm", tables.BENCH_AWD_LSTM_COLUMNS, rows))
    return paths


def _unfinished_runs(doc: _Document, jobs: dict[str, dict[str, Any]]) -> None:
    failed = [(n, r) for n, r in jobs.items() if r["status"] in ("failed", "skipped")]
    if failed:
        doc.heading("Runs that did not finish")
        doc.table(
            ["run", "status", "last error line"],
            [
                [n, r["status"], ((r.get("error") or "").strip().splitlines() or [""])[-1]]
                for n, r in failed
            ],
        )
