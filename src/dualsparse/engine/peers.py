"""The runtimes a user would pick instead of the engine, stepped one token at a time at
batch 1 with the state fed back: ONNX Runtime and OpenVINO running a dense model exported
by dualsparse, and PyTorch's sparse CSR tensors running the pruned model densely in time.

Each peer is optional (``pip install 'dualsparse[peers]'``); ``missing_peers`` says which
are absent and why, and the benchmark prints that as a skip. A peer's step has the
``DenseStepper`` interface (``step_rnn``, ``step``, ``reset``, ``log_probs``) so the
benchmark times it like any other row, after checking its log-probabilities against the
model's (``PEER_TOLERANCE``).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dualsparse.engine.format import ExportedModel
from dualsparse.engine.peer_graphs import state_shapes, torch_cell

PEER_TOLERANCE = 1e-4  # max |log-prob difference| to the model on the benchmark's tokens
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
