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


def test_budget_stop_in_the_first_epoch_reports_the_measured_perplexity(capsys, tmp_path):
    """Issue 11 item 7: it printed 'best valid ppl nan'."""
    config = write_run_config(tmp_path / "tiny.yaml", bptt=2, variable_bptt=False, epochs=3)
    data = write_tiny_corpus(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "--config", config, "--data", data, "--out", out, "--no-progress"]
    assert main([str(a) for a in [*argv, "--max-minutes", "0.000001"]]) == 0
    stdout = capsys.readouterr().out
    assert "time-budget after 0 epoch(s)" in stdout and "nan" not in stdout, stdout
