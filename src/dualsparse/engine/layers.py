"""A recurrent layer of the engine: its matrices as kernel arguments, its state, scratch and
counts; on one thread (``Layer``) or with its units split over threads (``ShardedLayer``)."""

from __future__ import annotations

import numpy as np

from dualsparse.engine import kernels, kernels_sharded
from dualsparse.engine.format import CSCMatrix, ExportedModel, csc_from_dense


class Layer:
    """One recurrent layer: its matrices as kernel arguments, its state and scratch."""

    kernels = {
        "egru": kernels.egru_step,
        "egru_reset_after": kernels.egru_reset_after_step,
        "lstm": kernels.lstm_step,
        "gru": kernels.gru_step,
    }

    def __init__(self, model: ExportedModel, index: int) -> None:
        kind, hidden = model.model_type, model.hidden_sizes[index]
        self.kind, self.hidden, self.name = kind, hidden, f"layer{index}"
        self.reset_after = model.reset_after
        # W_ih, then the recurrent products in the order the kernel takes them
        self.products = model.architecture.layer_products(index)
        m, d = model.matrices, model.dense
        self.w_ih, *self.recurrent = (m[p.name] for p in self.products)
        if kind == "egru":
            self.base, self.threshold = d[f"layer{index}.bias"], d[f"layer{index}.threshold"]
            self.bias_hz = d.get(f"layer{index}.bias_hz")  # reset-after only
        elif kind == "lstm":
            self.base = d[f"layer{index}.bias_ih"] + d[f"layer{index}.bias_hh"]
        else:
            self.base, self.bias_hh = d[f"layer{index}.bias_ih"], d[f"layer{index}.bias_hh"]
        self.dtype = dtype = self.w_ih.values.dtype
        self.out = np.zeros(hidden, dtype=dtype)  # y (EGRU) or h
        self.cell = np.zeros(hidden, dtype=dtype)  # c (EGRU, LSTM)
        self.active = np.zeros(hidden, dtype=np.int64)
        self._allocate()
        # the kernel takes (base, x, x_active, n_x, n_active) per token, then these
        variant = "egru_reset_after" if self.reset_after else kind
        self.kernel = self.kernels[variant]
        cell = {
            "egru": ("threshold", "cell"),
            "egru_reset_after": ("bias_hz", "threshold", "cell"),
            "lstm": ("cell",),
            "gru": ("bias_hh",),
        }[variant]
        self.arguments = (
            *self.csc,
            *(getattr(self, name) for name in cell),
            self.out,
            self.active,
            *self._scratch(),
            self.stats,
        )
        self.reset()

    def _allocate(self) -> None:
        """Scratch, counts and the matrices as (values, row_indices, col_ptr)."""
        gates = self.w_ih.rows
        self.acc = np.zeros(gates, dtype=self.dtype)
        self.scratch = np.zeros(gates if self.kind == "gru" else self.hidden, dtype=self.dtype)
        self.stats = np.zeros(kernels.LAYER_STATS, dtype=np.int64)
        self.csc = [(w.values, w.row_indices, w.col_ptr) for w in (self.w_ih, *self.recurrent)]

    def _scratch(self) -> tuple[np.ndarray, ...]:
        """``acc``, then EGRU r ⊙ y_{t-1} (reset-after: U_z·y + b_hz) or GRU W_hh·h + b_hh
        (kernels.*_step)."""
        return (self.acc,) if self.kind == "lstm" else (self.acc, self.scratch)

    def reset(self) -> None:
        """Zero state and counts (the start of a text)."""
        self.out[:] = 0.0
        self.cell[:] = 0.0
        self.stats[:] = 0
        self.n_active = 0
        self.active_outputs = 0

    def reset_local_state(self) -> None:
        """c = 0, y kept: a window start under ``carry_local_state`` false (EGRU)."""
        self.cell[:] = 0.0

    def total_stats(self) -> np.ndarray:
        """``stats`` (laid out as ``kernels.LAYER_STATS`` says), summed over shards if the
        layer has them."""
        return np.atleast_2d(self.stats).sum(axis=0)

    def step(self, base: np.ndarray, x: np.ndarray, x_active: np.ndarray, n_x: int) -> int:
        n = self.kernel(base, x, x_active, n_x, self.n_active, *self.arguments)
        self.n_active = n
        self.active_outputs += n
        return n


