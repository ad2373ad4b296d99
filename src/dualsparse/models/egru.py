"""The event-based GRU (EGRU) of Subramoney et al. (ICLR 2023).

Equations (DEVELOPERS.md, "EGRU cell"), per time step t and unit i:

    u, r  = sigmoid(W_ur x_t + U_ur y_{t-1} + b_ur)            update / reset gates
    z     = tanh(W_z x_t + U_z (r * y_{t-1}) + b_z)             candidate
    ĉ     = u * z + (1 - u) * c_{t-1}                pre-reset local state
    e     = H(ĉ - θ)                                 event (H = Heaviside)
    y_t   = ĉ * e                                    communicated state, exactly 0 off-event
    c_t   = ĉ - θ * e                                reset by subtraction, s = θ·H(ĉ − θ)

H has the triangular pseudo-derivative (the surrogate gradient)

    H'(x) = γ · max(0, 1 − |x| / ε)

with half-width ε (``surrogate_width``) and dampening γ (``surrogate_dampening``).
The surrogate is used wherever H appears (in y and in the reset).

Speed: the recurrence is one custom autograd Function over the whole sequence.
The input projections W x_t + b of all steps are one matrix product outside the
loop; inside, a step costs two small matmuls and a few fused elementwise ops, and
the backward pass is written by hand (no autograd graph of T·10 nodes), with the
recurrent weight gradients accumulated as a single matmul over all steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def surrogate_heaviside_grad(x: Tensor, width: float, dampening: float) -> Tensor:
    """Triangular pseudo-derivative of H at x: γ·max(0, 1 − |x|/ε)."""
    return dampening * torch.clamp(1.0 - x.abs() / width, min=0.0)


class HeavisideSurrogate(torch.autograd.Function):
    """H(x) forward, triangular pseudo-derivative backward (for standalone use and tests)."""

    @staticmethod
    def forward(ctx, x: Tensor, width: float, dampening: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.width, ctx.dampening = width, dampening
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad * surrogate_heaviside_grad(x, ctx.width, ctx.dampening), None, None


def egru_sequence_reference(
    x_proj: Tensor,
    weight_hh: Tensor,
    threshold: Tensor,
    c0: Tensor,
    y0: Tensor,
    width: float,
    dampening: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Plain-autograd EGRU over a sequence (slow; for gradient checks of the fused version)."""
    hidden = threshold.shape[0]
    w_ur, w_z = weight_hh[: 2 * hidden], weight_hh[2 * hidden :]
    c, y = c0, y0
    ys, cs = [], []
    for t in range(x_proj.shape[0]):
        ur = torch.sigmoid(x_proj[t, :, : 2 * hidden] + y @ w_ur.t())
        u, r = ur[:, :hidden], ur[:, hidden:]
        z = torch.tanh(x_proj[t, :, 2 * hidden :] + (r * y) @ w_z.t())
        c_pre = u * z + (1 - u) * c
        e = HeavisideSurrogate.apply(c_pre - threshold, width, dampening)
        y = c_pre * e
        c = c_pre - threshold * e
        ys.append(y)
        cs.append(c_pre)
    return torch.stack(ys), torch.stack(cs), c, y


