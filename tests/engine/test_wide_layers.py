"""Layers wide enough that the compiled loops run their vector bodies (hundreds of units,
a vocabulary of hundreds), on one thread and on two, against a reference written
differently: whole-matrix numpy algebra in float64 from the same stored weights."""

import numpy as np
import pytest

from dualsparse.engine.bench import synthetic_model
from dualsparse.engine.runtime import Engine

EMB, HIDDEN, VOCAB = 40, [150, 133], 300


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def reference_log_probs(model, tokens):
    """log p(w_{t+1} | w_1..w_t) by dense matrix products over all units at once."""
    w = {name: m.to_dense().astype(np.float64) for name, m in model.matrices.items()}
    d = {name: t.astype(np.float64) for name, t in model.dense.items()}
    kind = model.model_type
    out = [np.zeros(h) for h in model.hidden_sizes]
    cell = [np.zeros(h) for h in model.hidden_sizes]
    result = []
    for t in range(len(tokens) - 1):
        x = d["embedding"][tokens[t]]
        for layer, size in enumerate(model.hidden_sizes):
            p, prev = f"layer{layer}.", out[layer]
            if kind == "egru":
                gates = w[p + "W_ih"] @ x + d[p + "bias"]
                gates[: 2 * size] += w[p + "U_ur"] @ prev
                u, r = sigmoid(gates[:size]), sigmoid(gates[size : 2 * size])
                z = np.tanh(gates[2 * size :] + w[p + "U_z"] @ (r * prev))
                c_pre = cell[layer] + u * (z - cell[layer])
                fired = c_pre > d[p + "threshold"]
                out[layer] = np.where(fired, c_pre, 0.0)
                cell[layer] = c_pre - d[p + "threshold"] * fired
            elif kind == "lstm":
                gates = w[p + "W_ih"] @ x + w[p + "W_hh"] @ prev
                gates += d[p + "bias_ih"] + d[p + "bias_hh"]
                i, f, g, o = np.split(gates, 4)
                cell[layer] = sigmoid(f) * cell[layer] + sigmoid(i) * np.tanh(g)
                out[layer] = sigmoid(o) * np.tanh(cell[layer])
            else:
                gi = w[p + "W_ih"] @ x + d[p + "bias_ih"]
                gh = w[p + "W_hh"] @ prev + d[p + "bias_hh"]
                r = sigmoid(gi[:size] + gh[:size])
                z = sigmoid(gi[size : 2 * size] + gh[size : 2 * size])
                n = np.tanh(gi[2 * size :] + r * gh[2 * size :])
                out[layer] = (1.0 - z) * n + z * prev
            x = out[layer]
        if "projection" in w:
            x = w["projection"] @ x
        logits = d["embedding"] @ x + d["decoder.bias"]
        top = logits.max()
        result.append(logits[tokens[t + 1]] - top - np.log(np.exp(logits - top).sum()))
    return np.array(result), out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("model_type", ["egru", "lstm", "gru"])
def test_wide_layers_equal_the_dense_reference(model_type, threads):
    model = synthetic_model(model_type, EMB, HIDDEN, VOCAB, 0.6, seed=3, threshold=0.02)
    tokens = np.random.default_rng(4).integers(0, VOCAB, 40)
    expected, _ = reference_log_probs(model, tokens)
    engine = Engine(model, threads=threads, dtype=np.float64)
    np.testing.assert_allclose(engine.score(tokens), expected, atol=1e-13, rtol=0)
    if model_type == "egru":  # the comparison means something only if units fire and rest
        assert all(0.05 < a < 0.5 for a in engine.counts()["layer_activity"])
    float32 = Engine(model, threads=threads, input_table=True)
    np.testing.assert_allclose(float32.score(tokens), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("model_type", ["egru", "lstm", "gru"])
def test_wide_layers_on_two_threads_equal_one_thread_entry_for_entry(model_type):
    model = synthetic_model(model_type, EMB, HIDDEN, VOCAB, 0.6, seed=5, threshold=0.02)
    tokens = np.random.default_rng(6).integers(0, VOCAB, 40)
    """States and logits bit for bit; the log-normaliser adds its vocabulary shards' sums in
    another order, which moves log-probs only at double rounding."""
    single, sharded = Engine(model), Engine(model, threads=2)
    np.testing.assert_allclose(single.score(tokens), sharded.score(tokens), atol=1e-9, rtol=0)
    assert np.array_equal(single.logits, sharded.logits)
    assert single.counts() == sharded.counts()
    for one, two in zip(single.layers, sharded.layers, strict=True):
        assert np.array_equal(one.out, two.out) and np.array_equal(one.cell, two.cell)
