"""metrics.jsonl after kills and with non-finite numbers (issue 15, point 11): a process
killed between its metrics record and the checkpoint of the same position left a duplicate
line after the resume, and NaN literals made the file unreadable to strict JSON readers."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_run_config, write_tiny_corpus
from dualsparse.cli import main
from dualsparse.data.corpus import read_corpus
from dualsparse.runs import open_for_resume
from dualsparse.training import checkpoint as ckpt
from dualsparse.training.loop import Trainer, train
from dualsparse.training.metrics import read_metrics

SRC = Path(__file__).resolve().parents[2] / "src"

# `dualsparse train` whose second checkpoint hangs after its files are written: the
# epoch-2 metrics record is in the file, the epoch-2 checkpoint is not in place yet
KILLED_IN_SECOND_CHECKPOINT = """
import sys, time
from dualsparse.training import checkpoint as ckpt
from dualsparse.cli import main

real_sync, calls = ckpt.sync_directory, []

def sync_then_hang_the_second_time(directory):
    calls.append(directory)
    if len(calls) == 2:
        print("writing", flush=True)
        time.sleep(60)
    real_sync(directory)

ckpt.sync_directory = sync_then_hang_the_second_time
main(["train", "--config", sys.argv[1], "--data", sys.argv[2], "--out", sys.argv[3],
      "--no-progress"])
"""


def strict_records(run_dir: Path) -> list[dict]:
    """Every line of metrics.jsonl through a JSON reader that refuses NaN and Infinity."""

    def refuse(literal):
        raise ValueError(f"non-standard JSON literal {literal}")

    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line, parse_constant=refuse) for line in lines]


def epoch_losses(records: list[dict]) -> list[tuple[float, float]]:
    return [(r["epoch"], r["valid_loss"]) for r in records if r["event"] == "epoch"]


def test_a_kill_between_the_metrics_record_and_its_checkpoint_leaves_no_duplicate(tmp_path):
    data, run_dir = write_tiny_corpus(tmp_path / "tiny"), tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_run_config(epochs=3).to_dict()))
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_IN_SECOND_CHECKPOINT, str(config), str(data), str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"},
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    # the failure's precondition: epoch 2 is recorded, the checkpoint is still epoch 1's
    assert [r["epoch"] for r in strict_records(run_dir)] == [1, 2]
    assert ckpt.read_state(ckpt.checkpoint_dir(run_dir, "latest"))["epoch"] == 1

    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    reference = tmp_path / "uninterrupted"
    assert (
        main(
            ["train", "--config", str(config), "--data", str(data)]
            + ["--out", str(reference), "--no-progress"]
        )
        == 0
    )
    resumed, unbroken = strict_records(run_dir), strict_records(reference)
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    # epoch 2 is the resumed process's record, and the run is the uninterrupted one
    assert epoch_losses(resumed) == pytest.approx(epoch_losses(unbroken), abs=1e-6)


class Killed(BaseException):
    """What a kill does to the process at this point: nothing after it runs."""


def stop_and_die_in_checkpoint(run_dir, corpus, monkeypatch):
    """Resume with a spent time budget (a mid-epoch stop after one window): its metrics
    record is written, then the process dies while writing the checkpoint."""

    def die(directory):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(ckpt, "sync_directory", die)
        point = open_for_resume(run_dir)
        with pytest.raises(Killed):
            train(point.config, corpus, run_dir, resume=True, progress=False, max_minutes=1e-9)


def test_a_resume_cuts_the_metrics_back_to_a_mid_epoch_checkpoint(tmp_path, monkeypatch):
    corpus = read_corpus(write_tiny_corpus(tmp_path / "tiny"))
    run_dir = tmp_path / "run"
    train(tiny_run_config(epochs=1), corpus, run_dir, progress=False)
    point = open_for_resume(run_dir, ["train.epochs=3"])
    stopped = train(point.config, corpus, run_dir, resume=True, progress=False, max_minutes=1e-9)
    assert stopped.stopped == "time-budget"
    state = ckpt.read_state(ckpt.checkpoint_dir(run_dir, "latest"))
    assert (state["epoch"], state["window"]) == (1, 1)
    checkpointed = [r["epoch"] for r in strict_records(run_dir)]
    assert checkpointed[0] == 1 and 1 < checkpointed[1] < 2 and len(checkpointed) == 2

    stop_and_die_in_checkpoint(run_dir, corpus, monkeypatch)  # two windows into epoch 2
    lost = strict_records(run_dir)[-1]["epoch"]
    assert checkpointed[1] < lost < 2

    summary = train(open_for_resume(run_dir).config, corpus, run_dir, resume=True, progress=False)
    assert summary.stopped == "completed"
    assert [r["epoch"] for r in strict_records(run_dir)] == [*checkpointed, 2, 3]


def test_non_finite_numbers_are_written_as_null(tmp_path):
    corpus = read_corpus(write_tiny_corpus(tmp_path / "tiny"))
    run_dir = tmp_path / "run"
    train(tiny_run_config(epochs=1), corpus, run_dir, progress=False)
    trainer = Trainer(tiny_run_config(), corpus, run_dir, progress=False)
    nan, inf = float("nan"), float("inf")
    trainer.log({"event": "epoch", "epoch": 2, "train_loss": nan, "valid_activity": [inf, 0.5]})
    records = strict_records(run_dir)  # every line strict JSON, the real run's too
    assert records[-1] == {
        "event": "epoch",
        "epoch": 2,
        "train_loss": None,
        "valid_activity": [None, 0.5],
    }
    assert records[0]["valid_loss"] == read_metrics(run_dir)[0]["valid_loss"]


def test_older_files_with_nan_literals_and_repeated_positions_still_read(tmp_path):
    """As the writer before this fix left them: json.dumps's NaN, and a resumed epoch 2."""
    lines = [
        {"event": "epoch", "epoch": 1, "valid_loss": 5.0},
        {"event": "epoch", "epoch": 2, "valid_loss": float("nan")},
        {"event": "epoch", "epoch": 2, "valid_loss": 4.0},
        {"event": "time-budget", "epoch": 2.5, "valid_loss": 3.5},
    ]
    text = "".join(json.dumps(r) + "\n" for r in lines)
    assert "NaN" in text
    (tmp_path / "metrics.jsonl").write_text(text + '{"event": "ep', encoding="utf-8")
    records = read_metrics(tmp_path)  # the torn last line (a write cut short) is skipped
    assert [(r["epoch"], r["valid_loss"]) for r in records] == [(1, 5.0), (2, 4.0), (2.5, 3.5)]
    assert read_metrics(tmp_path / "no-such-run") == []
