"""The training recipe: run directory contents, stopping, and exact resume."""

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import (
    error_message,
    file_contents,
    resume_run,
    temp_files,
    tiny_run_config,
    write_tiny_corpus,
)
from dualsparse.data.corpus import read_corpus
from dualsparse.runs import open_for_resume, write_source
from dualsparse.training import checkpoint as ckpt
from dualsparse.training import loop
from dualsparse.training.loop import train

EPOCHS = 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return read_corpus(write_tiny_corpus(tmp_path_factory.mktemp("corpus") / "tiny"))


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory) -> Path:
    """Run A: EPOCHS epochs in one go (shared read-only by the resume tests)."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    summary = train(tiny_run_config(epochs=EPOCHS), corpus, run_dir, progress=False)
    assert summary.stopped == "completed" and summary.epochs_done == EPOCHS
    return run_dir


def metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def epoch_valid_losses(run_dir: Path) -> list[float]:
    return [r["valid_loss"] for r in metrics(run_dir) if r["event"] == "epoch"]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(ckpt.checkpoint_dir(run_dir, "latest") / "model.safetensors")


def assert_same_run(run_dir: Path, reference: Path) -> None:
    assert epoch_valid_losses(run_dir) == pytest.approx(epoch_valid_losses(reference), abs=1e-6)
    ours, theirs = final_weights(run_dir), final_weights(reference)
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-6)


def test_run_dir_holds_metrics_config_and_checkpoints(uninterrupted):
    records = metrics(uninterrupted)
    assert [r["event"] for r in records] == ["epoch"] * EPOCHS
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    for record in records:
        assert math.isfinite(record["valid_loss"])
        assert record["valid_ppl"] == pytest.approx(math.exp(record["valid_loss"]))
        assert len(record["valid_activity"]) == 2
        assert all(0 < a < 1 for a in record["valid_activity"])  # EGRU: sparse, not silent
    config = json.loads((uninterrupted / "config.json").read_text(encoding="utf-8"))
    assert config == tiny_run_config(epochs=EPOCHS).to_dict()
    latest = ckpt.checkpoint_dir(uninterrupted, "latest")
    best = ckpt.checkpoint_dir(uninterrupted, "best")
    assert {p.name for p in latest.iterdir()} == {
        "model.safetensors",
        "training.safetensors",
        "state.json",
        "vocab.json",
    }
    with safe_open(str(latest / "model.safetensors"), framework="pt") as handle:
        stored = set(handle.keys())
    assert len(stored & {"encoder.weight", "decoder.weight"}) == 1  # the tied matrix, once
    state = ckpt.read_state(latest)
    assert (state["epoch"], state["window"], state["finished"]) == (EPOCHS, 0, False)
    best_loss = min(r["valid_loss"] for r in records)
    assert state["best_valid_loss"] == best_loss
    assert ckpt.read_state(best)["best_valid_loss"] == best_loss
    assert temp_files(uninterrupted) == []


def test_resume_at_epoch_boundary_reproduces_the_uninterrupted_run(corpus, tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    first = train(tiny_run_config(epochs=1), corpus, run_dir, progress=False)
    assert (first.stopped, first.epochs_done) == ("completed", 1)
    summary = resume_run(run_dir, corpus, [f"train.epochs={EPOCHS}"])
    assert (summary.stopped, summary.epochs_done) == ("completed", EPOCHS)
    assert_same_run(run_dir, uninterrupted)


def test_time_budget_stops_mid_epoch_and_resume_finishes_the_same_run(
    corpus, tmp_path, uninterrupted
):
    run_dir = tmp_path / "run"
    stopped = train(
        tiny_run_config(epochs=EPOCHS), corpus, run_dir, progress=False, max_minutes=1e-9
    )  # the budget is spent after the first window
    assert (stopped.stopped, stopped.epochs_done) == ("time-budget", 0)
    state = ckpt.read_state(ckpt.checkpoint_dir(run_dir, "latest"))
    assert (state["epoch"], state["window"]) == (0, 1)
    assert [r["event"] for r in metrics(run_dir)] == ["time-budget"]
    summary = resume_run(run_dir, corpus)
    assert (summary.stopped, summary.epochs_done) == ("completed", EPOCHS)
    assert_same_run(run_dir, uninterrupted)
    assert temp_files(run_dir) == []


def test_signal_stops_between_windows_and_resume_finishes_the_same_run(
    corpus, tmp_path, uninterrupted, monkeypatch
):
    """SIGTERM (as a scheduler sends it) during the third window of the second epoch."""
    second_epoch_windows = []
    real_lr_at = loop.lr_at

    def lr_at_then_signal(cfg, epoch_progress, total_epochs):  # called once per window
        if math.floor(epoch_progress) == 1:
            second_epoch_windows.append(epoch_progress)
            if len(second_epoch_windows) == 3:
                # never SIGTERM the test process itself unless the loop catches it
                assert signal.getsignal(signal.SIGTERM) is not handler_before
                os.kill(os.getpid(), signal.SIGTERM)
        return real_lr_at(cfg, epoch_progress, total_epochs)

    monkeypatch.setattr(loop, "lr_at", lr_at_then_signal)
    handler_before = signal.getsignal(signal.SIGTERM)
    run_dir = tmp_path / "run"
    stopped = train(tiny_run_config(epochs=EPOCHS), corpus, run_dir, progress=False)
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert (stopped.stopped, stopped.epochs_done) == ("interrupted", 1)
    state = ckpt.read_state(ckpt.checkpoint_dir(run_dir, "latest"))
    assert (state["epoch"], state["window"]) == (1, 3)
    monkeypatch.setattr(loop, "lr_at", real_lr_at)
    assert resume_run(run_dir, corpus).stopped == "completed"
    assert_same_run(run_dir, uninterrupted)


def test_open_for_resume_gives_the_latest_checkpoints_config_position_and_data(
    corpus, tmp_path, tiny_corpus_dir
):
    run_dir = tmp_path / "run"
    train(tiny_run_config(epochs=1), corpus, run_dir, progress=False)
    write_source(run_dir, str(tiny_corpus_dir), None, None)
    point = open_for_resume(run_dir, ["train.epochs=5", "train.lr=0.5"])
    assert point.checkpoint.parent == run_dir / "checkpoints"
    assert point.checkpoint.name.startswith("epoch0001-")
    expected = tiny_run_config(epochs=5).to_dict()
    expected["train"]["lr"] = 0.5
    assert point.config.to_dict() == expected
    assert (point.state["epoch"], point.state["window"]) == (1, 0)
    assert point.vocab == corpus.vocab
    assert point.source == {
        "data": str(tiny_corpus_dir.resolve()),
        "dataset": None,
        "cache_dir": None,
    }
    # a resume saves its config: the next resume starts from it, not from the first one
    train(point.config, corpus, run_dir, resume=True, progress=False, max_minutes=1e-9)
    assert open_for_resume(run_dir).config.to_dict() == expected


def test_open_for_resume_refuses_a_damaged_source_record(corpus, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(), corpus, run_dir, progress=False)
    assert open_for_resume(run_dir).source == {}  # trained from Python: no record
    (run_dir / "source.json").write_text('{"data": "/tmp/x', encoding="utf-8")
    assert "source.json is not JSON" in error_message(open_for_resume, run_dir)


def test_new_run_into_an_existing_run_is_refused(corpus, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(), corpus, run_dir, progress=False)
    before = file_contents(run_dir)
    message = error_message(train, tiny_run_config(epochs=2), corpus, run_dir)
    assert "already holds a run" in message and "--resume" in message
    assert file_contents(run_dir) == before
