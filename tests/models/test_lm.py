"""The AWD-style language model: tying, projection, regularisers as wired in, baselines."""

import pytest
import torch
from torch import nn

from conftest import NO_DROPOUT
from dualsparse.config import ModelConfig
from dualsparse.models.baselines import GRULayer, LSTMLayer
from dualsparse.models.lm import LanguageModel, parameter_groups

VOCAB = 20


def tiny_model(seed: int = 0, **overrides) -> LanguageModel:
    cfg = ModelConfig(**{"emb_size": 16, "hidden_sizes": [16, 12], **NO_DROPOUT, **overrides})
    torch.manual_seed(seed)
    return LanguageModel(cfg, VOCAB)


def tokens(steps: int = 7, batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (steps, batch), generator=torch.Generator().manual_seed(seed))


def record_calls(module: nn.Module) -> list[tuple[tuple, dict]]:
    """(args, kwargs) of every forward call of ``module``, recorded by a pre-hook."""
    calls = []
    module.register_forward_pre_hook(
        lambda _m, args, kwargs: calls.append((args, kwargs)), with_kwargs=True
    )
    return calls


def test_decoder_shares_the_embedding_storage():
    model = tiny_model()
    assert model.decoder.weight is model.encoder.weight
    assert model.decoder.weight.data_ptr() == model.encoder.weight.data_ptr()
    with torch.no_grad():
        model.encoder.weight[3, 5] = 7.0
    assert model.decoder.weight[3, 5].item() == 7.0


@pytest.mark.parametrize(
    "hidden_sizes, tie, projection",
    [
        ([16, 12], True, (12, 16)),  # last layer narrower than the embedding: project up
        ([12, 16], True, None),  # last layer = embedding size: decoder reads it directly
        ([16, 12], False, None),
    ],  # untied decoder takes any width
)
def test_projection_only_when_last_layer_differs_from_embedding(hidden_sizes, tie, projection):
    model = tiny_model(hidden_sizes=hidden_sizes, tie_weights=tie)
    if projection is None:
        assert model.projection is None
    else:
        assert (model.projection.in_features, model.projection.out_features) == projection
    assert model(tokens()).logits.shape == (7, 3, VOCAB)


LAYER_PARAMS = {
    "egru": ["weight_ih", "weight_hh", "bias", "threshold"],
    "lstm": ["weight_ih", "weight_hh", "bias_ih", "bias_hh"],
    "gru": ["weight_ih", "weight_hh", "bias_ih", "bias_hh"],
}


@pytest.mark.parametrize("kind", ["egru", "lstm", "gru"])
def test_drop_connect_drops_recurrent_weights_only_in_training(kind):
    p = 0.5
    model = tiny_model(type=kind, dropout_connect=p)
    expected_names = ["encoder.weight", "decoder.bias", "projection.weight"] + [
        f"layers.{i}.{name}" for i in range(2) for name in LAYER_PARAMS[kind]
    ]
    calls = record_calls(model.layers[0])
    param = model.layers[0].weight_hh

    def used_weight():
        return calls[-1][1]["weight_hh"]

    for mode in ("train", "eval", "train"):
        model.train(mode == "train")
        model.zero_grad()
        model(tokens()).logits.sum().backward()
        weight = used_weight()
        if mode == "eval":
            assert weight is param
            continue
        dropped = weight == 0
        assert 0 < dropped.float().mean() < 1
        torch.testing.assert_close(weight[~dropped], param[~dropped] / (1 - p), rtol=0, atol=0)
        # the dropped copy is a function of the parameter: gradients reach it, masked
        assert param.grad is not None
        assert torch.all(param.grad[dropped] == 0) and param.grad[~dropped].abs().sum() > 0
    assert sorted(name for name, _ in model.named_parameters()) == sorted(expected_names)
    assert sorted(model.state_dict()) == sorted(expected_names + ["decoder.weight"])


@pytest.mark.parametrize("layer_class, torch_class", [(LSTMLayer, nn.LSTM), (GRULayer, nn.GRU)])
@pytest.mark.parametrize("training", [True, False])
def test_baseline_layers_equal_torch_modules(layer_class, torch_class, training):
    torch.manual_seed(0)
    ours = layer_class(5, 4).double().train(training)
    theirs = torch_class(5, 4).double().train(training)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(theirs, f"{name}_l0").copy_(getattr(ours, name))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 5, generator=g, dtype=torch.float64)
    state = tuple(torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in ours.init_state(3))
    out, new_state, _ = ours(x, state)
    torch_state = tuple(s.unsqueeze(0) for s in state)
    expected, expected_state = theirs(x, torch_state if len(state) == 2 else torch_state[0])
    if isinstance(expected_state, torch.Tensor):
        expected_state = (expected_state,)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    for mine, ref in zip(new_state, expected_state, strict=True):
        torch.testing.assert_close(mine, ref[0], rtol=0, atol=1e-12)
    out.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(ours.weight_hh.grad, theirs.weight_hh_l0.grad, rtol=0, atol=1e-12)


