"""An export in memory: the matrices as compressed sparse columns and the dense tensors,
shared by writing and reading (``engine.export``, which documents the files) and by the
kernels' callers. Which tensors an architecture implies, named and shaped, is
``architecture.Architecture``. numpy only."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from dualsparse.architecture import Architecture


@dataclass
class CSCMatrix:
    """A [rows, cols] matrix as compressed sparse columns (see the module docstring)."""

    rows: int
    cols: int
    values: np.ndarray
    row_indices: np.ndarray
    col_ptr: np.ndarray

    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    def column_nnz(self) -> np.ndarray:
        return np.diff(self.col_ptr)

    def to_dense(self) -> np.ndarray:
        dense = np.zeros((self.rows, self.cols), dtype=self.values.dtype)
        cols = np.repeat(np.arange(self.cols), self.column_nnz())
        dense[self.row_indices.astype(np.int64), cols] = self.values
        return dense


def index_dtype(rows: int) -> np.dtype:
    """Unsigned 16-bit row indices halve the index traffic whenever they fit."""
    return np.dtype(np.uint16) if rows <= 65536 else np.dtype(np.int32)


def csc_from_dense(weight: np.ndarray, dtype: type = np.float32) -> CSCMatrix:
    """The exact nonzeros of ``weight``, column by column, rows increasing."""
    weight = np.asarray(weight, dtype=dtype)
    rows, cols = weight.shape
    col_of, row_of = np.nonzero(weight.T)  # sorted by column, then row
    col_ptr = np.zeros(cols + 1, dtype=np.int64)
    np.cumsum(np.bincount(col_of, minlength=cols), out=col_ptr[1:])
    return CSCMatrix(
        rows, cols, weight.T[col_of, row_of].copy(), row_of.astype(index_dtype(rows)), col_ptr
    )


@dataclass
class ExportedModel:
    """A validated export: the header's architecture, the matrices and the dense tensors.
    ``local_state_window`` None: the EGRU's c is carried from token to token; an integer
    L (``model.carry_local_state`` false): c restarts at 0 before tokens 0, L, 2L, …
    counted from the engine's reset, as the model's windows restart it."""

    model_type: str
    emb_size: int
    hidden_sizes: list[int]
    vocab_size: int
    tied: bool
    projection: bool
    itos: list[str]
    matrices: dict[str, CSCMatrix]
    dense: dict[str, np.ndarray]
    header: dict[str, Any]
    reset_after: bool = False
    local_state_window: int | None = None

    @property
    def architecture(self) -> Architecture:
        return Architecture(
            self.model_type,
            self.emb_size,
            self.hidden_sizes,
            self.vocab_size,
            self.tied,
            self.reset_after,
        )

    @property
    def decoder_weight(self) -> np.ndarray:
        return self.dense["embedding"] if self.tied else self.dense["decoder.weight"]


def with_dtype(model: ExportedModel, dtype: type) -> ExportedModel:
    """The same model with float tensors in ``dtype`` (float64: a reference computation whose
    rounding is far below float32's, to compare with a float64 PyTorch model)."""
    matrices = {
        n: CSCMatrix(m.rows, m.cols, m.values.astype(dtype), m.row_indices, m.col_ptr)
        for n, m in model.matrices.items()
    }
    dense = {n: t.astype(dtype) for n, t in model.dense.items()}
    return dataclasses.replace(model, matrices=matrices, dense=dense)


def weight_sparsity(model: ExportedModel) -> float:
    """Fraction of zeros over the pruned (RNN and projection) matrices."""
    total = sum(m.rows * m.cols for m in model.matrices.values())
    return 1.0 - sum(m.nnz for m in model.matrices.values()) / max(total, 1)


def memory_bytes(arrays: list[np.ndarray]) -> int:
    return sum(int(a.nbytes) for a in arrays)
