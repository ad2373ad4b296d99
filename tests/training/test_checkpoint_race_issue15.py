"""Reading a run while its trainer replaces checkpoints (issue 15, point 11): a reader that
followed a pointer just before the trainer wrote a newer checkpoint and deleted the old one
got a false "damaged" error. A run that really is damaged still gets it."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import error_message, tiny_run_config, write_tiny_corpus
from dualsparse.data.corpus import read_corpus
from dualsparse.runs import load_run
from dualsparse.training import checkpoint as ckpt
from dualsparse.training.loop import Trainer, train

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def run_and_trainer(tmp_path):
    """A one-epoch run, and a trainer resumed on it that can train its second epoch
    (writing a new latest and best checkpoint and deleting the first) when a test says."""
    corpus = read_corpus(write_tiny_corpus(tmp_path / "tiny"))
    run_dir = tmp_path / "run"
    train(tiny_run_config(epochs=1), corpus, run_dir, progress=False)
    trainer = Trainer(tiny_run_config(epochs=2), corpus, run_dir, progress=False)
    trainer.restore()
    return run_dir, trainer


def test_a_checkpoint_deleted_after_its_pointer_was_read_is_followed_to_the_new_one(
    run_and_trainer, monkeypatch
):
    run_dir, trainer = run_and_trainer
    first = ckpt.checkpoint_dir(run_dir, "best")
    real_read_pointer, reads = ckpt.read_pointer, []

    def trainer_moves_on_after_the_pointer_is_read(directory, pointer):
        tag = real_read_pointer(directory, pointer)
        reads.append(tag)
        if len(reads) == 1:
            trainer.run()  # epoch 2: new checkpoint, pointers moved, the first deleted
        return tag

    monkeypatch.setattr(ckpt, "read_pointer", trainer_moves_on_after_the_pointer_is_read)
    run = load_run(run_dir)
    assert reads[0] == first.name and not first.exists()
    assert run.checkpoint != first and run.state["epoch"] == 2


def test_a_checkpoint_deleted_while_its_files_are_read_is_read_again_from_the_new_one(
    run_and_trainer, monkeypatch
):
    run_dir, trainer = run_and_trainer
    first = ckpt.checkpoint_dir(run_dir, "best")
    real_read_state = ckpt.read_state

    def trainer_moves_on_before_the_state_is_read(path):
        if path == first:
            trainer.run()
        return real_read_state(path)

    monkeypatch.setattr(ckpt, "read_state", trainer_moves_on_before_the_state_is_read)
    run = load_run(run_dir)
    assert not first.exists() and run.state["epoch"] == 2


def test_a_damaged_run_is_still_reported_as_damaged(run_and_trainer):
    run_dir, _ = run_and_trainer
    named = ckpt.checkpoint_dir(run_dir, "best")
    (named / "state.json").unlink()
    assert "state.json is missing; the checkpoint is incomplete" in error_message(load_run, run_dir)
    shutil.rmtree(named)
    message = error_message(load_run, run_dir)
    assert message == f"checkpoint {named} is missing; the run directory is damaged"


TRAIN_MANY_EPOCHS = """
import sys
from dualsparse.cli import main
main(["train", "--config", sys.argv[1], "--data", sys.argv[2], "--out", sys.argv[3],
      "--no-progress"])
"""


def test_reading_a_run_while_it_trains_never_reports_damage(tmp_path):
    """A real trainer replacing its checkpoint every epoch; this process reads the run
    over and over meanwhile (without the retry a read failed here within seconds)."""
    data, run_dir = write_tiny_corpus(tmp_path / "tiny"), tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_run_config(epochs=10_000).to_dict()))
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAIN_MANY_EPOCHS, str(config), str(data), str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"},
    )
    try:
        started = time.monotonic()
        while not (run_dir / "checkpoints" / "latest.json").exists():
            assert proc.poll() is None and time.monotonic() - started < 120
            time.sleep(0.05)
        seen: set[str] = set()
        reads, until = 0, time.monotonic() + 4
        while time.monotonic() < until or len(seen) < 3:
            seen.add(load_run(run_dir, "latest").checkpoint.name)
            reads += 1
            assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    assert len(seen) >= 3 and reads >= 10  # it did read while checkpoints were replaced
