"""The EGRU layer against the equations of models/egru.py, computed independently.

The reference below is a float64 NumPy loop over time, batch *and* units, so it
shares neither the matrix layout tricks nor the fused backward of the module.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dualsparse.config import ModelConfig
from dualsparse.models.egru import (
    EGRULayer,
    EGRUSequence,
    HeavisideSurrogate,
    egru_sequence_reference,
    surrogate_heaviside_grad,
)
from dualsparse.models.lm import LanguageModel


def sigmoid(a: float) -> float:
    return 1.0 / (1.0 + math.exp(-a))


def numpy_egru(x, w_ih, w_hh, bias, theta, c0, y0, bias_hz=None):
    """EGRU eqs. unit by unit: returns y [T,B,H], ĉ [T,B,H], c_T, y_T (float64).

    With ``bias_hz`` the candidate is the reset-after form tanh(W_z x + b_z + r·(U_z y + b_hz)).
    """
    steps, batch, n_in = x.shape
    hidden = theta.shape[0]
    ys, c_pres = np.zeros((steps, batch, hidden)), np.zeros((steps, batch, hidden))
    c, y = c0.copy(), y0.copy()

    def dot(row, weights, values):
        return sum(weights[row, k] * values[k] for k in range(len(values)))

    for t in range(steps):
        c_next, y_next = np.zeros_like(c), np.zeros_like(y)
        for b in range(batch):
            # rows of W and b: u = 0..H-1, r = H..2H-1, z = 2H..3H-1
            r = [
                sigmoid(
                    bias[hidden + j] + dot(hidden + j, w_ih, x[t, b]) + dot(hidden + j, w_hh, y[b])
                )
                for j in range(hidden)
            ]
            r_y = [r[j] * y[b, j] for j in range(hidden)]
            for i in range(hidden):
                u = sigmoid(bias[i] + dot(i, w_ih, x[t, b]) + dot(i, w_hh, y[b]))
                row_z = 2 * hidden + i
                if bias_hz is None:
                    recurrent = dot(row_z, w_hh, r_y)
                else:
                    recurrent = r[i] * (dot(row_z, w_hh, y[b]) + bias_hz[i])
                z = math.tanh(bias[row_z] + dot(row_z, w_ih, x[t, b]) + recurrent)
                c_pre = u * z + (1.0 - u) * c[b, i]
                event = 1.0 if c_pre - theta[i] > 0 else 0.0
                y_next[b, i] = c_pre * event
                c_next[b, i] = c_pre - theta[i] * event
                c_pres[t, b, i] = c_pre
        c, y = c_next, y_next
        ys[t] = y
    return ys, c_pres, c, y


def labelled(name: str):
    """assert_close message that keeps its detail and says which tensor failed."""
    return lambda detail: f"{name}: {detail}"


@pytest.mark.parametrize("reset_after", [False, True])
@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.25])
def test_layer_forward_matches_unit_by_unit_reference(threshold, reset_after):
    torch.manual_seed(0)
    layer = EGRULayer(4, 5, reset_after=reset_after).double()
    with torch.no_grad():
        layer.threshold.fill_(threshold)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 4, generator=g, dtype=torch.float64)
    c0 = 0.3 * torch.randn(3, 5, generator=g, dtype=torch.float64)
    y0 = torch.where(c0 > threshold, c0, 0.0)
    with torch.no_grad():
        y_seq, (c_last, y_last), c_pre = layer(x, (c0, y0))
    ref = numpy_egru(
        x.numpy(),
        layer.weight_ih.detach().numpy(),
        layer.weight_hh.detach().numpy(),
        layer.bias.detach().numpy(),
        layer.threshold.detach().numpy(),
        c0.numpy(),
        y0.numpy(),
        layer.bias_hz.detach().numpy() if reset_after else None,
    )
    for ours, theirs in zip((y_seq, c_pre, c_last, y_last), ref, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-12)
    activity = (y_seq != 0).double().mean().item()
    assert 0.0 < activity < 1.0
    # communicated state: exactly 0 off-event, exactly ĉ on-event
    assert torch.equal(y_seq, torch.where(c_pre > threshold, c_pre, torch.zeros_like(c_pre)))


@pytest.mark.parametrize(
    "x, expected",
    [
        (0.0, 2.0),
        (0.25, 1.0),
        (-0.25, 1.0),
        (0.4, 0.4),
        (0.5, 0.0),
        (-0.5, 0.0),
        (0.7, 0.0),
        (-3.0, 0.0),
    ],
)
def test_surrogate_derivative_is_the_triangle(x, expected):
    """γ·max(0, 1 − |x|/ε) with ε = 0.5, γ = 2: peak γ at 0, zero from |x| = ε on."""
    value = surrogate_heaviside_grad(torch.tensor([x], dtype=torch.float64), 0.5, 2.0)
    assert value.item() == pytest.approx(expected, abs=1e-12)


def test_heaviside_surrogate_forward_is_step_backward_is_triangle():
    x = torch.tensor([-1.0, -0.25, 0.0, 1e-9, 0.25, 0.6], dtype=torch.float64, requires_grad=True)
    out = HeavisideSurrogate.apply(x, 0.5, 2.0)
    assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)
    out.backward(upstream)
    triangle = [0.0, 1.0, 2.0, 2.0 * (1 - 1e-9 / 0.5), 1.0, 0.0]
    np.testing.assert_allclose(x.grad.numpy(), upstream.numpy() * triangle, atol=1e-12)


NAMES = ["x", "weight_ih", "bias", "weight_hh", "bias_hz", "threshold", "c0", "y0"]


def egru_inputs(
    seed: int, steps: int = 7, batch: int = 3, hidden: int = 4, n_in: int = 5, reset_after=False
):
    """Arguments of EGRUSequence before width, dampening and clip (bias_hz None: paper)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=torch.float64)

    return [
        randn(steps, batch, n_in),  # x
        randn(3 * hidden, n_in, scale=0.5),  # weight_ih
        randn(3 * hidden, scale=0.3),  # bias
        randn(3 * hidden, hidden, scale=0.5),  # weight_hh
        randn(hidden, scale=0.5) if reset_after else None,  # bias_hz
        0.3 * torch.rand(hidden, generator=g, dtype=torch.float64),  # threshold
        randn(batch, hidden, scale=0.3),  # c0
        randn(batch, hidden, scale=0.3),  # y0
    ]


