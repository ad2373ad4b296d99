"""The dense models' one-token step in plain torch ops, shared by the peers, and its
ONNX export.

Export. torch.onnx traces ``StepGraph``: one token of a ``DenseStepper``'s model, inputs
``token`` and the state, outputs the next state (and the log-probabilities). Two forms:
plain (matrix-vector products and the cell's elementwise ops, every cell type), and for an
LSTM or GRU fused: each layer a ``torch.nn.LSTM`` / ``GRU`` that torch.onnx writes as ONNX's
``LSTM`` / ``GRU`` operator (an EGRU has no operator of its own).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

# the cell types with an ONNX operator of their own (ONNX operators: LSTM, GRU); an EGRU
# has none
FUSED_OPS = {"lstm": "LSTM", "gru": "GRU"}


def torch_cell(kind: str, gi: Any, state: list, recurrent, b_hh: Any) -> list:
    """One step of a cell in plain torch ops, PyTorch's gate order (see DEVELOPERS.md):
    ``gi`` = W_ih·x + b, ``recurrent(part, v)`` = the rows ``part`` ("all", "ur", "z") of
    the recurrent weights times ``v``; returns the new state (h, c) / (h,) / (y, c)."""
    import torch

    if kind == "lstm":
        h, c = state
        hidden = h.shape[0]
        gates = gi + recurrent("all", h)
        i, f = torch.sigmoid(gates[:hidden]), torch.sigmoid(gates[hidden : 2 * hidden])
        g, o = torch.tanh(gates[2 * hidden : 3 * hidden]), torch.sigmoid(gates[3 * hidden :])
        c = f * c + i * g
        return [o * torch.tanh(c), c]
    if kind == "gru":
        (h,) = state
        hidden = h.shape[0]
        gh = recurrent("all", h) + b_hh
        rz = torch.sigmoid(gi[: 2 * hidden] + gh[: 2 * hidden])
        n = torch.tanh(gi[2 * hidden :] + rz[:hidden] * gh[2 * hidden :])
        return [n + rz[hidden:] * (h - n)]
    y, c, threshold = *state, b_hh
    hidden = y.shape[0]
    ur = torch.sigmoid(gi[: 2 * hidden] + recurrent("ur", y))
    z = torch.tanh(gi[2 * hidden :] + recurrent("z", ur[hidden:] * y))
    c_pre = c + ur[:hidden] * (z - c)
    event = (c_pre > threshold).to(c_pre.dtype)  # eq. for y_t, c_t in DEVELOPERS.md
    return [c_pre * event, c_pre - threshold * event]


def state_shapes(model_type: str, hidden_sizes: list[int]) -> list[tuple[int]]:
    per_layer = 1 if model_type == "gru" else 2
    return [(h,) for h in hidden_sizes for _ in range(per_layer)]


def _matvec(weight: Any, v: Any) -> Any:
    """W·v as a [1, K] × Wᵀ product (nn.Linear's form): exported as a MatMul of a 2-D input
    by a constant Wᵀ, which ONNX Runtime prepacks once. Written as W @ v (a 1-D right
    operand) it ran the dense AWD-LSTM at ~130 ms per token instead of a few."""
    import torch

    return torch.nn.functional.linear(v.unsqueeze(0), weight).squeeze(0)


def _fused_layer(kind: str, layer: dict) -> Any:
    """A one-layer ``torch.nn.LSTM`` / ``torch.nn.GRU`` holding a DenseStepper layer's
    weights; torch.onnx exports it as ONNX's fused ``LSTM`` / ``GRU`` operator, reordering
    the gates (PyTorch i, f, g, o; ONNX i, o, f, c) and splitting the bias into Wb and Rb
    itself (a GRU with ``linear_before_reset=1``, torch.nn.GRU's candidate)."""
    import torch

    hidden, n_in = layer["h"].shape[0], layer["w_ih"].shape[1]
    module = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(n_in, hidden)
    with torch.no_grad():
        module.weight_ih_l0.copy_(layer["w_ih"])
        module.weight_hh_l0.copy_(layer["w_hh"])
        module.bias_ih_l0.copy_(layer["b"])
        # the LSTM stepper has one bias (b_ih + b_hh in one); the GRU's b_hh is gated by r
        module.bias_hh_l0.copy_(layer["b_hh"] if kind == "gru" else torch.zeros_like(layer["b"]))
    return module


def _stepper_graph(stepper: Any, full: bool, fused: bool = False) -> Any:
    """``StepGraph`` of a DenseStepper's weights (and its first-layer table, if any);
    ``fused``: LSTM and GRU layers as ONNX's fused operators (``FUSED_OPS``), except a first
    layer fed by the table (the operator computes its own W_ih·x, so that layer keeps the
    plain form)."""
    import torch

    kind, per = stepper.model_type, 1 if stepper.model_type == "gru" else 2
    table = stepper.table

    class StepGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fused = torch.nn.ModuleDict(
                {
                    str(index): _fused_layer(kind, layer)
                    for index, layer in enumerate(stepper.layers)
                    if fused and not (index == 0 and table is not None)
                }
            )

        def forward(self, token: Any, *state: Any) -> tuple:
            x = stepper.embedding[token[0]] if table is None else table[token[0]]
            new_state = []
            for index, layer in enumerate(stepper.layers):
                layer_state = list(state[per * index : per * (index + 1)])
                if str(index) in self.fused:
                    out = _fused_step(self.fused[str(index)], x, layer_state)
                else:
                    out = _plain_step(kind, layer, x, layer_state, index == 0 and table is not None)
                new_state += out
                x = out[0]
            if not full:
                return tuple(new_state)
            if stepper.projection is not None:
                x = _matvec(stepper.projection, x)
            logits = _matvec(stepper.embedding, x) + stepper.decoder_bias
            return (*new_state, logits - torch.logsumexp(logits, 0))

    return StepGraph().eval()


def _fused_step(module: Any, x: Any, state: list) -> list:
    """One step of a torch.nn.LSTM / GRU: sequence length 1, batch 1, the state fed in."""
    shaped = [s.view(1, 1, -1) for s in state]
    _, new = module(x.view(1, 1, -1), tuple(shaped) if len(shaped) == 2 else shaped[0])
    return [s.view(-1) for s in (new if isinstance(new, tuple) else (new,))]


def _plain_step(kind: str, layer: dict, x: Any, state: list, from_table: bool) -> list:
    """One step of a layer as matrix-vector products and elementwise ops (``torch_cell``)."""
    w_hh, hidden = layer["w_hh"], layer["h"].shape[0]
    parts = {"all": w_hh, "ur": w_hh[: 2 * hidden], "z": w_hh[2 * hidden :]}
    gi = x if from_table else _matvec(layer["w_ih"], x) + layer["b"]
    extra = layer["threshold"] if kind == "egru" else layer["b_hh"]
    return torch_cell(kind, gi, state, lambda p, v: _matvec(parts[p], v), extra)


def export_onnx(stepper: Any, path: Path, full: bool, fused: bool = False) -> Path:
    """The stepper's one-token graph as ONNX (the TorchScript exporter: no onnxscript
    needed, and one matrix-vector product stays one MatMul node); ``fused``: LSTM and GRU
    layers as ONNX's ``LSTM`` / ``GRU`` operators (only for those types, ``FUSED_OPS``)."""
    import torch

    if fused and stepper.model_type not in FUSED_OPS:
        raise ValueError(f"ONNX has no operator for a {stepper.model_type} layer")
    shapes = state_shapes(stepper.model_type, [layer["h"].shape[0] for layer in stepper.layers])
    names = [f"s{i}" for i in range(len(shapes))]
    inputs = (torch.zeros(1, dtype=torch.int64), *(torch.zeros(s) for s in shapes))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's
        # "batch_size other than 1 ... define the initial states as inputs": both are so
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size")
        # torch.nn.LSTM / GRU check the state's shape in Python; the shapes are fixed here
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            _stepper_graph(stepper, full, fused),
            inputs,
            str(path),
            input_names=["token", *names],
            output_names=[f"{n}_out" for n in names] + (["log_probs"] if full else []),
            dynamo=False,
        )
    return path
