"""Exact multiply-accumulate (MAC) accounting: dense, weight-sparse and event-driven.

For one product W·a an event-driven machine works only where an input a_j is
nonzero *and* a weight W_ij is nonzero (DEVELOPERS.md, "Cost = MACs"), so the
exact cost of the product is

    event MACs = Σ_j [a_j ≠ 0] · nnz(W[:, j])

Mukherji et al. (2023) estimate it as λ_a · λ_w · dense, with λ_a the fraction of
nonzero inputs (activity) and λ_w the fraction of nonzero weights (density). That
assumes *which* inputs are active is independent of *which* columns survived
pruning; here both are measured and ``exact_over_estimate`` says how far the
assumption is off (> 1: active inputs tend to meet denser columns).

The products (names, weight rows, shapes, which input each reads) are those of
``architecture.Architecture``: per layer W_ih and the recurrent ones (LSTM/GRU
W_hh; EGRU U_ur and U_z, which read the same activity), then projection and
decoder (dense in practice, but measured like every other input).

The previous output at the first step of a window is the last output of the
previous window (the carried state), zeros at the start of the split. Biases,
gate nonlinearities and elementwise products are not counted. The paper's totals
(20.2M MACs/token for the AWD-LSTM) cover the recurrent layers only: that is the
``rnn`` total here; ``full`` adds projection and decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dualsparse.architecture import CELLS, Architecture, Product
from dualsparse.errors import DualsparseError
from dualsparse.evaluation import DEFAULT_BPTT, walk_split
from dualsparse.models.lm import LanguageModel

NOTE = "biases not counted (nor nonlinearities and elementwise products)"


def column_nnz(weight: Tensor) -> Tensor:
    """Nonzero weights per column (per input unit), int64 [in]."""
    return (weight != 0).sum(dim=0)


def event_macs_from_counts(active_per_column: Tensor, col_nnz: Tensor) -> int:
    """Σ_j (how often input j was nonzero) · nnz(W[:, j]), exactly, in int64."""
    return int((active_per_column.to(torch.int64) * col_nnz.to(torch.int64)).sum())


def event_macs(active: Tensor, col_nnz: Tensor) -> int:
    """Exact event-driven MACs of N products W·a_n, ``active`` = [a_nj ≠ 0] as [N, in]."""
    return event_macs_from_counts(active.sum(dim=0, dtype=torch.int64), col_nnz)


def _products(
    model_type: str,
    emb_size: int,
    hidden_sizes: list[int],
    vocab_size: int | None,
    projection: bool,
) -> list[Product]:
    """The products of ``architecture.Architecture``; a model without a projection whose
    last layer differs in size from the embedding has an untied decoder."""
    tied = projection or hidden_sizes[-1] == emb_size
    return Architecture(model_type, emb_size, hidden_sizes, vocab_size, tied).products()


@dataclass
class MacRow:
    """Counts of one product over a split; per-token values and λ's are derived from them."""

    name: str
    rows: int
    cols: int
    recurrent: bool
    tokens: int = 0  # 0: a described model, nothing measured
    weight_nonzero: int | None = None
    active_inputs: int | None = None  # Σ over tokens of the nonzero input entries
    event_macs_total: int | None = None

    @property
    def dense_macs_per_token(self) -> int:
        return self.rows * self.cols

    def to_dict(self) -> dict[str, Any]:
        dense = self.dense_macs_per_token
        row: dict[str, Any] = {
            "name": self.name,
            "shape": [self.rows, self.cols],
            "part": "rnn" if self.recurrent else "head",
            "dense_macs_per_token": dense,
        }
        if not self.tokens:
            return row
        activity = self.active_inputs / (self.tokens * self.cols)
        density = self.weight_nonzero / dense
        estimate = activity * density * dense  # the paper's λ_a · λ_w · dense
        exact = self.event_macs_total / self.tokens
        row.update(
            weight_nonzero=self.weight_nonzero,
            weight_density=density,
            weight_sparse_macs_per_token=self.weight_nonzero,
            activity=activity,
            estimated_macs_per_token=estimate,
            event_macs_per_token=exact,
            event_macs_total=self.event_macs_total,
            exact_over_estimate=exact / estimate if estimate else None,
        )
        return row


