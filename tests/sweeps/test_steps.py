"""Sweep step records: JSON round trip, and running them in-process (the sweep runs
each in a subprocess, ``dualsparse sweep-step``; test_runner.py covers that)."""

import json

import pytest

from conftest import tiny_run_config, write_run_config, write_tiny_corpus
from dualsparse.cli import main
from dualsparse.data.corpus import read_corpus
from dualsparse.errors import DualsparseError
from dualsparse.evaluation import DEFAULT_BPTT, evaluate
from dualsparse.runs import load_run
from dualsparse.sweeps.steps import MeasureStep, PruneStep, TrainStep, step_from_json
from dualsparse.training.loop import train

STEPS = [
    TrainStep(run="r", preset="cpu-small-egru", overrides=("train.epochs=2",), data="/d"),
    TrainStep(run="r", resume=True),
    PruneStep(run="p", source="r", target=0.85, steps=2, lr=0.002, dataset="ptb", cache_dir="c"),
    MeasureStep(run="r", out="o.json", meta={"name": "r", "seed": 1}, threads=1, data="/d"),
]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.kind)
def test_a_step_is_the_same_after_a_round_trip_through_json(step):
    text = step.to_json()
    assert json.loads(text)["step"] == step.kind
    assert step_from_json(text) == step


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"step": "deploy", "run": "r"}', "'deploy'"),
        ('{"step": "train", "run": "r", "epochs": 3}', "unknown fields ['epochs']"),
        ('{"step": "prune", "run": "p"}', "target"),
        ("[1, 2]", "not a sweep step record"),
        ('{"step": "train"', "not a sweep step record"),
    ],
)
def test_anything_else_is_refused(text, expected):
    with pytest.raises(DualsparseError, match="not a sweep step record") as info:
        step_from_json(text)
    assert expected in str(info.value)


def test_sweep_step_command_takes_a_record_and_gives_one_error_line(capsys, tmp_path):
    assert main(["sweep-step", '{"step": "deploy"}']) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: not a sweep step record") and err.count("\n") == 1
    corpus_dir = write_tiny_corpus(tmp_path / "tiny")
    config = write_run_config(tmp_path / "c.yaml")
    step = TrainStep(run=str(tmp_path / "run"), config=str(config), data=str(corpus_dir))
    assert main(["sweep-step", step.to_json()]) == 0
    assert capsys.readouterr().out.startswith(f"run {tmp_path / 'run'}: completed after 1 epoch")
    assert json.loads((tmp_path / "run" / "source.json").read_text())["data"] == str(corpus_dir)


def test_measure_step_writes_the_runs_results_record(tmp_path):
    corpus_dir = write_tiny_corpus(tmp_path / "tiny")
    corpus = read_corpus(corpus_dir)
    train(tiny_run_config(), corpus, tmp_path / "run", progress=False)
    out = tmp_path / "results" / "run.json"
    step = MeasureStep(
        run=str(tmp_path / "run"),
        out=str(out),
        meta={"name": "run", "seed": 7},
        activity_batch_size=2,
        data=str(corpus_dir),
    )
    assert step_from_json(step.to_json()).run_step() == f"measured {step.run} -> {out}"
    record = json.loads(out.read_text(encoding="utf-8"))
    assert (record["name"], record["seed"], record["run"]) == ("run", 7, step.run)
    test = evaluate(load_run(tmp_path / "run").model, corpus.test, 1, DEFAULT_BPTT)
    assert record["test"]["perplexity"] == pytest.approx(test.perplexity, rel=1e-9)
    assert record["macs"]["batch_size"] == 1 and record["activity"]["split"] == "valid"
    assert (tmp_path / "run" / "activity-valid" / "activity.json").is_file()