class EGRUSequence(torch.autograd.Function):
    """Fused EGRU recurrence: forward loop over time, hand-written backward (BPTT)."""

    @staticmethod
    def forward(ctx, x_proj, weight_hh, threshold, c0, y0, width, dampening):
        steps, batch, three_h = x_proj.shape
        hidden = three_h // 3
        w_ur, w_z = weight_hh[: 2 * hidden], weight_hh[2 * hidden :]
        w_ur_t, w_z_t = w_ur.t(), w_z.t()
        ys = x_proj.new_empty(steps + 1, batch, hidden)  # ys[0] = y0, ys[t+1] = y_t
        cs = x_proj.new_empty(steps + 1, batch, hidden)  # post-reset c, cs[0] = c0
        c_pre_all = x_proj.new_empty(steps, batch, hidden)
        ur_all = x_proj.new_empty(steps, batch, 2 * hidden)
        z_all = x_proj.new_empty(steps, batch, hidden)
        ys[0].copy_(y0)
        cs[0].copy_(c0)
        for t in range(steps):
            y_prev, c_prev = ys[t], cs[t]
            ur = torch.addmm(x_proj[t, :, : 2 * hidden], y_prev, w_ur_t, out=ur_all[t])
            ur.sigmoid_()
            u, r = ur[:, :hidden], ur[:, hidden:]
            z = torch.addmm(x_proj[t, :, 2 * hidden :], r * y_prev, w_z_t, out=z_all[t])
            z.tanh_()
            # ĉ = c_prev + u (z − c_prev)
            c_pre = torch.addcmul(c_prev, u, z - c_prev, out=c_pre_all[t])
            event = c_pre > threshold
            torch.mul(c_pre, event, out=ys[t + 1])
            torch.sub(c_pre, threshold * event, out=cs[t + 1])
        ctx.save_for_backward(weight_hh, threshold, ys, cs, c_pre_all, ur_all, z_all)
        ctx.width, ctx.dampening = width, dampening
        y_seq = ys[1:]
        c_last, y_last = cs[-1].clone(), ys[-1].clone()
        ctx.mark_non_differentiable(c_pre_all)
        return y_seq, c_pre_all, c_last, y_last

    @staticmethod
    def backward(ctx, grad_y_seq, _grad_c_pre, grad_c_last, grad_y_last):
        weight_hh, threshold, ys, cs, c_pre_all, ur_all, z_all = ctx.saved_tensors
        steps, batch, hidden = c_pre_all.shape
        w_ur, w_z = weight_hh[: 2 * hidden], weight_hh[2 * hidden :]
        grad_x = grad_y_seq.new_empty(steps, batch, 3 * hidden)
        r_y_all = grad_y_seq.new_empty(steps, batch, hidden)
        grad_threshold = torch.zeros_like(threshold)
        dy_rec = grad_y_last if grad_y_last is not None else torch.zeros_like(ys[0])
        dc = grad_c_last if grad_c_last is not None else torch.zeros_like(cs[0])
        if grad_y_seq is None:
            grad_y_seq = torch.zeros_like(c_pre_all)
        for t in range(steps - 1, -1, -1):
            y_prev, c_prev, c_pre = ys[t], cs[t], c_pre_all[t]
            ur, z = ur_all[t], z_all[t]
            u, r = ur[:, :hidden], ur[:, hidden:]
            dy = grad_y_seq[t] + dy_rec
            shifted = c_pre - threshold
            event = (shifted > 0).to(c_pre.dtype)
            h_prime = surrogate_heaviside_grad(shifted, ctx.width, ctx.dampening)
            # y = ĉ·e, c = ĉ − θ·e, de/dĉ = H', de/dθ = −H'
            dy_h = dy * h_prime
            dc_h = dc * h_prime
            d_c_pre = dy * event + c_pre * dy_h + dc - threshold * dc_h
            grad_threshold += (threshold * dc_h - c_pre * dy_h - dc * event).sum(0)
            # ĉ = u z + (1 − u) c_prev
            du = d_c_pre * (z - c_prev)
            dz = d_c_pre * u
            dc = d_c_pre - d_c_pre * u
            g = grad_x[t]
            da_z = torch.mul(dz, 1 - z * z, out=g[:, 2 * hidden :])
            r_y = torch.mul(r, y_prev, out=r_y_all[t])
            d_ry = da_z @ w_z
            da_u = torch.mul(du, u * (1 - u), out=g[:, :hidden])
            torch.mul(d_ry * y_prev, r * (1 - r), out=g[:, hidden : 2 * hidden])
            dy_rec = torch.addmm(d_ry * r, g[:, : 2 * hidden], w_ur)
            del r_y, da_u
        flat_g = grad_x.reshape(steps * batch, 3 * hidden)
        grad_w = torch.empty_like(weight_hh)
        torch.mm(flat_g[:, : 2 * hidden].t(), ys[:-1].reshape(-1, hidden), out=grad_w[: 2 * hidden])
        torch.mm(flat_g[:, 2 * hidden :].t(), r_y_all.reshape(-1, hidden), out=grad_w[2 * hidden :])
        return grad_x, grad_w, grad_threshold, dc, dy_rec, None, None


class EGRULayer(nn.Module):
    """One EGRU layer over a [T, B, input_size] sequence.

    Parameters follow torch.nn.GRU's naming (``weight_ih``, ``weight_hh``, gate order
    u, r, z) so that DropConnect and pruning treat all three model types alike.
    The state is the pair (c, y); a zero state is the natural start.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        threshold_init_mean: float = 0.01,
        surrogate_width: float = 1 / 3.6,
        surrogate_dampening: float = 3.6,
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.surrogate_width = surrogate_width
        self.surrogate_dampening = surrogate_dampening
        self.threshold_init_mean = threshold_init_mean
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(3 * hidden_size))
        self.threshold = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in (self.weight_ih, self.weight_hh, self.bias):
            nn.init.uniform_(weight, -bound, bound)
        # Beta(a, 3) with mean threshold_init_mean, as the EvNN reference initialises θ
        mean = self.threshold_init_mean
        with torch.no_grad():
            if 0.0 < mean < 1.0:
                beta = torch.distributions.Beta(
                    torch.tensor(3.0 * mean / (1.0 - mean)), torch.tensor(3.0)
                )
                self.threshold.copy_(beta.sample((self.hidden_size,)))
            else:
                self.threshold.fill_(mean)

    def constrain_(self) -> None:
        """Keep thresholds in [0, 1] after an optimizer step (as the EvNN reference does)."""
        with torch.no_grad():
            self.threshold.clamp_(0.0, 1.0)

    def init_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        zeros = self.weight_hh.new_zeros(batch_size, self.hidden_size)
        return zeros, zeros.clone()

    def forward(
        self,
        x: Tensor,
        state: tuple[Tensor, Tensor] | None = None,
        weight_hh: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor]:
        """Returns (y [T,B,H], (c_T, y_T), pre-reset c [T,B,H], no gradient).

        ``weight_hh`` overrides the recurrent weights for this call (DropConnect).
        """
        if state is None:
            state = self.init_state(x.shape[1])
        c0, y0 = state
        w_hh = self.weight_hh if weight_hh is None else weight_hh
        x_proj = torch.nn.functional.linear(x, self.weight_ih, self.bias)
        y_seq, c_pre, c_last, y_last = EGRUSequence.apply(
            x_proj.contiguous(),
            w_hh,
            self.threshold,
            c0,
            y0,
            self.surrogate_width,
            self.surrogate_dampening,
        )
        return y_seq, (c_last, y_last), c_pre

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, surrogate_width={self.surrogate_width}, "
            f"surrogate_dampening={self.surrogate_dampening}"
        )