def locked_dropout_ratio(key: str, model: LanguageModel, batch: torch.Tensor) -> torch.Tensor:
    """Output of the locked dropout named ``key`` divided by its input, [T, B, D]."""
    consumer = {
        "dropout_emb": model.layers[0],
        "dropout_forward": model.layers[1],
        "dropout_output": model.projection,
    }[key]
    calls = record_calls(consumer)
    out = model(batch)
    dropped = calls[-1][0][0]
    raw = {
        "dropout_emb": model.encoder(batch),
        "dropout_forward": out.layer_outputs[0],
        "dropout_output": out.layer_outputs[-1],
    }[key]
    return dropped / raw


@pytest.mark.parametrize("key", ["dropout_emb", "dropout_forward", "dropout_output"])
def test_locked_dropout_uses_one_mask_across_time(key):
    # LSTM: its outputs are never exactly 0, so output / input recovers the mask
    model = tiny_model(type="lstm", **{key: 0.5}).train()
    ratio = locked_dropout_ratio(key, model, tokens(steps=9))
    assert set(ratio.unique().tolist()) <= {0.0, 2.0}
    assert 0 < (ratio == 0).float().mean() < 1
    assert torch.equal(ratio, ratio[:1].expand_as(ratio))  # the same mask at every step
    assert not torch.equal(ratio[:, 0], ratio[:, 1])  # but not the same for every sequence
    model.eval()
    assert torch.all(locked_dropout_ratio(key, model, tokens(steps=9)) == 1.0)


def test_embedding_dropout_drops_whole_word_types():
    model = tiny_model(dropout_words=0.5).train()
    calls = record_calls(model.layers[0])
    batch = tokens(steps=40, batch=3)
    model(batch)
    inputs, embedded = calls[-1][0][0], model.encoder(batch)
    dropped_words, kept_words = set(), set()
    for word in batch.unique().tolist():
        rows, full = inputs[batch == word], embedded[batch == word]
        if torch.all(rows == 0):
            dropped_words.add(word)
        else:  # every occurrence of a kept word is rescaled by 1 / (1 − p)
            torch.testing.assert_close(rows, 2 * full)
            kept_words.add(word)
    assert dropped_words and kept_words
    model.eval()
    model(batch)
    assert torch.equal(calls[-1][0][0], model.encoder(batch))


@pytest.mark.parametrize("kind", ["egru", "lstm"])
def test_parameter_groups_hold_each_parameter_once(kind):
    model = tiny_model(type=kind)
    groups = parameter_groups(
        model, weight_decay=0.1, bias_decay=0.01, threshold_lr_scale=0.5, lr=0.002
    )
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters()}
    assert grouped.count(id(model.encoder.weight)) == 1  # the tied embedding/decoder weight
    by_name = {g["name"]: g for g in groups}
    thresholds = [layer.threshold for layer in model.layers if hasattr(layer, "threshold")]
    if kind == "egru":
        assert [id(p) for p in by_name["thresholds"]["params"]] == [id(p) for p in thresholds]
        assert by_name["thresholds"]["lr"] == pytest.approx(0.001)
        assert by_name["thresholds"]["weight_decay"] == 0.01
    else:
        assert "thresholds" not in by_name
    assert all(p.ndim >= 2 for p in by_name["weights"]["params"])
    assert by_name["weights"]["weight_decay"] == 0.1
    assert all(p.ndim == 1 for p in by_name["biases"]["params"])
    torch.optim.AdamW(groups)  # refuses parameters that appear in two groups


def lazy_states(model: LanguageModel):
    calls = [record_calls(layer) for layer in model.layers]
    return lambda: [[args[1] for args, _ in layer_calls] for layer_calls in calls]


def split_walkers():
    from dualsparse.evaluation import evaluate
    from dualsparse.sparsity.activity import analyze_activity
    from dualsparse.sparsity.macs import measure_macs

    return {"evaluate": evaluate, "activity": analyze_activity, "macs": measure_macs}


@pytest.mark.parametrize("walker", ["evaluate", "activity", "macs", "training"])
@pytest.mark.parametrize("carry", [True, False])
def test_local_state_restarts_at_zero_at_every_window_when_not_carried(walker, carry):
    model = tiny_model(carry_local_state=carry)
    states = lazy_states(model)
    data = tokens(steps=60, batch=1).view(-1)
    if walker == "training":  # windows of a training epoch: state carried, graph cut
        model.train()
        state = None
        for start in range(0, 40, 8):
            out = model(tokens(steps=8, seed=start), state)
            out.logits.sum().backward()
            state = [tuple(t.detach() for t in s) for s in out.state]
    else:
        split_walkers()[walker](model, data, 2, 7)
    received = states()
    for layer_states in received:
        assert len(layer_states) >= 4
        later = layer_states[1:]  # the first window starts from the zero state either way
        assert all(y.abs().sum() > 0 for _, y in later)  # y is carried in both settings
        if carry:
            assert all(c.abs().sum() > 0 for c, _ in later)
        else:
            assert all(torch.all(c == 0) for c, _ in layer_states)