@dataclass
class MacReport:
    model_type: str
    emb_size: int
    hidden_sizes: list[int]
    vocab_size: int | None
    rows: list[MacRow]
    tokens: int = 0  # tokens measured; 0 for a described model

    def totals(self, part: str = "rnn") -> dict[str, Any] | None:
        """Sums over the recurrent layers (``rnn``, the paper's convention) or all products
        (``full``); None for ``full`` when the head was not counted."""
        if part not in ("rnn", "full"):
            raise ValueError(f"part must be 'rnn' or 'full', not {part!r}")
        rows = [r for r in self.rows if r.recurrent or part == "full"]
        if part == "full" and all(r.recurrent for r in self.rows):
            return None
        total: dict[str, Any] = {"dense_macs_per_token": sum(r.dense_macs_per_token for r in rows)}
        if self.tokens:
            dicts = [r.to_dict() for r in rows]
            exact = sum(r.event_macs_total for r in rows)
            estimate = sum(d["estimated_macs_per_token"] for d in dicts)
            total.update(
                weight_sparse_macs_per_token=sum(r.weight_nonzero for r in rows),
                estimated_macs_per_token=estimate,
                event_macs_per_token=exact / self.tokens,
                event_macs_total=exact,
                exact_over_estimate=exact / self.tokens / estimate if estimate else None,
            )
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "emb_size": self.emb_size,
            "hidden_sizes": list(self.hidden_sizes),
            "vocab_size": self.vocab_size,
            "measured": bool(self.tokens),
            "tokens": self.tokens,
            "note": NOTE,
            "rows": [r.to_dict() for r in self.rows],
            "totals": {"rnn": self.totals("rnn"), "full": self.totals("full")},
        }


