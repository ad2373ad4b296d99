"""The latency benchmark: its rows, the MAC ratios it prints, and the dense steppers' maths."""

import numpy as np
import pytest
import torch
from engine_helpers import VOCAB, export_fixture, random_model

from dualsparse.cli import main
from dualsparse.config import ModelConfig
from dualsparse.engine.bench import calibrate_thresholds, run_benchmark, synthetic_model
from dualsparse.engine.bench_table import _with_speedups, format_bench_table, headline
from dualsparse.engine.dense_baselines import DenseStepper
from dualsparse.engine.export import load_export, weight_sparsity
from dualsparse.engine.runtime import Engine
from dualsparse.models.lm import LanguageModel
from dualsparse.sparsity.macs import measure_macs

# dense AWD-LSTM (emb 400, hidden 1150,1150,400) per token, by hand: 4H(I + H) per layer
AWD_RNN_MACS = 4 * 1150 * (400 + 1150) + 4 * 1150 * (1150 + 1150) + 4 * 400 * (1150 + 400)


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


def test_dense_egru_stepper_is_the_models_step():
    """Two layers and a projection, stepped with fused addmv, against the PyTorch
    LanguageModel (its EGRU sequence function) run over the same tokens with the same
    weights: every layer's output and the logits, token by token."""
    stepper = DenseStepper("egru", 5, [7, 6], 11, seed=2)
    model = LanguageModel(ModelConfig(type="egru", emb_size=5, hidden_sizes=[7, 6]), 11).eval()
    with torch.no_grad():
        model.encoder.weight.copy_(stepper.embedding)
        model.decoder.bias.copy_(stepper.decoder_bias)
        model.projection.weight.copy_(stepper.projection)
        for layer, weights in zip(model.layers, stepper.layers, strict=True):
            layer.weight_ih.copy_(weights["w_ih"])
            layer.weight_hh.copy_(weights["w_hh"])
            layer.bias.copy_(weights["b"])
            layer.threshold.copy_(weights["threshold"])
        tokens = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
        expected = model(tokens.view(-1, 1))
    outputs = [[] for _ in stepper.layers]
    for t, token in enumerate(tokens.tolist()):
        log_normalizer = stepper.step(token)
        for layer, out in zip(stepper.layers, outputs, strict=True):
            out.append(layer["h"].clone())
        torch.testing.assert_close(stepper.logits, expected.logits[t, 0], atol=1e-5, rtol=0)
        torch.testing.assert_close(
            log_normalizer, torch.logsumexp(expected.logits[t, 0], 0), atol=1e-5, rtol=0
        )
    for mine, theirs in zip(outputs, expected.layer_outputs, strict=True):
        torch.testing.assert_close(torch.stack(mine), theirs[:, 0], atol=1e-5, rtol=0)
        assert 0 < int((theirs != 0).sum()) < theirs.numel()  # units both fire and rest