def leaves_of(inputs):
    return [None if t is None else t.clone().requires_grad_() for t in inputs]


def grads_of(loss, leaves):
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(loss, present))
    return [None if t is None else next(grads) for t in leaves]


@pytest.mark.parametrize("reset_after", [False, True])
@pytest.mark.parametrize("used", ["all", "sequence", "final-state"])
def test_fused_backward_matches_autograd_through_reference(used, reset_after):
    width, dampening = 0.3, 1.7  # wide: many ĉ fall inside the surrogate's support
    inputs = egru_inputs(seed=2, reset_after=reset_after)
    g = torch.Generator().manual_seed(3)
    weight_y, weight_c, weight_y_last = (
        torch.randn(s, generator=g, dtype=torch.float64) for s in ((7, 3, 4), (3, 4), (3, 4))
    )

    def run(function, *extra):
        leaves = leaves_of(inputs)
        y_seq, c_pre, c_last, y_last = function(*leaves, width, dampening, *extra)
        loss = {
            "all": (y_seq * weight_y).sum()
            + (c_last * weight_c).sum()
            + (y_last * weight_y_last).sum(),
            "sequence": (y_seq * weight_y).sum(),
            "final-state": (c_last * weight_c).sum() + (y_last * weight_y_last).sum(),
        }[used]
        return (y_seq, c_pre, c_last, y_last), grads_of(loss, leaves)

    fused_out, fused_grads = run(EGRUSequence.apply, 0.0)
    ref_out, ref_grads = run(egru_sequence_reference)
    for ours, theirs in zip(fused_out, ref_out, strict=True):
        torch.testing.assert_close(ours, theirs.detach(), rtol=0, atol=1e-13)
    c_pre, threshold = ref_out[1].detach(), inputs[5]
    assert ((c_pre - threshold).abs() < width).any(), "the surrogate path is not exercised"
    for name, ours, theirs in zip(NAMES, fused_grads, ref_grads, strict=True):
        if theirs is None:
            assert ours is None, name
            continue
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12, msg=labelled(name))
    assert fused_grads[5].abs().sum() > 0


