"""The study figures of ``dualsparse report`` (Fig. 1C/D, 2C/D, 3, 4/5 across weight
decays, learning curves) from a tiny real sweep, their plotted values recomputed from
the results files, the runs' metrics.jsonl and the safetensors checkpoints; and the
line a spec gets when it asks for a figure whose runs are missing."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from conftest import write_run_config
from dualsparse.data.synthetic import SourceSpec, write_corpus
from dualsparse.reports.build import write_report
from dualsparse.reports.study import TITLES
from dualsparse.sweeps.runner import Ledger, data_arguments, job_steps, resolve_data
from dualsparse.sweeps.spec import FIGURES, load_spec
from dualsparse.training.checkpoint import checkpoint_dir

FIGURE_STEMS = (
    "fig1cd_activity_vs_sparsity",
    "fig2cd_decay_distributions",
    "fig3_pruning_steps",
    "fig45_decay_tradeoff",
    "fig4_by_weight_decay",
    "fig5_by_weight_decay",
    "learning_curves",
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Dense EGRUs at weight decay 0 and 0.1 (3 epochs), the 0.1 one pruned to 50% in 1
    and in 2 steps. The sweep's own job steps run in this process (the runner runs the
    same steps in subprocesses, which costs seconds each), then its ledger is written."""
    root = tmp_path_factory.mktemp("study")
    write_corpus(root / "corpus", SourceSpec(seed=3), 3000, 500, 500)
    write_run_config(root / "egru.yaml", epochs=3, batch_size=8, bptt=12, eval_batch_size=4)
    spec_data = {
        "name": "tiny-findings",
        "data": "corpus",
        "measure": {"test_batch_size": 2, "macs_batch_size": 2},
        "groups": [
            {"name": "egru", "config": "egru.yaml", "seeds": [1], "weight_decay": [0.0, 0.1]},
            {
                "name": "egru",
                "config": "egru.yaml",
                "seeds": [1],
                "weight_decay": [0.1],
                "sparsity": [0.5],
                "prune": {"steps": [1, 2], "finetune_epochs": 2},
            },
        ],
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec_data), encoding="utf-8")
    spec = load_spec(root / "spec.yaml")
    out = root / "sweep"
    source = resolve_data(spec.data, None, None)
    for job in spec.job_list:  # dense runs come before the runs pruned from them
        for step in job_steps(spec, job, out, source):
            step.run_step()
    state = {"name": spec.name, "jobs": {}, "spec": spec.raw, "figures": None}
    state["data_args"] = data_arguments(source)
    Ledger(spec, out, state).save()
    return out


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(sweep, out, paper="none")
    return out


def _results(sweep: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (sweep / "results").glob("*.json")}


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_sweep_and_the_report_name_the_same_figures(sweep):
    assert set(TITLES) == set(FIGURES)
    assert set(_results(sweep)) == {
        "egru-wd0-bd0-s1",
        "egru-wd0.1-bd0-s1",
        "egru-wd0.1-bd0-s1-p50",
        "egru-wd0.1-bd0-s1-p50-k2",
    }


def test_every_study_figure_is_written(report):
    for stem in FIGURE_STEMS:
        assert (report / f"{stem}.png").stat().st_size > 1000, stem
        assert (report / f"{stem}.svg").read_text().lstrip().startswith("<?xml"), stem
    md = (report / "report.md").read_text(encoding="utf-8")
    for title in TITLES.values():
        assert f"## {title}" in md
    assert "Not drawn" not in md and "lacks its runs" not in md


