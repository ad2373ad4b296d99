"""The runtimes a user would pick instead of the engine, stepped one token at a time at
batch 1 with the state fed back: ONNX Runtime and OpenVINO running a dense model exported
by dualsparse, and PyTorch's sparse CSR tensors running the pruned model densely in time.

Each peer is optional (``pip install 'dualsparse[peers]'``); ``missing_peers`` says which
are absent and why, and the benchmark prints that as a skip. A peer's step has the
``DenseStepper`` interface (``step_rnn``, ``step``, ``reset``, ``log_probs``) so the
benchmark times it like any other row, after checking its log-probabilities against the
model's (``PEER_TOLERANCE``).

Export. torch.onnx traces ``StepGraph``: one token of a ``DenseStepper``'s model, inputs
``token`` and the state, outputs the next state (and the log-probabilities). Two forms:
plain (matrix-vector products and the cell's elementwise ops, every cell type), and for an
LSTM or GRU fused: each layer a ``torch.nn.LSTM`` / ``GRU`` that torch.onnx writes as ONNX's
``LSTM`` / ``GRU`` operator (an EGRU has no operator of its own).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dualsparse.engine.format import ExportedModel

PEER_TOLERANCE = 1e-4  # max |log-prob difference| to the model on the benchmark's tokens
# the cell types with an ONNX operator of their own (ONNX operators: LSTM, GRU); an EGRU
# has none
FUSED_OPS = {"lstm": "LSTM", "gru": "GRU"}
PEER_MODULES = {
    "ONNX Runtime": ("onnxruntime", "onnx"),
    "OpenVINO": ("openvino", "onnx"),
}
DEEPSPARSE_NOTE = (
    "not run: end of life since June 2025, its last release (1.9.0) refuses to install; "
    "the last installable one (1.8.0) requires onnx<1.15 where the peers extra requires "
    "onnx>=1.16 (and numpy<2 through sparsezoo 1.8.1), and onnx 1.14 knows opsets up to "
    "19 where our exported graphs declare 20 (docs/engine.md)"
)


def missing_peers() -> dict[str, str]:
    """Peer name -> why it cannot run here (absent modules); empty when all can."""
    missing = {}
    for peer, modules in PEER_MODULES.items():
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        if absent:
            missing[peer] = f"{', '.join(absent)} not installed (pip install 'dualsparse[peers]')"
    return missing


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


class _StatefulRunner:
    """Shared bookkeeping of the ONNX peers: the state, the token buffer, the two graphs."""

    def __init__(self, shapes: list[tuple[int]]) -> None:
        self.state = [np.zeros(s, dtype=np.float32) for s in shapes]
        self.token = np.zeros(1, dtype=np.int64)
        self.names = [f"s{i}" for i in range(len(shapes))]
        self.last_log_probs: np.ndarray | None = None

    def reset(self) -> None:
        for s in self.state:
            s[:] = 0

    def log_probs(self, token: int) -> np.ndarray:
        self.step(token)
        return np.array(self.last_log_probs)


class OrtStepper(_StatefulRunner):
    """ONNX Runtime, configured as its performance-tuning guide advises for one small model
    at batch 1 on a CPU: ``intra_op_num_threads`` = the row's threads, ``inter_op`` 1,
    sequential execution, ``ORT_ENABLE_ALL``; with ``io_binding`` the state lives in two
    preallocated buffers that the graph reads and writes in turn (no output allocation)."""

    def __init__(self, graphs: dict[str, Path], shapes: list, threads: int, io_binding: bool):
        import onnxruntime as ort

        super().__init__(shapes)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sessions = {
            part: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
            for part, p in graphs.items()
        }
        self.io_binding = io_binding
        if io_binding:
            self._bind(ort, shapes)

    def _bind(self, ort: Any, shapes: list) -> None:
        self.other = [np.zeros(s, dtype=np.float32) for s in shapes]
        self.full_out = np.zeros(self.sessions["full"].get_outputs()[-1].shape, np.float32)
        ov = ort.OrtValue.ortvalue_from_numpy
        token = ov(self.token)
        self.bindings: dict[str, list] = {}
        for part, session in self.sessions.items():
            pair = []
            for src, dst in ((self.state, self.other), (self.other, self.state)):
                binding = session.io_binding()
                binding.bind_ortvalue_input("token", token)
                for name, a, b in zip(self.names, src, dst, strict=True):
                    binding.bind_ortvalue_input(name, ov(a))
                    binding.bind_ortvalue_output(f"{name}_out", ov(b))
                if part == "full":
                    binding.bind_ortvalue_output("log_probs", ov(self.full_out))
                pair.append(binding)
            self.bindings[part] = pair
        self.parity = 0

    def reset(self) -> None:
        super().reset()
        if self.io_binding:
            for s in self.other:
                s[:] = 0

    def _run(self, part: str, token: int) -> None:
        self.token[0] = token
        session = self.sessions[part]
        if self.io_binding:
            session.run_with_iobinding(self.bindings[part][self.parity])
            self.parity ^= 1
            # the next step reads the buffers just written, so both sets stay in step
            if part == "full":
                self.last_log_probs = self.full_out
            return
        feeds = {"token": self.token, **dict(zip(self.names, self.state, strict=True))}
        out = session.run(None, feeds)
        for s, new in zip(self.state, out, strict=False):
            s[:] = new
        if part == "full":
            self.last_log_probs = out[-1]

    def step_rnn(self, token: int) -> None:
        self._run("rnn", token)

    def step(self, token: int) -> None:
        self._run("full", token)

    def current_state(self) -> list[np.ndarray]:
        return self.other if self.io_binding and self.parity else self.state


class OpenVinoStepper(_StatefulRunner):
    """OpenVINO on the same ONNX graphs: the CPU plugin with the LATENCY hint, one stream,
    ``INFERENCE_NUM_THREADS`` = the row's threads, and f32 inference precision (on a CPU
    with bf16 support it would otherwise compute in bf16 and fail the check); the inputs
    are shared with the plugin, not copied, and the new state is copied back into them."""

    def __init__(self, graphs: dict[str, Path], shapes: list, threads: int):
        import openvino as ov

        super().__init__(shapes)
        core = ov.Core()
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads),
            "INFERENCE_PRECISION_HINT": "f32",
        }
        self.requests = {
            part: core.compile_model(str(p), "CPU", config).create_infer_request()
            for part, p in graphs.items()
        }
        self.feeds = {"token": self.token, **dict(zip(self.names, self.state, strict=True))}

    def _run(self, part: str, token: int) -> None:
        self.token[0] = token
        request = self.requests[part]
        request.infer(self.feeds, share_inputs=True)
        for index, s in enumerate(self.state):
            s[:] = request.get_output_tensor(index).data
        if part == "full":
            self.last_log_probs = request.get_output_tensor(len(self.state)).data

    def step_rnn(self, token: int) -> None:
        self._run("rnn", token)

    def step(self, token: int) -> None:
        self._run("full", token)


class SparseCsrStepper:
    """The pruned model in PyTorch's sparse CSR tensors, every product computed for every
    input (dense in time, sparse in weights): what a PyTorch user does with a pruned model.
    The first-layer table, if asked for, is the same W_ih·E + b as the engine's."""

    def __init__(self, model: ExportedModel, input_table: bool = False) -> None:
        import torch

        def csr(name: str) -> Any:
            """int32 indices, as torch's docs (Tensor.crow_indices) ask for MKL routines:
            with int64 ones every product first copied both index arrays to int32 (torch
            links MKL's LP64 interface), 3-5x the time of a paper-size matrix-vector
            product."""
            m = model.matrices[name]
            with warnings.catch_warnings():  # "sparse CSC tensor support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                return torch.sparse_csc_tensor(
                    torch.from_numpy(m.col_ptr.astype(np.int32)),
                    torch.from_numpy(m.row_indices.astype(np.int32)),
                    torch.from_numpy(m.values),
                    size=(m.rows, m.cols),
                ).to_sparse_csr()

        dense = {k: torch.from_numpy(v) for k, v in model.dense.items()}
        self.torch, self.kind = torch, model.model_type
        self.embedding = dense["embedding"]
        self.decoder = torch.from_numpy(np.ascontiguousarray(model.decoder_weight))
        self.decoder_bias = dense["decoder.bias"]
        self.projection = csr("projection") if "projection" in model.matrices else None
        self.layers = []
        for index in range(len(model.hidden_sizes)):
            p = f"layer{index}."
            if self.kind == "egru":
                b, extra = dense[p + "bias"], dense[p + "threshold"]
                parts = {"ur": csr(p + "U_ur"), "z": csr(p + "U_z")}
            else:
                b, extra = dense[p + "bias_ih"], dense[p + "bias_hh"]
                parts = {"all": csr(p + "W_hh")}
                if self.kind == "lstm":  # PyTorch's LSTM adds both biases to the gates
                    b, extra = b + extra, None
            self.layers.append((csr(p + "W_ih"), b, parts, extra))
        self.table = None
        if input_table:
            w_ih, b = self.layers[0][:2]
            self.table = (w_ih @ self.embedding.T).T.contiguous() + b
        self.shapes = state_shapes(self.kind, model.hidden_sizes)
        self.reset()

    def reset(self) -> None:
        self.state = [self.torch.zeros(s) for s in self.shapes]

    def step_rnn(self, token: int) -> Any:
        torch, per = self.torch, 1 if self.kind == "gru" else 2
        x = self.embedding[token] if self.table is None else self.table[token]
        new_state = []
        for index, (w_ih, b, parts, extra) in enumerate(self.layers):
            if index == 0 and self.table is not None:
                gi = x
            else:
                gi = torch.addmv(b, w_ih, x)
            layer_state = self.state[per * index : per * (index + 1)]
            out = torch_cell(self.kind, gi, layer_state, lambda p, v, q=parts: q[p] @ v, extra)
            new_state += out
            x = out[0]
        self.state = new_state
        return x

    def step(self, token: int) -> Any:
        x = self.step_rnn(token)
        if self.projection is not None:
            x = self.projection @ x
        self.logits = self.torch.addmv(self.decoder_bias, self.decoder, x)
        return self.torch.logsumexp(self.logits, 0)

    def log_probs(self, token: int) -> np.ndarray:
        lse = self.step(token)
        return (self.logits - lse).numpy()
