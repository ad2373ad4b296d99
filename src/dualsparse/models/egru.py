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

``reset_after`` (``model.reset_after``) switches the candidate to the EvNN reference's
z = tanh(W_z x_t + b_z + r * (U_z y_{t-1} + b_hz)) (frameworks/pytorch/egru.py,
``EGRUScript`` line 120; lib/egru_forward_cpu.cc line 69), torch.nn.GRU's form: the reset
gate acts after the recurrent product, which has a bias b_hz of its own. The products
U_z y and U_z (r * y) read the same nonzero inputs, so event MACs are the same.

Speed: the recurrence is one custom autograd Function over the whole sequence.
The input projections W x_t + b of all steps are one matrix product before the
loop; inside, a step costs two small matmuls and a few fused elementwise ops, and
the backward pass is written by hand (no autograd graph of T·10 nodes), with the
recurrent weight gradients accumulated as a single matmul over all steps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dualsparse.models.init import init_rnn_parameters


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
    x: Tensor,
    weight_ih: Tensor,
    bias: Tensor,
    weight_hh: Tensor,
    bias_hz: Tensor | None,
    threshold: Tensor,
    c0: Tensor,
    y0: Tensor,
    width: float,
    dampening: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Plain-autograd EGRU over a sequence (slow; for gradient checks of the fused version).

    ``bias_hz`` None: the paper's candidate tanh(W_z x + U_z (r·y) + b_z); a tensor: the
    reset gate after the recurrent product, tanh(W_z x + b_z + r·(U_z y + b_hz)).
    """
    hidden = threshold.shape[0]
    x_proj = torch.nn.functional.linear(x, weight_ih, bias)
    w_ur, w_z = weight_hh[: 2 * hidden], weight_hh[2 * hidden :]
    c, y = c0, y0
    ys, cs = [], []
    for t in range(x_proj.shape[0]):
        ur = torch.sigmoid(x_proj[t, :, : 2 * hidden] + y @ w_ur.t())
        u, r = ur[:, :hidden], ur[:, hidden:]
        if bias_hz is None:
            z = torch.tanh(x_proj[t, :, 2 * hidden :] + (r * y) @ w_z.t())
        else:
            z = torch.tanh(x_proj[t, :, 2 * hidden :] + r * (y @ w_z.t() + bias_hz))
        c_pre = u * z + (1 - u) * c
        e = HeavisideSurrogate.apply(c_pre - threshold, width, dampening)
        y = c_pre * e
        c = c_pre - threshold * e
        ys.append(y)
        cs.append(c_pre)
    return torch.stack(ys), torch.stack(cs), c, y


class EGRUSequence(torch.autograd.Function):
    """Fused EGRU layer over a sequence: forward loop over time, hand-written backward (BPTT).

    Arguments: x [T,B,I], weight_ih [3H,I], bias [3H], weight_hh [3H,H], bias_hz [H] or
    None (None: the paper's candidate; a tensor: the reference's reset-after candidate),
    threshold [H], c0, y0 [B,H], surrogate width and dampening, and ``max_grad_norm``.

    ``max_grad_norm`` > 0 is the EvNN reference's per-layer clip (frameworks/pytorch/egru.cc,
    egru_backward_cpu, lines 398-425): after the whole window's BPTT, the gradients of the
    layer's parameters and of its initial y are scaled together by min(1, max / (norm + 1e-6)),
    norm their joint L2 norm; the gradient passed to the layer below (dx) is not scaled.
    The gradient of c0 (the reference has none: its c starts at 0) is scaled alike but not
    counted in the norm.
    """

    @staticmethod
    def forward(
        ctx,
        x,
        weight_ih,
        bias,
        weight_hh,
        bias_hz,
        threshold,
        c0,
        y0,
        width,
        dampening,
        max_grad_norm,
    ):
        steps, batch, n_in = x.shape
        hidden = threshold.shape[0]
        reset_after = bias_hz is not None
        x_proj = torch.addmm(bias, x.reshape(steps * batch, n_in), weight_ih.t())
        x_proj = x_proj.view(steps, batch, 3 * hidden)
        w_ur, w_z = weight_hh[: 2 * hidden], weight_hh[2 * hidden :]
        w_ur_t, w_z_t = w_ur.t(), w_z.t()
        ys = x.new_empty(steps + 1, batch, hidden)  # ys[0] = y0, ys[t+1] = y_t
        cs = x.new_empty(steps + 1, batch, hidden)  # post-reset c, cs[0] = c0
        c_pre_all = x.new_empty(steps, batch, hidden)
        ur_all = x.new_empty(steps, batch, 2 * hidden)
        z_all = x.new_empty(steps, batch, hidden)
        # reset-after: U_z y + b_hz of every step (the reset gate's gradient needs it)
        rec_z_all = x.new_empty(steps, batch, hidden) if reset_after else None
        ys[0].copy_(y0)
        cs[0].copy_(c0)
        for t in range(steps):
            y_prev, c_prev = ys[t], cs[t]
            ur = torch.addmm(x_proj[t, :, : 2 * hidden], y_prev, w_ur_t, out=ur_all[t])
            ur.sigmoid_()
            u, r = ur[:, :hidden], ur[:, hidden:]
            if reset_after:
                rec_z = torch.addmm(bias_hz, y_prev, w_z_t, out=rec_z_all[t])
                z = torch.addcmul(x_proj[t, :, 2 * hidden :], r, rec_z, out=z_all[t])
            else:
                z = torch.addmm(x_proj[t, :, 2 * hidden :], r * y_prev, w_z_t, out=z_all[t])
            z.tanh_()
            # ĉ = c_prev + u (z − c_prev)
            c_pre = torch.addcmul(c_prev, u, z - c_prev, out=c_pre_all[t])
            event = c_pre > threshold
            torch.mul(c_pre, event, out=ys[t + 1])
            torch.sub(c_pre, threshold * event, out=cs[t + 1])
        ctx.save_for_backward(
            x, weight_ih, weight_hh, threshold, ys, cs, c_pre_all, ur_all, z_all, rec_z_all
        )
        ctx.width, ctx.dampening, ctx.max_grad_norm = width, dampening, max_grad_norm
        ctx.reset_after = reset_after
        y_seq = ys[1:]
        c_last, y_last = cs[-1].clone(), ys[-1].clone()
        ctx.mark_non_differentiable(c_pre_all)
        return y_seq, c_pre_all, c_last, y_last

    @staticmethod
    def backward(ctx, grad_y_seq, _grad_c_pre, grad_c_last, grad_y_last):
        """BPTT through the window, the forward's steps in reverse. One function on purpose
        (about 85 lines): each step's gradient equations read against the forward's, in one
        place, with the per-layer clip applied to the totals at the end."""
        x, weight_ih, weight_hh, threshold, ys, cs, c_pre_all, ur_all, z_all, rec_z_all = (
            ctx.saved_tensors
        )
        steps, batch, hidden = c_pre_all.shape
        reset_after = ctx.reset_after
        w_ur, w_z = weight_hh[: 2 * hidden], weight_hh[2 * hidden :]
        grad_x_proj = c_pre_all.new_empty(steps, batch, 3 * hidden)
        # per step, the gradient reaching U_z's output and the vector U_z multiplies:
        # paper (da_z, r·y), da_z being grad_x_proj's z part; reset-after (da_z·r, y)
        grad_rec_z = c_pre_all.new_empty(steps, batch, hidden) if reset_after else None
        r_y_all = None if reset_after else c_pre_all.new_empty(steps, batch, hidden)
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
            g = grad_x_proj[t]
            da_z = torch.mul(dz, 1 - z * z, out=g[:, 2 * hidden :])
            torch.mul(du, u * (1 - u), out=g[:, :hidden])
            if reset_after:  # a_z = W_z x + b_z + r·(U_z y + b_hz)
                d_rec = torch.mul(da_z, r, out=grad_rec_z[t])
                dr = da_z * rec_z_all[t]
                dy_rec = d_rec @ w_z
            else:  # a_z = W_z x + b_z + U_z (r·y)
                torch.mul(r, y_prev, out=r_y_all[t])
                d_ry = da_z @ w_z
                dr = d_ry * y_prev
                dy_rec = d_ry * r
            torch.mul(dr, r * (1 - r), out=g[:, hidden : 2 * hidden])
            dy_rec = torch.addmm(dy_rec, g[:, : 2 * hidden], w_ur)
        flat_g = grad_x_proj.reshape(steps * batch, 3 * hidden)
        y_prevs = ys[:-1].reshape(-1, hidden)
        grad_w_hh = torch.empty_like(weight_hh)
        torch.mm(flat_g[:, : 2 * hidden].t(), y_prevs, out=grad_w_hh[: 2 * hidden])
        if reset_after:
            grad_z_rows, z_input = grad_rec_z.reshape(-1, hidden), y_prevs
        else:
            grad_z_rows, z_input = flat_g[:, 2 * hidden :], r_y_all.reshape(-1, hidden)
        torch.mm(grad_z_rows.t(), z_input, out=grad_w_hh[2 * hidden :])
        grad_bias_hz = grad_rec_z.sum((0, 1)) if reset_after else None
        grad_w_ih = flat_g.t() @ x.reshape(steps * batch, -1)
        grad_bias = flat_g.sum(0)
        grad_x = (flat_g @ weight_ih).view_as(x) if ctx.needs_input_grad[0] else None
        if ctx.max_grad_norm > 0:
            counted = [grad_w_ih, grad_bias, grad_w_hh, grad_threshold, dy_rec]
            if reset_after:
                counted.append(grad_bias_hz)
            norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in counted]))
            scale = torch.clamp(ctx.max_grad_norm / (norm + 1e-6), max=1.0)
            grad_w_ih, grad_bias, grad_w_hh, grad_threshold, dy_rec, dc = (
                g * scale for g in (grad_w_ih, grad_bias, grad_w_hh, grad_threshold, dy_rec, dc)
            )
            if reset_after:
                grad_bias_hz = grad_bias_hz * scale
        return (
            grad_x,
            grad_w_ih,
            grad_bias,
            grad_w_hh,
            grad_bias_hz,
            grad_threshold,
            dc,
            dy_rec,
            None,
            None,
            None,
        )


class EGRULayer(nn.Module):
    """One EGRU layer over a [T, B, input_size] sequence.

    Parameters follow torch.nn.GRU's naming (``weight_ih``, ``weight_hh``, gate order
    u, r, z) so that DropConnect and pruning treat all three model types alike.
    The state is the pair (c, y); a zero state is the natural start.

    ``reset_after`` gives the candidate the EvNN reference's form (and torch.nn.GRU's),
    tanh(W_z x + b_z + r·(U_z y + b_hz)), with a recurrent bias ``bias_hz`` [H] of its
    own; False keeps the paper's tanh(W_z x + U_z (r·y) + b_z). ``layer_grad_clip`` > 0
    is the reference's per-layer clip of this layer's gradients (see ``EGRUSequence``).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        threshold_init_mean: float = 0.01,
        surrogate_width: float = 1 / 3.6,
        surrogate_dampening: float = 3.6,
        reset_after: bool = False,
        layer_grad_clip: float = 0.0,
        weight_init: str = "uniform",
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.surrogate_width = surrogate_width
        self.surrogate_dampening = surrogate_dampening
        self.threshold_init_mean = threshold_init_mean
        self.reset_after, self.layer_grad_clip = reset_after, layer_grad_clip
        self.weight_init = weight_init
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(3 * hidden_size))
        self.threshold = nn.Parameter(torch.empty(hidden_size))
        if reset_after:
            self.bias_hz = nn.Parameter(torch.empty(hidden_size))
        else:
            self.register_parameter("bias_hz", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_rnn_parameters(
            (self.weight_ih, self.weight_hh, self.bias), self.hidden_size, self.weight_init
        )
        # Beta(a, 3) with mean threshold_init_mean, as the EvNN reference initialises θ
        # (frameworks/pytorch/egru.py lines 306-311)
        mean = self.threshold_init_mean
        with torch.no_grad():
            if 0.0 < mean < 1.0:
                beta = torch.distributions.Beta(
                    torch.tensor(3.0 * mean / (1.0 - mean)), torch.tensor(3.0)
                )
                self.threshold.copy_(beta.sample((self.hidden_size,)))
            else:
                self.threshold.fill_(mean)
        if self.bias_hz is not None:  # drawn last: the default layer's stream stays as it was
            init_rnn_parameters((self.bias_hz,), self.hidden_size, self.weight_init)

    def constrain_(self) -> None:
        """Keep thresholds in [0, 1] after an optimizer step (the EvNN reference clamps them
        before every forward, frameworks/pytorch/egru.py line 409)."""
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
        y_seq, c_pre, c_last, y_last = EGRUSequence.apply(
            x,
            self.weight_ih,
            self.bias,
            w_hh,
            self.bias_hz,
            self.threshold,
            c0,
            y0,
            self.surrogate_width,
            self.surrogate_dampening,
            self.layer_grad_clip,
        )
        return y_seq, (c_last, y_last), c_pre

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, surrogate_width={self.surrogate_width}, "
            f"surrogate_dampening={self.surrogate_dampening}, reset_after={self.reset_after}, "
            f"layer_grad_clip={self.layer_grad_clip}"
        )