def test_activity_vs_sparsity_plots_each_egru_run(sweep, report):
    rows = {r["run"]: r for r in _csv(report / "fig1cd_activity_vs_sparsity.csv")}
    results = _results(sweep)
    # the pruned runs and their dense source (wd 0.1), not the wd 0 run
    assert set(rows) == {n for n in results if n.startswith("egru-wd0.1-")}
    for name, row in rows.items():
        r = results[name]
        assert float(row["weight sparsity"]) == pytest.approx(r["weight_sparsity"], abs=1e-4)
        assert float(row["activity"]) == pytest.approx(r["activity"]["overall"], abs=1e-4)
        macs = r["macs"]["rnn"]["event_macs_per_token"] / 1e6
        assert float(row["RNN event MACs/token (M)"]) == pytest.approx(macs, abs=1e-5)
        assert float(row["test ppl"]) == pytest.approx(r["test"]["perplexity"], abs=1e-3)
    assert float(rows["egru-wd0.1-bd0-s1-p50"]["weight sparsity"]) == pytest.approx(0.5, abs=2e-3)


def test_weight_and_bias_distributions_come_from_the_checkpoints(sweep, report):
    rows = _csv(report / "fig2cd_decay_distributions.csv")
    assert [r["weight decay"] for r in rows] == ["0", "0.1"]
    for row in rows:
        tensors = load_file(
            str(checkpoint_dir(sweep / "runs" / row["run"], "best") / "model.safetensors")
        )
        layer = {k: v for k, v in tensors.items() if k.startswith("layers.")}
        weights = np.concatenate([v.ravel() for k, v in layer.items() if v.ndim == 2])
        biases = np.concatenate(
            [v.ravel() for k, v in layer.items() if v.ndim == 1 and "threshold" not in k]
        )
        assert int(row["weights"]) == weights.size == 2 * (48 * 16) + 36 * 16 + 36 * 12
        assert float(row["weight mean"]) == pytest.approx(weights.mean(), abs=1e-5)
        assert float(row["mean |weight|"]) == pytest.approx(np.abs(weights).mean(), abs=1e-5)
        assert float(row["bias mean"]) == pytest.approx(biases.mean(), abs=1e-5)
        assert int(row["biases"]) == biases.size
    # weight decay 0.1 pulls the weights toward 0
    assert float(rows[1]["mean |weight|"]) < float(rows[0]["mean |weight|"])


def test_pruning_steps_table_is_the_results_per_number_of_steps(sweep, report):
    rows = _csv(report / "fig3_pruning_steps.csv")
    results = _results(sweep)
    by_steps = {r["pruning steps"]: r for r in rows}
    assert set(by_steps) == {"1", "2"}
    for steps, name in (("1", "egru-wd0.1-bd0-s1-p50"), ("2", "egru-wd0.1-bd0-s1-p50-k2")):
        row = by_steps[steps]
        assert (row["target sparsity"], row["seeds"], row["chained"]) == ("0.50", "1", "yes")
        assert row["fine-tuning lr"] == "default"
        expected = results[name]["test"]["perplexity"]
        assert float(row["test ppl mean"]) == pytest.approx(expected, abs=1e-3)
        assert float(row["test ppl std"]) == 0.0


def test_decay_tradeoff_table_is_the_dense_runs_per_weight_decay(sweep, report):
    rows = {r["weight decay"]: r for r in _csv(report / "fig45_decay_tradeoff.csv")}
    results = _results(sweep)
    assert set(rows) == {"0", "0.1"}
    for wd, row in rows.items():
        r = results[f"egru-wd{wd}-bd0-s1"]
        assert float(row["test ppl mean"]) == pytest.approx(r["test"]["perplexity"], abs=1e-3)
        assert float(row["activity mean"]) == pytest.approx(r["activity"]["overall"], abs=1e-4)
        macs = r["macs"]["rnn"]["event_macs_per_token"] / 1e6
        assert float(row["RNN event MACs/token (M)"]) == pytest.approx(macs, abs=1e-5)


def _validation_ppls(path: Path) -> list[float]:
    by_position = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        by_position[record["epoch"]] = record["valid_ppl"]
    return [by_position[k] for k in sorted(by_position)]


