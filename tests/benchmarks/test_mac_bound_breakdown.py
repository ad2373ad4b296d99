"""benchmarks/mac_bound_breakdown.py: its arithmetic on hand-made numbers, the silent model,
and a whole run at a tiny size (a few seconds; the dense AWD-LSTM is the paper's)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from dualsparse.engine.bench import synthetic_model
from dualsparse.engine.runtime import Engine

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mac_bound_breakdown.py"
SPEC = importlib.util.spec_from_file_location("mac_bound_breakdown", SCRIPT)
mac_bound_breakdown = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(mac_bound_breakdown)

AWD_LSTM_DENSE_MACS = 4 * 1150 * (400 + 1150) + 4 * 1150 * (1150 + 1150) + 4 * 400 * (1150 + 400)


def test_breakdown_on_hand_made_times():
    # dense: 20 ms for 2e7 MACs = 1 ns per MAC; engine: 0.8 ms beyond the silent model for
    # 5e5 nonzeros = 1.6 ns each, so 0.2 ms fixed; bound 1e6 MACs at 1 ns = 1 ms
    ms = {
        "dense_rnn": 20.0,
        "engine_rnn": 1.0,
        "silent_rnn": 0.2,
        "dispatch_rnn": 0.05,
        "engine_full": 1.6,
    }
    b = mac_bound_breakdown.breakdown(
        ms, event_macs=1e6, nonzeros=5e5, silent_nonzeros=0.0, dense_macs=2e7
    )
    assert b["ns_per_dense_mac"] == pytest.approx(1.0)
    assert b["ns_per_nonzero"] == pytest.approx(1.6)
    assert b["fixed_ms"] == pytest.approx(0.2)
    assert b["cells_and_rest_ms"] == pytest.approx(0.15)
    assert b["bound_ms"] == pytest.approx(1.0)
    assert b["mac_bound"] == pytest.approx(20.0)
    assert b["speedup_rnn"] == pytest.approx(20.0)
    assert b["fraction_of_bound"] == pytest.approx(1.0)
    assert b["fraction_of_bound_without_fixed"] == pytest.approx(1.25)
    assert b["decoder_share_end_to_end"] == pytest.approx(0.375)
    parts = b["distance_parts"]
    assert parts["excess_per_nonzero_ms"] == pytest.approx(0.3)  # 5e5 · 0.6 ns
    assert parts["macs_not_done_ms"] == pytest.approx(-0.5)  # 5e5 table MACs at 1 ns
    assert b["bound_ms"] + sum(parts.values()) == pytest.approx(ms["engine_rnn"])


@pytest.mark.parametrize("input_table", [True, False])
def test_silent_copy_never_fires_and_reads_only_the_embedding_columns(input_table):
    model = synthetic_model("egru", 12, [20, 16], 30, 0.5, threshold=0.0)
    silent = mac_bound_breakdown.silent_copy(model)
    engine, quiet = Engine(model, input_table=input_table), Engine(silent, input_table=input_table)
    tokens = [3, 7, 1, 29, 4]
    for token in tokens:
        engine.step_rnn(token)
        quiet.step_rnn(token)
    assert min(engine.counts()["layer_activity"]) > 0  # θ = 0: the model itself fires
    assert quiet.counts()["layer_activity"] == [0.0, 0.0]
    # nothing fires, so only layer 0's input product reads weights, and not with the table
    column_nnz = model.matrices["layer0.W_ih"].to_dense().astype(bool).sum(axis=0)
    embedding_nonzero = model.dense["embedding"][tokens] != 0
    per_token = 0 if input_table else (embedding_nonzero @ column_nnz).mean()
    assert mac_bound_breakdown._nonzeros_read(quiet) == pytest.approx(per_token)
    assert np.isinf(silent.dense["layer1.threshold"]).all()
    assert np.isfinite(model.dense["layer1.threshold"]).all()  # the model is left alone


def test_tiny_run_adds_up(capsys):
    args = ["--emb", "16", "--hidden", "32,32,16", "--vocab", "50", "--tokens", "8"]
    mac_bound_breakdown.main([*args, "--warmup", "4", "--rounds", "2", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["model"]["hidden_sizes"] == [32, 32, 16]
    assert set(result["threads"]) == {"1", "2"}
    for b in result["threads"].values():
        ms = b["ms_per_token"]
        assert b["mac_bound"] == pytest.approx(AWD_LSTM_DENSE_MACS / b["event_macs_per_token"])
        assert b["bound_ms"] + sum(b["distance_parts"].values()) == pytest.approx(ms["engine_rnn"])
        # the table's MACs (every embedding entry is nonzero) are counted, never read
        assert b["event_macs_per_token"] > b["nonzeros_read_per_token"] > 0
        assert all(v > 0 for v in ms.values())
