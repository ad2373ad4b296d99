"""Issue 15 point 10: lr 1e30 trained to NaN and reported "completed" with exit 0."""

from __future__ import annotations

from conftest import write_run_config, write_tiny_corpus
from dualsparse.cli import main


def test_diverging_training_stops_with_an_error(capsys, tmp_path):
    config = write_run_config(tmp_path / "tiny.yaml", lr=1e30, clip=0.0)
    data = write_tiny_corpus(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "--config", config, "--data", data, "--out", out, "--no-progress"]
    code = main([str(a) for a in argv])
    stdout, err = capsys.readouterr()
    assert code == 2, (stdout, err)
    assert "Traceback" not in stdout + err and "completed" not in stdout
    (line,) = err.splitlines()
    assert line.startswith("error: training diverged") and "train.lr" in line
    assert not list((out / "checkpoints").glob("*/model.safetensors"))  # no NaN weights saved