def test_threshold_gradient_flows_through_the_pseudo_derivative():
    """One step, loss Σ y = Σ ĉ·H(ĉ − θ): only H' links the loss to θ (the reset is unused)."""
    inputs = egru_inputs(seed=4, steps=1)
    c_pre = egru_sequence_reference(*inputs, 0.3, 1.0)[1][0]
    margin = (c_pre - inputs[5]).abs().min().item()
    assert margin > 1e-6
    for width, dampening in ((0.3, 1.0), (1e-6, 1.0)):
        leaves = list(inputs)
        leaves[5] = threshold = inputs[5].clone().requires_grad_()
        y_seq = EGRUSequence.apply(*leaves, width, dampening, 0.0)[0]
        y_seq.sum().backward()
        expected = -(c_pre * surrogate_heaviside_grad(c_pre - inputs[5], width, dampening)).sum(0)
        torch.testing.assert_close(threshold.grad, expected, rtol=1e-12, atol=1e-14)
        if width > margin:
            assert threshold.grad.abs().sum() > 0
        else:  # no ĉ within a tiny width of θ: a true step has no gradient here
            assert threshold.grad.abs().sum() == 0


@pytest.mark.parametrize("reset_after", [False, True])
def test_fused_gradients_pass_gradcheck_where_no_event_flips(reset_after):
    """With a surrogate narrower than every |ĉ − θ| the layer is smooth around the point,
    so the hand-written backward must equal float64 central differences (gradcheck)."""
    for seed in range(30):
        inputs = egru_inputs(seed=seed, steps=4, batch=2, hidden=3, n_in=3, reset_after=reset_after)
        c_pre = egru_sequence_reference(*inputs, 1e-9, 1.0)[1]
        if (c_pre - inputs[5]).abs().min() > 1e-3:
            break
    else:
        pytest.fail("no seed kept every ĉ away from θ")
    assert 0 < (c_pre > inputs[5]).double().mean() < 1  # events on some steps, not all
    leaves = leaves_of(inputs)

    def function(*args):
        y_seq, _, c_last, y_last = EGRUSequence.apply(*args, 1e-9, 1.0, 0.0)
        return y_seq, c_last, y_last

    assert torch.autograd.gradcheck(function, leaves, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("reset_after", [False, True])
def test_layer_grad_clip_scales_the_layers_gradients_by_their_joint_norm(reset_after):
    """EvNN egru.cc lines 398-425: after BPTT, the gradients of W, U, biases, θ and y0 are
    scaled together to joint norm ≤ max; the gradient to the layer below (dx) is not."""
    inputs = egru_inputs(seed=6, reset_after=reset_after)
    weight = torch.randn(7, 3, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def grads(max_norm):
        leaves = leaves_of(inputs)
        y_seq = EGRUSequence.apply(*leaves, 0.3, 1.7, max_norm)[0]
        return dict(zip(NAMES, grads_of((y_seq * weight).sum(), leaves), strict=True))

    free = grads(0.0)
    counted = ["weight_ih", "bias", "weight_hh", "threshold", "y0"]
    counted += ["bias_hz"] if reset_after else []
    norm = math.sqrt(sum(float(free[n].pow(2).sum()) for n in counted))
    assert norm > 1.0
    clipped = grads(0.5)
    scale = 0.5 / (norm + 1e-6)
    for name in NAMES:
        if free[name] is None:
            continue
        expected = free[name] if name == "x" else free[name] * scale
        torch.testing.assert_close(clipped[name], expected, rtol=1e-12, atol=1e-15)
    joint = math.sqrt(sum(float(clipped[n].pow(2).sum()) for n in counted))
    assert joint == pytest.approx(0.5, rel=1e-5)
    loose = grads(10 * norm)  # a bound above the norm changes nothing
    for name in NAMES:
        if free[name] is not None:
            assert torch.equal(loose[name], free[name]), name


def test_constrain_keeps_thresholds_in_the_unit_interval():
    layer = EGRULayer(2, 5)
    with torch.no_grad():
        layer.threshold.copy_(torch.tensor([-0.5, 0.0, 0.3, 1.0, 1.7]))
    layer.constrain_()
    assert layer.threshold.tolist() == pytest.approx([0.0, 0.0, 0.3, 1.0, 1.0])
    assert isinstance(layer.threshold, torch.nn.Parameter) and layer.threshold.requires_grad


def test_xavier_normal_init_draws_the_reference_spread_and_zero_biases():
    torch.manual_seed(0)
    layer = EGRULayer(300, 200, weight_init="xavier_normal", reset_after=True)
    # fans of the stacked matrices: [600, 300] and [600, 200]
    for weight, fans in ((layer.weight_ih, 600 + 300), (layer.weight_hh, 600 + 200)):
        assert weight.std().item() == pytest.approx(math.sqrt(2 / fans), rel=0.02)
        assert abs(weight.mean().item()) < 0.01
    assert torch.all(layer.bias == 0) and torch.all(layer.bias_hz == 0)


def test_uniform_init_keeps_the_random_stream_of_earlier_versions():
    """Default layers draw W_ih, W_hh, b from U(±1/√H) then θ, in this order, as before."""
    torch.manual_seed(3)
    layer = EGRULayer(4, 6)
    torch.manual_seed(3)
    bound = 1 / math.sqrt(6)
    expected = [torch.empty(18, 4), torch.empty(18, 6), torch.empty(18)]
    for t in expected:
        t.uniform_(-bound, bound)
    for ours, theirs in zip((layer.weight_ih, layer.weight_hh, layer.bias), expected, strict=True):
        assert torch.equal(ours.detach(), theirs)
    assert layer.bias_hz is None and "bias_hz" not in dict(layer.named_parameters())


def tiny_lm(seed: int, surrogate_width: float) -> LanguageModel:
    cfg = ModelConfig(
        type="egru",
        emb_size=8,
        hidden_sizes=[6, 5],
        dropout_words=0.0,
        dropout_emb=0.0,
        dropout_forward=0.0,
        dropout_output=0.0,
        dropout_connect=0.0,
        surrogate_width=surrogate_width,
    )
    torch.manual_seed(seed)
    model = LanguageModel(cfg, vocab_size=11).double().eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.threshold.uniform_(0.05, 0.3)  # events on some units, not all
    return model


def lm_loss(model: LanguageModel, tokens, targets):
    """Cross-entropy plus the final reset states (so ∂/∂c_T is checked too); and the events."""
    out = model(tokens)
    loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), targets.reshape(-1))
    loss = loss + 0.1 * sum(state[0].sum() for state in out.state)
    shifted = [
        c_pre - layer.threshold
        for c_pre, layer in zip(out.pre_reset_states, model.layers, strict=True)
    ]
    events = [s > 0 for s in shifted]
    margin = min(s.abs().min().item() for s in shifted)
    return loss, events, margin