def test_learning_curve_table_is_the_metrics_files(sweep, report):
    rows = {r["run"]: r for r in _csv(report / "learning_curves.csv")}
    runs = sweep / "runs"
    sources = {
        "egru-wd0-bd0-s1": [runs / "egru-wd0-bd0-s1" / "metrics.jsonl"],
        "egru-wd0.1-bd0-s1": [runs / "egru-wd0.1-bd0-s1" / "metrics.jsonl"],
        "egru-wd0.1-bd0-s1-p50": [runs / "egru-wd0.1-bd0-s1-p50" / "step-1" / "metrics.jsonl"],
        "egru-wd0.1-bd0-s1-p50-k2": [
            runs / "egru-wd0.1-bd0-s1-p50-k2" / f"step-{k}" / "metrics.jsonl" for k in (1, 2)
        ],
    }
    assert set(rows) == set(sources)
    for name, files in sources.items():
        ppls = [_validation_ppls(f) for f in files]
        last_step = ppls[-1]
        row = rows[name]
        assert int(row["validations"]) == sum(len(p) for p in ppls)
        assert float(row["last valid ppl"]) == pytest.approx(last_step[-1], abs=0.006)
        assert float(row["second-last valid ppl"]) == pytest.approx(last_step[-2], abs=0.006)
        settled = (last_step[-2] - last_step[-1]) / last_step[-2] < 0.01
        assert row["settled"] == ("yes" if settled else "no")


def test_the_findings_table_ends_the_report(report):
    md = (report / "report.md").read_text(encoding="utf-8")
    last = md.rsplit("\n## ", 1)[1]
    assert last.startswith("Findings: the paper's claims")
    rows = _csv(report / "findings.csv")
    assert len(rows) == 6
    assert all(r["verdict"] in ("reproduces", "contradicts", "cannot tell") for r in rows)
    # no EGRU pruned to 80-85%, no LSTM, two weight decays: these cannot be told
    verdicts = {r["claim of the paper"]: r for r in rows}
    assert (
        verdicts["pruning to 80–85% costs under ~2 perplexity points"]["verdict"] == "cannot tell"
    )
    assert (
        "fewer than three weight decays"
        in verdicts["an optimum weight decay for perplexity"]["why"]
    )


def test_a_spec_asking_for_a_figure_without_its_runs_says_what_is_missing(sweep, tmp_path):
    copy = Path(shutil.copytree(sweep, tmp_path / "sweep"))
    (copy / "results" / "egru-wd0.1-bd0-s1-p50-k2.json").unlink()
    state = json.loads((copy / "sweep.json").read_text())
    state["figures"] = ["pruning-steps", "decay-distributions"]
    (copy / "sweep.json").write_text(json.dumps(state))
    md = write_report(copy, tmp_path / "r", paper="none")["markdown"].read_text()
    lines = [line for line in md.splitlines() if "pruning-steps" in line]
    assert lines == [
        "The spec asks for `pruning-steps`, but the sweep lacks its runs: pruned runs of one "
        "target in two or more settings of pruning steps, fine-tuning rate or chaining (a "
        "prune: steps:, lr: or chain: list in the spec)."
    ]
    assert "## Figure 2C/D" in md and "## Figure 1C/D" not in md
    assert (
        "Not asked for by the spec (figures:): activity-vs-sparsity, decay-tradeoff, "
        "learning-curves." in md
    )
    # asked for nothing: each figure without its runs is one line (one dense run left)
    for path in (copy / "results").glob("*.json"):
        if path.stem != "egru-wd0-bd0-s1":
            path.unlink()
    state["figures"] = None
    (copy / "sweep.json").write_text(json.dumps(state))
    md = write_report(copy, tmp_path / "r2", paper="none")["markdown"].read_text()
    skipped = [line for line in md.splitlines() if line.startswith("Not drawn: this sweep lacks")]
    assert len(skipped) == 4 and "Traceback" not in md
    assert (
        skipped[0]
        == "Not drawn: this sweep lacks a pruned EGRU run (a group with sparsity: targets)."
    )
    assert (tmp_path / "r2" / "learning_curves.png").is_file()