def shard_bounds(size: int, shards: int) -> np.ndarray:
    """Split 0..size into ``shards`` contiguous ranges as equal as possible."""
    return np.linspace(0, size, shards + 1).round().astype(np.int64)


def shard_rows(matrix: CSCMatrix, blocks: int, bounds: np.ndarray) -> tuple[np.ndarray, ...]:
    """The rows of each shard (its units in every gate block), as CSC columns sharing one
    values/row-indices array; col_ptr [shards, cols + 1] points into it."""
    dense, hidden = matrix.to_dense(), matrix.rows // blocks
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        rows = np.concatenate([np.arange(g * hidden + lo, g * hidden + hi) for g in range(blocks)])
        parts.append(csc_from_dense(dense[rows], dense.dtype))
    offsets = np.cumsum([0] + [p.nnz for p in parts])
    col_ptr = np.stack([p.col_ptr + offset for p, offset in zip(parts, offsets, strict=False)])
    return (
        np.concatenate([p.values for p in parts]),
        np.concatenate([p.row_indices for p in parts]),
        col_ptr,
    )


class ShardedLayer(Layer):
    """A layer whose units are split over ``shards`` threads (kernels_sharded.*_step_sharded)."""

    kernels = {
        "egru": kernels_sharded.egru_step_sharded,
        "egru_reset_after": kernels_sharded.egru_reset_after_step_sharded,
        "lstm": kernels_sharded.lstm_step_sharded,
        "gru": kernels_sharded.gru_step_sharded,
    }

    def __init__(self, model: ExportedModel, index: int, shards: int) -> None:
        self.bounds = shard_bounds(model.hidden_sizes[index], shards)
        super().__init__(model, index)

    def _allocate(self) -> None:
        shards, widest = len(self.bounds) - 1, int(np.diff(self.bounds).max())
        gates = self.w_ih.rows // self.hidden
        self.acc = np.zeros((shards, gates * widest), dtype=self.dtype)
        self.acc_hh = np.zeros((shards, gates * widest), dtype=self.dtype)  # GRU: W_hh h + b
        # EGRU r ⊙ y, else (reset-after EGRU too) h_{t-1}
        self.scratch = np.zeros(self.hidden, dtype=self.dtype)
        self.r_pre = np.zeros(self.hidden, dtype=self.dtype)  # EGRU: r's pre-activation
        self.shard_active = np.zeros((shards, widest), dtype=np.int64)
        self.shard_n = np.zeros(shards, dtype=np.int64)
        self.sync = np.zeros(kernels_sharded.sync_size(shards), dtype=np.int64)
        self.stats = np.zeros((shards, kernels.LAYER_STATS), dtype=np.int64)  # a row per shard
        blocks = [w.rows // self.hidden for w in (self.w_ih, *self.recurrent)]  # gate blocks
        self.csc = [
            shard_rows(w, b, self.bounds)
            for w, b in zip((self.w_ih, *self.recurrent), blocks, strict=True)
        ]

    def _scratch(self) -> tuple:
        shards = (self.bounds, self.shard_active, self.shard_n, self.sync)
        if self.reset_after:  # acc_hh [S, 3 · widest] holds U_z·y + b_hz in its first block
            return (self.acc, self.acc_hh, self.scratch, shards)
        per_cell = {
            "egru": (self.scratch, self.r_pre),
            "lstm": (self.scratch,),
            "gru": (self.acc_hh, self.scratch),
        }
        return (self.acc, *per_cell[self.kind], shards)
