"""A trainer's state in a checkpoint: the position it records, and the resumes it refuses."""

import pytest
from safetensors.torch import load_file, save_file

from conftest import (
    TINY_TRAIN,
    error_message,
    ptb_format,
    resume_run,
    tiny_run_config,
    write_tiny_corpus,
)
from dualsparse.data.corpus import read_corpus
from dualsparse.training import checkpoint as ckpt
from dualsparse.training.loop import train
from dualsparse.training.trainer_state import window_position


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return read_corpus(write_tiny_corpus(tmp_path_factory.mktemp("corpus") / "tiny"))


@pytest.fixture
def stopped_mid_epoch(corpus, tmp_path):
    """A run stopped by its time budget after its first window (window > 0)."""
    run_dir = tmp_path / "run"
    train(tiny_run_config(epochs=2), corpus, run_dir, progress=False, max_minutes=1e-9)
    return run_dir


def test_window_position_is_epochs_plus_the_fraction_of_windows_done():
    assert window_position({"epoch": 2, "window": 3}, 12) == 2.25
    assert window_position({"epoch": 1, "window": 0}, 7) == 1.0
    assert window_position({"epoch": 0, "window": 0}, 0) == 0.0  # an empty epoch: no division


@pytest.mark.parametrize("key, value", [("batch_size", 2), ("bptt", 5)])
def test_mid_epoch_resume_refuses_a_changed_window_layout(corpus, stopped_mid_epoch, key, value):
    run_dir = stopped_mid_epoch
    message = error_message(resume_run, run_dir, corpus, [f"train.{key}={value}"])
    assert f"train.{key}" in message and "middle of an epoch" in message
    assert resume_run(run_dir, corpus).stopped == "completed"  # unchanged, it continues


def test_resume_with_another_vocabulary_is_refused(corpus, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(), corpus, run_dir, progress=False)
    other_dir = write_tiny_corpus(tmp_path / "other")
    (other_dir / "train.txt").write_text(ptb_format(TINY_TRAIN.upper()), encoding="utf-8")
    assert "different vocabulary" in error_message(resume_run, run_dir, read_corpus(other_dir))


def test_a_mid_epoch_checkpoint_missing_a_layers_carried_state_is_called_damaged(
    corpus, stopped_mid_epoch
):
    path = ckpt.checkpoint_dir(stopped_mid_epoch, "latest") / "training.safetensors"
    tensors = load_file(str(path))
    hidden = sorted(k for k in tensors if k.startswith("hidden."))
    assert hidden and hidden[0] == "hidden.0.0"  # two layers of (c, y): the state was saved
    del tensors[hidden[-1]]
    save_file(tensors, str(path))
    message = error_message(resume_run, stopped_mid_epoch, corpus)
    assert "lacks the carried hidden state" in message and hidden[-1] in message


def test_a_checkpoint_of_another_optimizer_layout_is_refused(corpus, stopped_mid_epoch):
    path = ckpt.checkpoint_dir(stopped_mid_epoch, "latest") / "training.safetensors"
    tensors = load_file(str(path))
    del tensors["rng.batches"]
    save_file(tensors, str(path))
    assert "incompatible training state" in error_message(resume_run, stopped_mid_epoch, corpus)