def test_two_windows_differ_from_one_long_window_only_by_the_local_state_reset():
    torch.manual_seed(0)
    batch = tokens(steps=12, batch=2)
    first, second = batch[:5], batch[5:]
    carried = tiny_model(seed=3).double().eval()
    reset = tiny_model(seed=3, carry_local_state=False).double().eval()
    long = carried(batch)
    # carrying (c, y): the walk is the long window cut in two
    a = carried(first)
    b = carried(second, a.state)
    torch.testing.assert_close(torch.cat([a.logits, b.logits]), long.logits, rtol=0, atol=1e-12)
    # not carrying c: the first window is unchanged, the second starts from (0, y)
    a_reset = reset(first)
    b_reset = reset(second, a_reset.state)
    torch.testing.assert_close(a_reset.logits, a.logits, rtol=0, atol=0)
    zero_c = [(torch.zeros_like(c), y) for c, y in a.state]
    torch.testing.assert_close(b_reset.logits, carried(second, zero_c).logits, rtol=0, atol=0)
    assert (b_reset.logits - b.logits).abs().max() > 1e-6  # and that is a real difference


def test_ar_and_tar_terms_equal_hand_computed_values():
    """One EGRU unit type with W = U = 0, θ = 0, b_u = 0, b_z = atanh(0.8): u = 0.5,
    z = 0.8, so ĉ_t = 0.4 + 0.5 ĉ_{t−1}: y = 0.4, 0.6, 0.7 on every unit and sequence.
    AR = α·mean(y²) = α·(0.16 + 0.36 + 0.49)/3, TAR = β·mean((y_t − y_{t−1})²) = β·(0.04 + 0.01)/2.
    """
    expected_ar, expected_tar = 1.01 / 3, 0.05 / 2
    for alpha, beta in ((2.0, 0.0), (0.0, 1.0), (2.0, 1.0), (0.0, 0.0)):
        model = tiny_model(hidden_sizes=[16], ar_alpha=alpha, tar_beta=beta).double().train()
        layer = model.layers[0]
        with torch.no_grad():
            for param in (layer.weight_ih, layer.weight_hh, layer.bias, layer.threshold):
                param.zero_()
            layer.bias[32:] = torch.atanh(torch.tensor(0.8, dtype=torch.float64))
        out = model(tokens(steps=3, batch=2))
        torch.testing.assert_close(
            out.layer_outputs[0][:, 0, 0], torch.tensor([0.4, 0.6, 0.7], dtype=torch.float64)
        )
        expected = alpha * expected_ar + beta * expected_tar
        assert out.regularization.item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
        model.eval()  # evaluation never adds the terms
        assert model(tokens(steps=3, batch=2)).regularization.item() == 0.0


@pytest.mark.parametrize("decay_thresholds", [True, False])
def test_thresholds_keep_their_value_under_decay_only_when_excluded(decay_thresholds):
    """Zero gradients: AdamW's step is pure decay, θ ← θ·(1 − lr·decay) per step."""
    model = tiny_model()
    lr, decay, steps = 0.1, 0.5, 3
    groups = parameter_groups(
        model,
        weight_decay=0.2,
        bias_decay=decay,
        threshold_lr_scale=1.0,
        lr=lr,
        decay_thresholds=decay_thresholds,
    )
    optimizer = torch.optim.AdamW(groups)
    before = [layer.threshold.detach().clone() for layer in model.layers]
    assert all(b.abs().sum() > 0 for b in before)
    for _ in range(steps):
        for param in model.parameters():
            param.grad = torch.zeros_like(param)
        optimizer.step()
    factor = (1 - lr * decay) ** steps if decay_thresholds else 1.0
    for layer, start in zip(model.layers, before, strict=True):
        torch.testing.assert_close(layer.threshold.detach(), start * factor, rtol=1e-6, atol=0)


def test_batch_shared_dropout_draws_one_mask_per_step_for_the_whole_batch():
    model = tiny_model(type="lstm", dropout_emb=0.5, dropout_mask_shared_over="batch").train()
    ratio = locked_dropout_ratio("dropout_emb", model, tokens(steps=9))
    assert set(ratio.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(ratio, ratio[:, :1].expand_as(ratio))  # every sequence: the same mask
    assert not torch.equal(ratio[0], ratio[1])  # but a new one at every step


def test_reset_after_adds_its_recurrent_bias_as_a_bias_parameter():
    model = tiny_model(reset_after=True)
    names = dict(model.named_parameters())
    assert names["layers.0.bias_hz"].shape == (16,) and names["layers.1.bias_hz"].shape == (12,)
    groups = {g["name"]: g for g in parameter_groups(model, 0.1, 0.01, 1.0, 0.002)}
    assert any(p is names["layers.0.bias_hz"] for p in groups["biases"]["params"])
    assert "layers.0.bias_hz" not in model.rnn_weight_names()  # pruning covers matrices only
