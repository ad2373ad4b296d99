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


def numpy_egru(x, w_ih, w_hh, bias, theta, c0, y0):
    """EGRU eqs. unit by unit: returns y [T,B,H], ĉ [T,B,H], c_T, y_T (float64)."""
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
                z = math.tanh(bias[row_z] + dot(row_z, w_ih, x[t, b]) + dot(row_z, w_hh, r_y))
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


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.25])
def test_layer_forward_matches_unit_by_unit_reference(threshold):
    torch.manual_seed(0)
    layer = EGRULayer(4, 5).double()
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


def egru_inputs(seed: int, steps: int = 7, batch: int = 3, hidden: int = 4):
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    return [
        torch.randn(steps, batch, 3 * hidden, generator=g, dtype=f64),  # x_proj
        0.5 * torch.randn(3 * hidden, hidden, generator=g, dtype=f64),  # weight_hh
        0.3 * torch.rand(hidden, generator=g, dtype=f64),  # threshold
        0.3 * torch.randn(batch, hidden, generator=g, dtype=f64),  # c0
        0.3 * torch.randn(batch, hidden, generator=g, dtype=f64),  # y0
    ]


@pytest.mark.parametrize("used", ["all", "sequence", "final-state"])
def test_fused_backward_matches_autograd_through_reference(used):
    width, dampening = 0.3, 1.7  # wide: many ĉ fall inside the surrogate's support
    inputs = egru_inputs(seed=2)
    g = torch.Generator().manual_seed(3)
    weight_y, weight_c, weight_y_last = (
        torch.randn(s, generator=g, dtype=torch.float64) for s in ((7, 3, 4), (3, 4), (3, 4))
    )

    def run(function):
        leaves = [t.clone().requires_grad_() for t in inputs]
        y_seq, c_pre, c_last, y_last = function(*leaves, width, dampening)
        loss = {
            "all": (y_seq * weight_y).sum()
            + (c_last * weight_c).sum()
            + (y_last * weight_y_last).sum(),
            "sequence": (y_seq * weight_y).sum(),
            "final-state": (c_last * weight_c).sum() + (y_last * weight_y_last).sum(),
        }[used]
        grads = torch.autograd.grad(loss, leaves)
        return (y_seq, c_pre, c_last, y_last), grads

    fused_out, fused_grads = run(EGRUSequence.apply)
    ref_out, ref_grads = run(egru_sequence_reference)
    for ours, theirs in zip(fused_out, ref_out, strict=True):
        torch.testing.assert_close(ours, theirs.detach(), rtol=0, atol=1e-13)
    c_pre, threshold = ref_out[1].detach(), inputs[2]
    assert ((c_pre - threshold).abs() < width).any(), "the surrogate path is not exercised"
    names = ["x_proj", "weight_hh", "threshold", "c0", "y0"]
    for name, ours, theirs in zip(names, fused_grads, ref_grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12, msg=labelled(name))
    assert fused_grads[2].abs().sum() > 0


def test_threshold_gradient_flows_through_the_pseudo_derivative():
    """One step, loss Σ y = Σ ĉ·H(ĉ − θ): only H' links the loss to θ (the reset is unused)."""
    inputs = egru_inputs(seed=4, steps=1)
    c_pre = egru_sequence_reference(*inputs, 0.3, 1.0)[1][0]
    margin = (c_pre - inputs[2]).abs().min().item()
    assert margin > 1e-6
    for width, dampening in ((0.3, 1.0), (1e-6, 1.0)):
        threshold = inputs[2].clone().requires_grad_()
        y_seq = EGRUSequence.apply(
            inputs[0], inputs[1], threshold, inputs[3], inputs[4], width, dampening
        )[0]
        y_seq.sum().backward()
        expected = -(c_pre * surrogate_heaviside_grad(c_pre - inputs[2], width, dampening)).sum(0)
        torch.testing.assert_close(threshold.grad, expected, rtol=1e-12, atol=1e-14)
        if width > margin:
            assert threshold.grad.abs().sum() > 0
        else:  # no ĉ within a tiny width of θ: a true step has no gradient here
            assert threshold.grad.abs().sum() == 0


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