def test_language_model_gradient_matches_finite_differences():
    """H is a step, so gradcheck of EGRUSequence is meaningless; but with a surrogate
    width far below every |ĉ − θ| the model is smooth around the point, its analytic
    gradient is the true one, and central differences must agree with it."""
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 11, (6, 2), generator=g)
    targets = torch.randint(0, 11, (6, 2), generator=g)
    step, min_margin = 1e-6, 1e-3
    for seed in range(20):  # the first model whose ĉ all stay clear of θ
        model = tiny_lm(seed, surrogate_width=1e-6)
        loss, base_events, margin = lm_loss(model, tokens, targets)
        if margin > min_margin:
            break
    assert margin > min_margin, "no seed kept every ĉ away from θ"
    assert 0 < torch.cat([e.flatten() for e in base_events]).double().mean() < 1
    loss.backward()
    with torch.no_grad():
        for name, param in model.named_parameters():
            numeric = torch.zeros_like(param).view(-1)
            flat = param.view(-1)
            for k in range(flat.numel()):
                losses = []
                for delta in (step, -2 * step):
                    flat[k] += delta
                    value, events, _ = lm_loss(model, tokens, targets)
                    same = map(torch.equal, events, base_events)
                    assert all(same), f"{name}[{k}] ± {step} flips an event (crosses θ)"
                    losses.append(value.item())
                flat[k] += step
                numeric[k] = (losses[0] - losses[1]) / (2 * step)
            torch.testing.assert_close(
                param.grad.view(-1), numeric, rtol=1e-5, atol=1e-8, msg=labelled(name)
            )


def test_thresholds_get_gradient_with_the_normal_surrogate_width():
    model = tiny_lm(0, surrogate_width=ModelConfig().surrogate_width)
    tokens = torch.randint(0, 11, (6, 2), generator=torch.Generator().manual_seed(6))
    loss, _, _ = lm_loss(model, tokens, tokens.roll(1, 0))
    loss.backward()
    for layer in model.layers:
        assert layer.threshold.grad is not None and layer.threshold.grad.abs().sum() > 0
