"""The latency benchmark: its rows, the MAC ratios it prints, and the dense steppers' maths."""

import pytest
import torch
from engine_helpers import export_fixture, random_model

from dualsparse.cli import main
from dualsparse.engine.bench import calibrate_thresholds, run_benchmark, synthetic_model
from dualsparse.engine.dense_baselines import DenseStepper, dense_macs
from dualsparse.engine.export import weight_sparsity


def test_dense_macs_match_the_paper_totals():
    assert dense_macs("lstm", 400, [1150, 1150, 400], 10_000) == (20_190_000, 24_190_000)
    assert dense_macs("egru", 750, [1350, 1350, 750], 10_000)[0] == 24_165_000


@pytest.mark.parametrize("model_type", ["lstm", "gru"])
def test_dense_stepper_is_the_torch_cell(model_type):
    stepper = DenseStepper(model_type, 5, [7], 11, seed=0)
    layer = stepper.layers[0]
    cell = (torch.nn.LSTMCell if model_type == "lstm" else torch.nn.GRUCell)(5, 7)
    with torch.no_grad():
        cell.weight_ih.copy_(layer["w_ih"])
        cell.weight_hh.copy_(layer["w_hh"])
        cell.bias_ih.copy_(layer["b"])
        cell.bias_hh.copy_(layer["b_hh"] if model_type == "gru" else torch.zeros(28))
        state = None
        for token in (1, 4, 2):
            out = stepper.step_rnn(token).clone()
            state = cell(stepper.embedding[token][None], state)
            expected = state[0] if model_type == "lstm" else state
            torch.testing.assert_close(out, expected[0], atol=1e-5, rtol=0)


def test_synthetic_model_has_its_sparsity_and_calibrated_activity():
    model = synthetic_model("egru", 8, [40, 8], 20, 0.8, seed=1)
    assert weight_sparsity(model) == pytest.approx(0.8, abs=0.05)
    calibrate_thresholds(model, 0.2, tokens=40)
    result = run_benchmark(model, tokens=10, warmup=2, threads=(1,))
    assert all(0.05 < a < 0.5 for a in result["model"]["layer_activity"])
    rows = {r["name"]: r for r in result["rows"]}
    dense, engine_dense = rows["dense AWD-LSTM"], rows["engine AWD-LSTM (dense, no table)"]
    # speedups are over the faster of the two dense AWD-LSTM paths
    assert max(dense["speedup_rnn"], engine_dense["speedup_rnn"]) == pytest.approx(1.0)
    assert dense["speedup_rnn_theory"] == 1.0


def test_cli_bench_prints_every_row(tmp_path, capsys):
    directory = export_fixture(tmp_path)(random_model("egru", 0.8))
    assert main(["bench", str(directory), "--tokens", "10", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for name in (
        "dense AWD-LSTM",
        "dense EGRU (model size)",
        "dense GRU (model size)",
        "engine EGRU (80% pruned, table)",
        "engine EGRU (80% pruned, no table)",
        "engine AWD-LSTM (dense, no table)",
    ):
        assert name in out
    assert main(["bench", str(directory), "--tokens", "3"]) == 2
    assert "at least 10" in capsys.readouterr().err
