"""The report's bench tables: each engine row against the fastest contender running the
dense model of its own size and type (speedup beside the MAC ratio of those same two
models), and separately against the paper-size AWD-LSTM (speedup only). Checked on the
JSON of a real `dualsparse bench` run of a tiny trained, pruned EGRU, and on rows copied
from it with hand-set timings; expected values are recomputed here from the rows' names
and the model's sizes, not from the rows' ``runs`` field the tables select by."""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
from pathlib import Path

import pytest

from conftest import error_message, write_run_config, write_tiny_corpus
from dualsparse.cli import main
from dualsparse.reports import build, tables


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict:
    """`dualsparse bench --json` of the tiny EGRU (emb 16, hidden 16,12), trained one epoch
    and pruned to 80%, with the torch CSR peer (the ONNX peers export the paper-size
    AWD-LSTM, minutes of suite time; tests/engine/test_peers.py checks them)."""
    root = tmp_path_factory.mktemp("bench-table")
    corpus = str(write_tiny_corpus(root / "corpus"))
    quiet = ["--data", corpus, "--no-progress"]
    with contextlib.redirect_stdout(io.StringIO()):
        config = str(write_run_config(root / "tiny.yaml"))
        assert main(["train", "--config", config, "--out", str(root / "run"), *quiet]) == 0
        prune = ["prune", str(root / "run"), "--target", "0.8", "--out", str(root / "p80")]
        assert main([*prune, "--finetune-epochs", "1", *quiet]) == 0
        assert main(["export", str(root / "p80"), str(root / "export")]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        args = ["--json", "--tokens", "10", "--threads", "1", "--peers", "torch CSR"]
        assert main(["bench", str(root / "export"), *args]) == 0
    return json.loads(out.getvalue())


def _sweep_with(tmp_path: Path, **benches: dict) -> Path:
    (tmp_path / "bench").mkdir(parents=True)
    for name, data in benches.items():
        (tmp_path / "bench" / f"{name}.json").write_text(json.dumps(data), encoding="utf-8")
    return tmp_path


def _dense_egru_macs(model: dict) -> tuple[int, int]:
    """Dense MACs per token of the EGRU of emb 16, hidden 16,12 by hand: 3H·I + 3H·H per
    layer; end to end adds the projection [16, 12] and the tied decoder [V, 16]."""
    assert (model["emb_size"], model["hidden_sizes"]) == (16, [16, 12])
    rnn = (3 * 16 * 16 + 3 * 16 * 16) + (3 * 12 * 16 + 3 * 12 * 12)
    return rnn, rnn + 16 * 12 + model["vocab_size"] * 16


def _expected_fastest(rows: list[dict], engine: dict, prefixes: tuple[str, ...], part: str):
    """By the rows' names: the fastest row at the engine row's thread count whose name starts
    with one of ``prefixes``; an engine row without the table only against rows without it."""
    table = ", table" in engine["name"]
    key = f"ms_per_token_{part}_median"
    candidates = [
        r
        for r in rows
        if r["threads"] == engine["threads"]
        and r["name"].startswith(prefixes)
        and (table or not r["name"].endswith(", table"))
    ]
    return min(candidates, key=lambda r: r[key])


SAME_SIZE = (
    "dense EGRU (model size)",
    "ORT dense EGRU",
    "ORT iobind dense EGRU",
    "OpenVINO dense EGRU",
)
AWD_LSTM = ("dense AWD-LSTM", "engine AWD-LSTM", "ORT dense AWD-LSTM", "ORT iobind dense AWD-LSTM")


def test_bench_tables_on_a_real_bench(bench, tmp_path):
    """Every engine row on the model, against the fastest same-size dense EGRU row and the
    fastest AWD-LSTM row, as recomputed from the names; the MAC ratio is the dense EGRU's
    MACs by hand over the engine row's event MACs; both tables written by the report."""
    benches = tables.bench_results(_sweep_with(tmp_path, **{"egru-p80": bench}))
    engines = [r for r in bench["rows"] if r["name"].startswith("engine EGRU (80% pruned")]
    assert len(engines) == 2  # with and without the first-layer table, one thread
    same_rows, awd_rows = tables.bench_table(benches), tables.bench_awd_lstm_table(benches)
    assert len(same_rows) == len(awd_rows) == 2
    dense_macs = dict(zip(("rnn", "full"), _dense_egru_macs(bench["model"]), strict=True))
    for engine, same, awd in zip(engines, same_rows, awd_rows, strict=True):
        row = dict(zip(tables.BENCH_COLUMNS, same, strict=True))
        assert row["model"] == awd[0] == f"egru-p80 ({engine['name']})"
        assert row["threads"] == "1" and row["weight sparsity"] == "0.800"
        for part, label in (("rnn", "RNN"), ("full", "e2e")):
            engine_ms = engine[f"ms_per_token_{part}_median"]
            fastest = _expected_fastest(bench["rows"], engine, SAME_SIZE, part)
            fastest_ms = fastest[f"ms_per_token_{part}_median"]
            assert row[f"fastest dense same size, {label}"] == fastest["name"]
            assert row[f"its {label} ms"] == f"{fastest_ms:.3f}"
            assert row[f"{label} speedup"] == f"{fastest_ms / engine_ms:.1f}×"
            ratio = dense_macs[part] / engine[f"macs_per_token_{part}"]
            assert row[f"{label} MAC ratio"] == f"{ratio:.1f}×"
            awd_row = dict(zip(tables.BENCH_AWD_LSTM_COLUMNS, awd, strict=True))
            fastest = _expected_fastest(bench["rows"], engine, AWD_LSTM, part)
            fastest_ms = fastest[f"ms_per_token_{part}_median"]
            assert awd_row[f"fastest dense AWD-LSTM, {label}"] == fastest["name"]
            assert awd_row[f"{label} speedup (measured only)"] == f"{fastest_ms / engine_ms:.1f}×"
    # the report: both tables, the AWD-LSTM one under its own heading and without MAC ratios
    doc, out = build._Document(), tmp_path / "report"
    out.mkdir()
    paths = build._bench(doc, out, tmp_path)
    markdown = doc.markdown()
    same_part, awd_part = markdown.split("### Against the paper-size AWD-LSTM", 1)
    assert "| " + " | ".join(tables.BENCH_COLUMNS) + " |" in same_part
    assert "| " + " | ".join(tables.BENCH_AWD_LSTM_COLUMNS) + " |" in awd_part
    assert not any("MAC" in column for column in tables.BENCH_AWD_LSTM_COLUMNS)
    assert "real / theory" not in markdown
    with paths["bench_csv"].open() as f:
        assert list(csv.reader(f)) == [tables.BENCH_COLUMNS, *same_rows]
    with paths["bench_awd_lstm_csv"].open() as f:
        assert list(csv.reader(f)) == [tables.BENCH_AWD_LSTM_COLUMNS, *awd_rows]


def _timed(row: dict, name: str, threads: int, rnn_ms: float, full_ms: float, **keys) -> dict:
    out = copy.deepcopy(row)
    out.update(name=name, threads=threads, **keys)
    out.update(ms_per_token_rnn_median=rnn_ms, ms_per_token_full_median=full_ms)
    return out


def test_fastest_contender_per_thread_count_table_and_model(bench, tmp_path):
    """Rows copied from the real bench with hand-set timings, at two thread counts: the
    fastest same-size row differs between RNN and end to end, between thread counts and
    with the table; a faster dense GRU (other type) and torch CSR (the pruned model, not
    the dense one) never count; an engine row without the table meets no row with it."""
    by_name = {r["name"]: r for r in bench["rows"]}
    ort = {"runtime": "ONNX Runtime, I/O binding"}
    hand = [  # name, template row, extra keys, (RNN ms, e2e ms) at 1 thread and at 2
        ("dense EGRU (model size)", {}, (0.50, 0.80), (1.00, 1.60)),
        ("dense EGRU (model size), table", {}, (0.40, 0.90), (0.80, 1.80)),
        ("ORT iobind dense EGRU (model size), table", ort, (0.30, 0.95), (100.0, 100.0)),
        ("OpenVINO dense EGRU (model size)", {"runtime": "OpenVINO"}, (0.45, 0.60), (0.90, 1.20)),
        ("dense GRU (model size)", {}, (0.01, 0.01), (0.01, 0.01)),
        ("torch CSR EGRU (80% pruned)", {}, (0.02, 0.02), (0.02, 0.02)),
        ("dense AWD-LSTM", {}, (5.0, 6.0), (5.0, 6.0)),
        ("dense AWD-LSTM, table", {}, (4.0, 7.0), (4.0, 7.0)),
        ("engine AWD-LSTM (dense, no table)", {}, (4.5, 5.5), (4.5, 5.5)),
        ("ORT iobind dense AWD-LSTM, table", ort, (3.0, 6.5), (3.0, 6.5)),
        ("engine EGRU (80% pruned, table)", {}, (0.10, 0.20), (0.20, 0.40)),
        ("engine EGRU (80% pruned, no table)", {}, (0.15, 0.25), (0.15, 0.25)),
    ]
    template = {  # the added peers' rows are copies of the PyTorch row of the same model
        "ORT iobind dense EGRU (model size), table": "dense EGRU (model size), table",
        "OpenVINO dense EGRU (model size)": "dense EGRU (model size)",
        "ORT iobind dense AWD-LSTM, table": "dense AWD-LSTM, table",
    }
    rows = [
        _timed(by_name[template.get(name, name)], name, threads, *times[threads - 1], **keys)
        for threads in (1, 2)
        for name, keys, *times in hand
    ]
    data = {**bench, "rows": rows}
    c1_table, c1_plain, c2_table, c2_plain = tables.bench_comparisons([("b", data)])
    assert [c["engine"]["threads"] for c in (c1_table, c1_plain, c2_table, c2_plain)] == [
        1,
        1,
        2,
        2,
    ]

    def seen(entry: dict, key: str) -> tuple[str, float]:
        return entry[key]["fastest"], round(entry[key]["speedup"], 9)

    assert seen(c1_table, "same_size_rnn") == ("ORT iobind dense EGRU (model size), table", 3.0)
    assert seen(c1_table, "same_size_full") == ("OpenVINO dense EGRU (model size)", 3.0)
    assert seen(c1_plain, "same_size_rnn") == ("OpenVINO dense EGRU (model size)", 3.0)
    assert seen(c1_plain, "same_size_full") == ("OpenVINO dense EGRU (model size)", 2.4)
    assert seen(c2_table, "same_size_rnn") == ("dense EGRU (model size), table", 4.0)
    assert seen(c2_table, "same_size_full") == ("OpenVINO dense EGRU (model size)", 3.0)
    assert seen(c1_table, "awd_lstm_rnn") == ("ORT iobind dense AWD-LSTM, table", 30.0)
    assert seen(c1_table, "awd_lstm_full") == ("engine AWD-LSTM (dense, no table)", 27.5)
    assert seen(c1_plain, "awd_lstm_rnn") == ("engine AWD-LSTM (dense, no table)", 30.0)
    assert seen(c2_plain, "awd_lstm_full") == ("engine AWD-LSTM (dense, no table)", 22.0)
    # the MAC ratio: the same-size dense model's MACs by hand over the engine's event MACs
    rnn_macs, _ = _dense_egru_macs(bench["model"])
    engine_macs = by_name["engine EGRU (80% pruned, table)"]["macs_per_token_rnn"]
    assert c1_table["same_size_rnn"]["mac_ratio"] == pytest.approx(rnn_macs / engine_macs)
    assert "mac_ratio" not in c1_table["awd_lstm_rnn"]
    # no row running the same-size dense model: dashes, not another model's numbers
    without = {**data, "rows": [r for r in rows if "EGRU (model size)" not in r["name"]]}
    first = tables.bench_table([("b", without)])[0]
    assert first[5:9] == ["—"] * 4 and first[10:] == ["—"] * 4


def test_bench_results_that_the_tables_cannot_read(bench, tmp_path):
    old = {**bench, "rows": [{k: v for k, v in r.items() if k != "runs"} for r in bench["rows"]]}
    message = error_message(tables.bench_results, _sweep_with(tmp_path / "old", old=old))
    assert "old.json" in message and "lack runs" in message and "dualsparse bench" in message
    message = error_message(tables.bench_results, _sweep_with(tmp_path / "list", rows=[]))
    assert "rows.json is not a `dualsparse bench --json` result" in message