def test_synthetic_model_has_its_sparsity_and_calibrated_activity():
    model = synthetic_model("egru", 8, [40, 8], 20, 0.8, seed=1)
    assert weight_sparsity(model) == pytest.approx(0.8, abs=0.05)
    calibrate_thresholds(model, 0.2, tokens=40)
    engine = Engine(model)
    for token in np.random.default_rng(7).integers(0, 20, 60):
        engine.step_rnn(int(token))
    assert all(0.05 < a < 0.5 for a in engine.counts()["layer_activity"])


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One short benchmark of a tiny pruned EGRU with the torch CSR peer (the ONNX peers
    export the paper-size AWD-LSTM, too slow for here; tests/engine/test_peers.py checks
    them on tiny models)."""
    torch_model = random_model("egru", 0.8)
    model = load_export(export_fixture(tmp_path_factory.mktemp("bench"))(torch_model))
    tokens, warmup, seed = 10, 2, 3
    result = run_benchmark(
        model, tokens=tokens, warmup=warmup, threads=(1,), seed=seed, peers=("torch CSR",)
    )
    return torch_model, model, result, (tokens, warmup, seed)


def test_bench_ratios_are_the_dense_macs_over_the_measured_event_macs(bench_run):
    """The engine against the dense model of its own size and type: the MAC ratio = the
    dense EGRU's MACs (by hand) / the event MACs that the PyTorch model's own activity
    implies (measure_macs on the tokens the engine row was counted on), the speedup = the
    fastest such row's time / the engine's; against the AWD-LSTM, a larger model, only the
    measured speedup, and the AWD-LSTM rows get no same-size ratio."""
    torch_model, model, result, (tokens, warmup, seed) = bench_run
    rows = {r["name"]: r for r in result["rows"]}
    # the stream the benchmark samples; each timed pass counts warmup + tokens / 2 of it
    stream = Engine(model, input_table=True).generate([], tokens + warmup, 1.0, seed)
    counted = torch.tensor([*stream[: warmup + tokens // 2], 0])  # the last is only a target
    report = measure_macs(torch_model, counted, batch_size=1)
    rnn_event, totals = report.totals("rnn"), report.totals("full")
    # dense EGRU of the model's size (emb 8, hidden 10,6, V 30), per layer 3H·I + 3H·H
    egru_rnn = 30 * 8 + 30 * 10 + 18 * 10 + 18 * 6
    egru_full = egru_rnn + 8 * 6 + VOCAB * 8  # projection [8, 6], decoder [V, 8]
    for name, dense_names in (
        (
            "engine EGRU (80% pruned, table)",
            ["dense EGRU (model size)", "dense EGRU (model size), table"],
        ),
        ("engine EGRU (80% pruned, no table)", ["dense EGRU (model size)"]),
    ):
        row = rows[name]
        assert row["mac_ratio_rnn_vs_same_size"] == pytest.approx(
            egru_rnn / rnn_event["event_macs_per_token"]
        )
        assert row["mac_ratio_full_vs_same_size"] == pytest.approx(
            egru_full / totals["event_macs_per_token"]
        )
        awd_names = ["dense AWD-LSTM", "engine AWD-LSTM (dense, no table)"]
        awd_names += ["dense AWD-LSTM, table"] if row["input_table"] else []
        for part in ("rnn", "full"):
            key = f"ms_per_token_{part}_median"
            assert row[f"speedup_{part}_vs_same_size"] == pytest.approx(
                min(rows[n][key] for n in dense_names) / row[key]
            )
            assert row[f"speedup_{part}_vs_awd_lstm"] == pytest.approx(
                min(rows[n][key] for n in awd_names) / row[key]
            )
        assert row["speedup_rnn_vs_awd_lstm"] > 5  # a few hundred MACs against 20 million
    dense_egru = rows["dense EGRU (model size)"]
    assert (dense_egru["macs_per_token_rnn"], dense_egru["macs_per_token_full"]) == (
        egru_rnn,
        egru_full,
    )
    assert dense_egru["mac_ratio_rnn_vs_same_size"] == 1.0
    assert rows["dense AWD-LSTM"]["macs_per_token_rnn"] == 20_190_000 == AWD_RNN_MACS
    assert rows["dense AWD-LSTM"]["mac_ratio_rnn_vs_same_size"] is None
    assert rows["dense AWD-LSTM"]["speedup_full_vs_same_size"] is None


def test_cli_bench_prints_every_row(tmp_path, capsys):
    """The CLI's table with one peer chosen by --peers (the ONNX peers' rows are checked
    through run_benchmark in this file and tests/engine/test_peers.py; exporting the
    paper-size AWD-LSTM to ONNX here would add a minute to the suite)."""
    directory = export_fixture(tmp_path)(random_model("egru", 0.8))
    args = ["bench", str(directory), "--tokens", "10", "--threads", "1"]
    assert main([*args, "--peers", "torch CSR"]) == 0
    out = capsys.readouterr().out
    for name in (
        "dense AWD-LSTM",
        "dense EGRU (model size)",
        "dense GRU (model size)",
        "engine EGRU (80% pruned, table)",
        "engine EGRU (80% pruned, no table)",
        "engine AWD-LSTM (dense, no table)",
        "dense AWD-LSTM, table",
        "torch CSR EGRU (80% pruned)",
        "headline",
    ):
        assert name in out
    assert "ORT" not in out and "OpenVINO dense" not in out  # not chosen, not run
    assert "not timed" not in out
    assert main(["bench", str(directory), "--tokens", "3"]) == 2
    assert "at least 10" in capsys.readouterr().err


@pytest.mark.parametrize("model_type", ["lstm", "gru", "egru"])
def test_dense_stepper_with_the_table_computes_the_same_log_probs(model_type):
    """The first-layer table (W_ih·E + b, one row per token) changes the arithmetic's order,
    not the model: the same weights with and without it, token by token."""
    plain = DenseStepper(model_type, 5, [7, 6], 11, seed=4)
    tabled = DenseStepper(model_type, 5, [7, 6], 11, seed=4, input_table=True)
    assert tabled.table.shape == (11, plain.layers[0]["w_ih"].shape[0])
    with torch.no_grad():
        for token in (3, 1, 4, 1, 5, 9, 2, 6):
            torch.testing.assert_close(
                tabled.log_probs(token), plain.log_probs(token), atol=1e-5, rtol=0
            )


def _row(name, threads, rnn, full, *, engine=False, table=False):
    return {
        "name": name,
        "threads": threads,
        "engine": engine,
        "input_table": table,
        "ms_per_token_rnn_median": rnn,
        "ms_per_token_full_median": full,
    }


def test_headline_is_the_engine_over_the_fastest_contender_per_thread_count():
    """Injected timings: the fastest RNN and end-to-end contenders differ, differ between
    thread counts, and a faster engine row without the table is not the headline's."""
    rows = [
        _row("engine X, table", 1, 0.5, 1.0, engine=True, table=True),
        _row("engine X, no table", 1, 0.1, 0.1, engine=True),
        _row("dense A", 1, 5.0, 6.0),
        _row("ORT A, table", 1, 4.0, 8.0, table=True),
        _row("CSR X", 1, 6.0, 5.0),
        _row("engine X, table", 2, 0.25, 0.5, engine=True, table=True),
        _row("engine X, no table", 2, 0.4, 0.4, engine=True),
        _row("dense A", 2, 3.0, 4.0),
        _row("ORT A, table", 2, 3.5, 3.0, table=True),
    ]
    one, two = headline(rows, input_table=True)
    assert (one["threads"], one["engine"]) == (1, "engine X, table")
    assert (one["rnn"]["fastest"], one["rnn"]["speedup"]) == ("ORT A, table", 8.0)
    assert (one["full"]["fastest"], one["full"]["speedup"]) == ("CSR X", 5.0)
    assert (two["rnn"]["fastest"], two["rnn"]["speedup"]) == ("dense A", 12.0)
    assert (two["full"]["fastest"], two["full"]["speedup"]) == ("ORT A, table", 6.0)
    # without the table, the engine meets only contenders without it
    (plain, _) = headline(rows, input_table=False)
    assert (plain["engine"], plain["rnn"]["fastest"], plain["rnn"]["speedup"]) == (
        "engine X, no table",
        "dense A",
        50.0,
    )