def _check_positive(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DualsparseError(f"{what} must be a positive integer, got {value!r}")


def dense_macs_per_token(
    model_type: str, emb_size: int, hidden_sizes: list[int], vocab_size: int | None = None
) -> MacReport:
    """Dense MACs per token of a described AWD-style model (decoder tied to the embedding,
    so a projection exists when the last hidden size differs from ``emb_size``); the head
    is counted only when ``vocab_size`` is given."""
    if model_type not in CELLS:
        raise DualsparseError(
            f"model type {model_type!r} is unknown; choose one of {', '.join(CELLS)}"
        )
    _check_positive(emb_size, "the embedding size")
    if not hidden_sizes:
        raise DualsparseError("give at least one hidden size, e.g. 1150,1150,400")
    for size in hidden_sizes:
        _check_positive(size, "every hidden size")
    if vocab_size is not None:
        _check_positive(vocab_size, "the vocabulary size")
    products = Architecture(model_type, emb_size, hidden_sizes, vocab_size).products()
    rows = [MacRow(p.name, p.rows, p.cols, p.recurrent) for p in products]
    return MacReport(model_type, emb_size, list(hidden_sizes), vocab_size, rows)


def _input_sequences(
    model: LanguageModel, inputs: Tensor, layer_outputs: list[Tensor], previous: list[Tensor]
) -> dict[str, Tensor]:
    """Every product's input sequence [T, B, in] of one window, keyed like ``Product.source``;
    updates ``previous`` (each layer's last output) for the next window."""
    sequences = {"x0": model.encoder.weight[inputs]}
    for layer, out in enumerate(layer_outputs):
        sequences[f"x{layer + 1}"] = out
        sequences[f"h{layer}"] = torch.cat([previous[layer].unsqueeze(0), out[:-1]])
        previous[layer] = out[-1]
    if model.projection is not None:
        sequences["projected"] = model.projection(layer_outputs[-1])
    return sequences


@torch.no_grad()
def measure_macs(
    model: LanguageModel,
    data: Tensor,
    batch_size: int = 1,
    bptt: int = DEFAULT_BPTT,
    progress: bool = False,
) -> MacReport:
    """Dense, weight-sparse, estimated and exact event-driven MACs of ``model`` on ``data``.

    The split is walked by ``evaluation.walk_split``, as ``evaluate`` walks it (eval
    mode, ``batch_size`` columns, windows of ``bptt`` steps, state carried); per input
    unit the number of tokens at which it was nonzero is summed in int64, so the event
    count is exact.
    """
    cfg = model.cfg
    hidden_sizes = [layer.hidden_size for layer in model.layers]
    products = _products(
        cfg.type,
        cfg.emb_size,
        hidden_sizes,
        model.vocab_size,
        projection=model.projection is not None,
    )
    col_nnz = {}
    for p in products:
        weight = model.get_parameter(p.weight)[p.row_start : p.row_start + p.rows]
        assert weight.shape == (p.rows, p.cols), (p.name, tuple(weight.shape))
        col_nnz[p.name] = column_nnz(weight)
    if batch_size >= 1 and len(data) // batch_size == 1:  # batchify reports 0 rows
        raise DualsparseError(
            "only 1 token(s) per batch column; use a smaller --batch-size or a larger split"
        )
    previous = [model.encoder.weight.new_zeros(batch_size, h) for h in hidden_sizes]
    active: dict[str, Tensor] = {}  # per input unit: at how many tokens it was nonzero
    tokens = 0
    for window in walk_split(model, data, batch_size, bptt, progress=progress, desc="macs"):
        inputs = window.inputs
        sequences = _input_sequences(model, inputs, window.output.layer_outputs, previous)
        for key, seq in sequences.items():
            counts = (seq != 0).sum(dim=(0, 1))
            active[key] = active[key] + counts if key in active else counts
        tokens += inputs.numel()
    rows = [
        MacRow(
            p.name,
            p.rows,
            p.cols,
            p.recurrent,
            tokens,
            weight_nonzero=int(col_nnz[p.name].sum()),
            active_inputs=int(active[p.source].sum()),
            event_macs_total=event_macs_from_counts(active[p.source], col_nnz[p.name]),
        )
        for p in products
    ]
    return MacReport(cfg.type, cfg.emb_size, hidden_sizes, model.vocab_size, rows, tokens)


def _millions(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:.4f}"


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_mac_table(report: MacReport, title: str = "") -> str:
    """Per-product table in millions of MACs per token, then the RNN-only and full totals."""
    lines = [title] if title else []
    what = f"measured over {report.tokens:,} tokens" if report.tokens else "described dense model"
    lines.append(f"MACs per token in millions, {what}; {NOTE}")
    header = f"{'product':<14} {'shape':>11} {'dense':>9}"
    if report.tokens:
        header += (
            f" {'w.density':>9} {'w.sparse':>9} {'activity':>8} {'estimate':>9} "
            f"{'exact':>9} {'exact/est':>9}"
        )
    lines += ["", header]

    def line(name: str, shape: str, d: dict[str, Any]) -> str:
        dense = d["dense_macs_per_token"]
        text = f"{name:<14} {shape:>11} {_millions(dense):>9}"
        if not report.tokens:
            return text
        sparse = d["weight_sparse_macs_per_token"]
        return (
            f"{text} {_fraction(d.get('weight_density', sparse / dense)):>9} "
            f"{_millions(sparse):>9} {_fraction(d.get('activity')):>8} "
            f"{_millions(d['estimated_macs_per_token']):>9} "
            f"{_millions(d['event_macs_per_token']):>9} "
            f"{_fraction(d['exact_over_estimate']):>9}"
        )

    for row in report.rows:
        lines.append(line(row.name, f"{row.rows}x{row.cols}", row.to_dict()))
    lines.append("")
    lines.append(line("total RNN", "", report.totals("rnn")))
    full = report.totals("full")
    if full is not None:
        lines.append(line("total full", "", full))
    lines.append("")
    lines.append(
        "total RNN = recurrent layers only (the paper's convention); "
        "total full adds projection and decoder."
    )
    if report.tokens:
        lines.append(
            "estimate = activity x weight density x dense (assumes independence); "
            "exact = sum over tokens of nnz of the weight columns of nonzero inputs."
        )
    return "\n".join(lines)
