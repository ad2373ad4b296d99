"""A tiny synthetic-corpus study end to end (train → prune → measure → report), with the
report's table checked against the results files recomputed independently."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import error_message, write_run_config
from dualsparse.cli import main
from dualsparse.data.synthetic import SourceSpec, write_corpus
from dualsparse.reports.build import write_report
from dualsparse.reports.paper import paper_rows
from dualsparse.sweeps.runner import run_sweep
from dualsparse.sweeps.spec import load_spec


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """EGRU (2 seeds, pruned to 50% and 80% in a chain; weight decay 0 and 0.1) and LSTM
    (1 seed, 50%) on 4k tokens of the synthetic source."""
    root = tmp_path_factory.mktemp("study")
    write_corpus(root / "corpus", SourceSpec(seed=3), 4000, 600, 600)
    write_run_config(root / "egru.yaml", epochs=1, batch_size=8, bptt=12, eval_batch_size=4)
    write_run_config(
        root / "lstm.yaml", {"type": "lstm"}, epochs=1, batch_size=8, bptt=12, eval_batch_size=4
    )
    spec = {
        "name": "tiny-study",
        "description": "two models, two seeds, chained pruning, a weight-decay pair",
        "data": "corpus",
        "jobs": 2,
        "measure": {"test_batch_size": 1, "macs_batch_size": 2},
        "groups": [
            {
                "name": "egru",
                "config": "egru.yaml",
                "seeds": [1, 2],
                "weight_decay": [0.1],
                "sparsity": [0.5, 0.8],
                "prune": {"finetune_epochs": 1},
            },
            {"name": "egru", "config": "egru.yaml", "seeds": [1, 2], "weight_decay": [0.0, 0.1]},
            {"name": "lstm", "config": "lstm.yaml", "seeds": [1], "sparsity": [0.5]},
        ],
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    state = run_sweep(load_spec(root / "spec.yaml"), root / "sweep", progress=False)
    assert {r["status"] for r in state["jobs"].values()} == {"done"}, state
    return root


def _results(study: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (study / "sweep" / "results").glob("*.json")}


def test_sweep_made_every_run(study):
    names = set(_results(study))
    assert names == {
        "egru-wd0.1-bd0-s1",
        "egru-wd0.1-bd0-s1-p50",
        "egru-wd0.1-bd0-s1-p80",
        "egru-wd0.1-bd0-s2",
        "egru-wd0.1-bd0-s2-p50",
        "egru-wd0.1-bd0-s2-p80",
        "egru-wd0-bd0-s1",
        "egru-wd0-bd0-s2",
        "lstm-wd0.1-bd0-s1",
        "lstm-wd0.1-bd0-s1-p50",
    }
    # the chain: p80 was pruned from p50, which was pruned from the dense run
    prune = json.loads((study / "sweep/runs/egru-wd0.1-bd0-s1-p80/prune.json").read_text())
    assert Path(prune["source_run"]).name == "egru-wd0.1-bd0-s1-p50"
    assert prune["start_sparsity"] == pytest.approx(0.5, abs=2e-3)


@pytest.fixture(scope="module")
def report(study, tmp_path_factory) -> Path:
    """`dualsparse report` of a copy of the sweep with one `dualsparse bench --json` result
    in its bench/ folder (one report serves the table, file and bench tests)."""
    root = tmp_path_factory.mktemp("report")
    run = study / "sweep" / "runs" / "egru-wd0.1-bd0-s1-p80"
    export = root / "export"
    assert main(["export", str(run), str(export)]) == 0
    bench = subprocess.run(
        [
            sys.executable,
            "-m",
            "dualsparse",
            "bench",
            str(export),
            "--json",
            "--tokens",
            "40",
            "--threads",
            "1",
            "--peers",
            "none",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    sweep_copy = root / "sweep"
    shutil.copytree(study / "sweep", sweep_copy)
    (sweep_copy / "bench").mkdir()
    (sweep_copy / "bench" / "egru-p80.json").write_text(bench.stdout)
    assert main(["report", str(sweep_copy), "--out", str(root / "r")]) == 0
    return root / "r"


def test_report_table_matches_the_results(study, report):
    with (report / "table.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    results = _results(study)
    by_cell = {(r["model"], r["weight decay"], r["target sparsity"]): r for r in rows}
    assert len(rows) == len(by_cell) == 6  # EGRU wd0: 1, EGRU wd0.1: 3 levels, LSTM: 2
    lstm_dense = results["lstm-wd0.1-bd0-s1"]["macs"]["rnn"]["event_macs_per_token"]
    for (model, wd, target), row in by_cell.items():
        suffix = "" if target == "0.00" else f"-p{round(float(target) * 100)}"
        runs = [
            r
            for name, r in results.items()
            if name.startswith(f"{model.lower()}-wd{wd}-") and re.search(rf"-s\d+{suffix}$", name)
        ]
        assert int(row["seeds"]) == len(runs) > 0
        test = np.array([r["test"]["perplexity"] for r in runs])
        valid = np.array([r["valid"]["perplexity"] for r in runs])
        std = test.std(ddof=1) if len(test) > 1 else 0.0
        assert row["test ppl mean ± std"] == f"{test.mean():.2f} ± {std:.2f}"
        assert float(row["test ppl min"]) == pytest.approx(test.min(), abs=0.006)
        assert float(row["valid ppl min"]) == pytest.approx(valid.min(), abs=0.006)
        assert float(row["weight sparsity"]) == pytest.approx(float(target), abs=2e-3)
        macs = np.mean([r["macs"]["rnn"]["event_macs_per_token"] for r in runs])
        assert float(row["MAC reduction ×"]) == pytest.approx(lstm_dense / macs, rel=0.06)
    # pruning removes MACs; the EGRU's activity removes more than the LSTM's
    assert float(by_cell[("EGRU", "0.1", "0.80")]["RNN MACs/token (M)"]) < float(
        by_cell[("EGRU", "0.1", "0.00")]["RNN MACs/token (M)"]
    )
    assert float(by_cell[("LSTM", "0.1", "0.00")]["MAC reduction ×"]) == 1.0
    assert by_cell[("LSTM", "0.1", "0.00")]["activity (valid)"] == "1.000 / 1.000"


def test_report_files_and_html_is_self_contained(report):
    for stem in ("fig1_ppl_vs_macs", "fig2_weight_decay", "fig4_neuron_activity"):
        assert (report / f"{stem}.png").stat().st_size > 1000
        assert (report / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    page = (report / "report.html").read_text(encoding="utf-8")
    # figures 1, 2, 4, 5, and the study figures this sweep has runs for: Fig. 1C/D, 2C/D,
    # the weight-decay trade-off, Fig. 4 and 5 per weight decay, the learning curves
    assert page.count("data:image/png;base64,") == 10
    assert not re.search(r'src="(?!data:)', page)  # nothing fetched from elsewhere
    md = (report / "report.md").read_text(encoding="utf-8")
    assert "Published: Table 2 (Penn Treebank)" in md
    # the published rows are drawn from the shipped CSV, not retyped
    ptb = paper_rows("ptb")
    egru85 = next(r for r in ptb if r.model == "egru" and r.weight_sparsity == 0.85)
    assert f"| EGRU | 0.85 | {egru85.macs_millions:g} |" in md
    independence = list(csv.DictReader((report / "independence.csv").open()))
    for row in independence:
        if row["model"] == "LSTM":  # every LSTM input is nonzero: the estimate is exact
            assert float(row["exact / estimate"]) == pytest.approx(1.0, abs=1e-3)


def test_report_with_a_bench_result(report):
    rows = list(csv.DictReader((report / "bench.csv").open()))
    assert rows and all(r["threads"] == "1" for r in rows)
    assert "0.80" in rows[0]["weight sparsity"]
    assert "Measured inference speed" in (report / "report.md").read_text()
    assert (report / "bench_awd_lstm.csv").is_file()


def test_report_lists_runs_that_did_not_finish_and_can_leave_out_the_paper(study, tmp_path):
    sweep_copy = tmp_path / "sweep"
    shutil.copytree(study / "sweep", sweep_copy)
    state = json.loads((sweep_copy / "sweep.json").read_text())
    state["jobs"]["lstm-wd0.1-bd0-s1-p50"].update(status="failed", error="Trace\nValueError: x\n")
    state["jobs"]["egru-wd0-bd0-s2"].update(status="skipped", error=None)
    (sweep_copy / "sweep.json").write_text(json.dumps(state))
    md = write_report(sweep_copy, tmp_path / "r", paper="none")["markdown"].read_text()
    section = md.split("## Runs that did not finish\n\n", 1)[1]
    unfinished = section.split("\n\n", 1)[0].splitlines()
    assert sorted(unfinished[2:]) == [
        "| egru-wd0-bd0-s2 | skipped |  |",
        "| lstm-wd0.1-bd0-s1-p50 | failed | ValueError: x |",  # the error's last line
    ]
    assert "Published" not in md and "tiny-study" in md.splitlines()[0]


def test_report_errors(tmp_path, capsys):
    assert "has no finished runs" in error_message(write_report, tmp_path)
    assert "is not a directory" in error_message(write_report, tmp_path / "missing")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "x.json is not JSON" in err and "Traceback" not in err
    (tmp_path / "results" / "x.json").write_text("{}")
    (tmp_path / "sweep.json").write_bytes(b"\xff\xfe half a file")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "sweep.json is not JSON; move it away" in err and "Traceback" not in err


def test_report_of_results_that_are_not_run_results(study, tmp_path, capsys):
    """Issue 15 point 9: a results file that is [] or lacks keys was a traceback."""
    sweep = Path(shutil.copytree(study / "sweep", tmp_path / "sweep"))
    (sweep / "sweep.json").unlink(missing_ok=True)
    first = sorted((sweep / "results").glob("*.json"))[0]
    record = json.loads(first.read_text())
    del record["macs"]["rnn"]["event_macs_per_token"]
    for content, expected in (
        ("[]", "lacks model"),
        ('{"model": "egru"}', "lacks weight_decay"),
        (json.dumps(record), "'macs.rnn.event_macs_per_token'"),
    ):
        first.write_text(content)
        assert main(["report", str(sweep), "--out", str(tmp_path / "r")]) == 2
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        (line,) = err.splitlines()
        assert line.startswith("error: ") and expected in line, line