def _timed(name, runs, rnn, full, macs, *, engine=False, table=False):
    """A row as BenchRow.to_dict writes it, timings and MACs injected (p90 = 2 x median)."""
    return {
        **_row(name, 1, rnn, full, engine=engine, table=table),
        "runs": runs,
        "macs_per_token_rnn": macs[0],
        "macs_per_token_full": macs[1],
        "ms_per_token_rnn_p90": 2 * rnn,
        "ms_per_token_full_p90": 2 * full,
    }


def test_printed_table_sets_rows_against_the_same_size_model_and_apart_the_awd_lstm():
    """Injected rows of an EGRU bench: per row, the speedup over the fastest dense EGRU of the
    same size beside the MAC ratio of those two rows, and over the fastest AWD-LSTM row the
    speedup only; a row without the table meets only rows without it. Expected by hand."""
    egru, awd = (2e6, 6e6), (20.19e6, 24.19e6)
    rows = [
        _timed(
            "engine EGRU (80% pruned, table)",
            "EGRU (80% pruned)",
            0.5,
            1.0,
            (1e5, 4e5),
            engine=True,
            table=True,
        ),
        _timed(
            "engine EGRU (80% pruned, no table)",
            "EGRU (80% pruned)",
            0.4,
            0.5,
            (1e5, 4e5),
            engine=True,
        ),
        _timed("dense EGRU (model size)", "dense EGRU (model size)", 2.0, 5.0, egru),
        _timed(
            "ORT dense EGRU (model size), table",
            "dense EGRU (model size)",
            1.5,
            6.0,
            egru,
            table=True,
        ),
        _timed("dense AWD-LSTM", "dense AWD-LSTM", 10.0, 12.0, awd),
        _timed("engine AWD-LSTM (dense, no table)", "dense AWD-LSTM", 8.0, 15.0, awd),
    ]
    rows = _with_speedups(rows, "egru")
    result = {
        "model": {
            "type": "egru",
            "emb_size": 8,
            "hidden_sizes": [10, 6],
            "vocab_size": 30,
            "weight_sparsity": 0.8,
            "layer_activity": [0.2, 0.3],
        },
        "tokens": 10,
        "rounds": 2,
        "warmup": 2,
        "input_table": True,
        "input_table_bytes": 2**20,
        "overhead_ms_per_token": 0.01,
        "rows": rows,
        "sparse_weight_bytes": {"values": 0, "indices": 0},
        "headline": headline(rows, input_table=True),
        "peer_checks": {},
        "peers_skipped": {},
    }
    printed = {
        line[:44].strip(): line[44:].split() for line in format_bench_table(result).splitlines()
    }
    # the last six columns: same size (RNN speedup, MACs, e2e speedup, MACs), AWD-LSTM (RNN, e2e)
    expected = {
        # same size: RNN min(2.0, 1.5) / 0.5, 2e6 / 1e5; e2e min(5.0, 6.0) / 1.0, 6e6 / 4e5;
        # AWD-LSTM: RNN min(10, 8) / 0.5, e2e min(12, 15) / 1.0
        "engine EGRU (80% pruned, table)": ["3.0x", "20.0x", "5.0x", "15.0x", "16.0x", "12.0x"],
        # no table: only the table-less dense EGRU, 2.0 / 0.4 and 5.0 / 0.5
        "engine EGRU (80% pruned, no table)": ["5.0x", "20.0x", "10.0x", "15.0x", "20.0x", "24.0x"],
        "ORT dense EGRU (model size), table": ["1.0x", "1.0x", "0.8x", "1.0x", "5.3x", "2.0x"],
        # the AWD-LSTM rows: no same-size ratio; against the fastest AWD-LSTM row
        "dense AWD-LSTM": ["-", "-", "-", "-", "0.8x", "1.0x"],
    }
    for name, cells in expected.items():
        assert printed[name][-6:] == cells, name
    text = format_bench_table(result)
    assert "real / theory" not in text and "theory" not in text
    assert "different, larger model" in text
    # the headline: the engine with the table against every contender (0.4 and 0.5 ms rows
    # are the engine, not contenders): RNN 1.5 / 0.5, e2e 5.0 / 1.0
    assert (
        "1 thread(s), RNN: 3.0x (0.500 ms vs 1.500 ms, ORT dense EGRU (model size), table)" in text
    )
    assert "1 thread(s), end to end: 5.0x (1.000 ms vs 5.000 ms, dense EGRU (model size))" in text


def test_bench_json_rows_and_a_checked_peer(bench_run):
    """Every row has the keys scripts read; the torch CSR peer passed its log-probability
    check and is timed; the headline names the fastest contender."""
    result = bench_run[2]
    rows = result["rows"]
    for row in rows:
        assert {"name", "threads", "ms_per_token_rnn_median", "ms_per_token_full_median"} <= set(
            row
        )
        assert {"runtime", "runs", "input_table", "engine", "speedup_rnn_vs_fastest"} <= set(row)
    names = {r["name"] for r in rows}
    assert {"torch CSR EGRU (80% pruned)", "torch CSR EGRU (80% pruned), table"} <= names
    assert {"dense AWD-LSTM, table", "dense EGRU (model size), table"} <= names
    assert all(check["passed"] for check in result["peer_checks"].values())
    assert len(result["peer_checks"]) == 2
    contenders = [r for r in rows if not r["engine"]]
    for part in ("rnn", "full"):
        key = f"ms_per_token_{part}_median"
        fastest = min(contenders, key=lambda r: r[key])
        assert result["headline"][0][part]["fastest"] == fastest["name"]
    assert "DeepSparse" in result["peers_skipped"]
    assert "headline" in format_bench_table(result)
