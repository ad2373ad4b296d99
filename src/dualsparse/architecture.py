"""What a recurrent language model computes per token, as data (no PyTorch).

Per cell type (``CELLS``): its gate blocks in PyTorch's order, how the recurrent weight
``weight_hh`` splits into the products an event-driven machine runs (and which input
each reads), and the per-layer vectors (biases, thresholds). Per model
(``Architecture``): every matrix-vector product of one token — name, the
``LanguageModel`` parameter and rows it is a slice of, the input it reads, its shape —
the dense tensors an export holds, and the dense MACs per token.

MAC accounting (``sparsity.macs``), the export format (``engine.export``,
``engine.format``), the engine's layers and counts and the dense baselines all read
these facts from here. A cell variant is a ``Cell`` entry of its own, chosen in
``Architecture.cell``: the reset-after EGRU (``model.reset_after``, the EvNN reference's
candidate z = tanh(W_z x + b_z + r ⊙ (U_z y + b_hz))) is ``EGRU_RESET_AFTER``, the EGRU
entry with U_z reading ``h`` and the vector ``bias_hz`` [H] added.

Products of layer l (the names ``dualsparse macs`` prints and the export stores):

- ``layer{l}.W_ih`` = ``weight_ih`` [G·H, I] · x_t, x = the embedding row (l = 0) or the
  output of layer l − 1;
- LSTM/GRU ``layer{l}.W_hh`` = ``weight_hh`` [G·H, H] · h_{t−1};
- EGRU ``layer{l}.U_ur`` = rows 0:2H of ``weight_hh`` · y_{t−1} and ``layer{l}.U_z`` =
  rows 2H:3H · (r ⊙ y_{t−1}) (DEVELOPERS.md, "EGRU cell"); reset-after: U_z · y_{t−1}.
  r = σ(·) > 0, so r ⊙ y_{t−1} is nonzero exactly where y_{t−1} is: both read the same
  activity (``source``), and the event MACs are the same with either candidate;
- head, when the vocabulary is given: ``projection`` [E, H_last] on the last layer's
  output if the model has one (tied decoder, H_last ≠ E), then ``decoder`` [V, E] on the
  projected vector, else ``decoder`` [V, H_last] on the last layer's output.

The paper's totals (20.2M MACs per token for the AWD-LSTM) cover the recurrent layers
only: part ``rnn``; ``full`` adds the head. Biases and elementwise work are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# what a product reads
INPUT = "x"  # the layer's input (for the head: its input vector)
PREVIOUS_OUTPUT = "h"  # the layer's own output at t − 1 (EGRU: y_{t−1})
RESET_GATED = "r*h"  # r ⊙ h_{t−1}, nonzero exactly where h_{t−1} is


@dataclass(frozen=True)
class RecurrentProduct:
    """Gate blocks ``first_gate`` .. ``first_gate + gates`` of ``weight_hh`` as one product."""

    name: str
    first_gate: int
    gates: int
    reads: str  # PREVIOUS_OUTPUT or RESET_GATED


@dataclass(frozen=True)
class Cell:
    """A cell type's layout: gate blocks of H rows each (in ``weight_ih`` and ``weight_hh``),
    the products ``weight_hh`` is split into, and the per-layer vectors as (parameter
    name, length in units of H)."""

    gate_names: tuple[str, ...]
    recurrent: tuple[RecurrentProduct, ...]
    vectors: tuple[tuple[str, int], ...]

    @property
    def gates(self) -> int:
        return len(self.gate_names)


CELLS: dict[str, Cell] = {
    "egru": Cell(
        ("u", "r", "z"),
        (
            RecurrentProduct("U_ur", 0, 2, PREVIOUS_OUTPUT),
            RecurrentProduct("U_z", 2, 1, RESET_GATED),
        ),
        (("bias", 3), ("threshold", 1)),
    ),
    "lstm": Cell(
        ("i", "f", "g", "o"),
        (RecurrentProduct("W_hh", 0, 4, PREVIOUS_OUTPUT),),
        (("bias_ih", 4), ("bias_hh", 4)),
    ),
    "gru": Cell(
        ("r", "z", "n"),
        (RecurrentProduct("W_hh", 0, 3, PREVIOUS_OUTPUT),),
        (("bias_ih", 3), ("bias_hh", 3)),
    ),
}
GATES = {model_type: cell.gates for model_type, cell in CELLS.items()}
# model.reset_after: U_z reads y_{t−1} itself (r multiplies the product), plus b_hz [H]
EGRU_RESET_AFTER = Cell(
    ("u", "r", "z"),
    (
        RecurrentProduct("U_ur", 0, 2, PREVIOUS_OUTPUT),
        RecurrentProduct("U_z", 2, 1, PREVIOUS_OUTPUT),
    ),
    (("bias", 3), ("threshold", 1), ("bias_hz", 1)),
)


@dataclass(frozen=True)
class Product:
    """One matrix-vector product per token: rows ``row_start`` .. ``row_start + rows`` of the
    ``LanguageModel`` parameter ``weight``, times the input ``reads``."""

    name: str
    weight: str  # parameter name in LanguageModel
    row_start: int
    rows: int
    cols: int
    reads: str  # INPUT, PREVIOUS_OUTPUT or RESET_GATED
    # whose nonzeros it reads: "x{l}" the input of layer l (x{L}: the last layer's output),
    # "h{l}" layer l's previous output, "projected" the projection's output
    source: str
    recurrent: bool  # a recurrent layer's product: counted in the paper's RNN-only total

    @property
    def dense_macs_per_token(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class Architecture:
    """An AWD-style language model: embedding, recurrent layers, projection (only for a tied
    decoder whose size differs from the last layer's), decoder. ``vocab_size`` None
    describes the recurrent layers only (no head products, no dense tensors).
    ``reset_after`` (EGRU only) selects the reset-after candidate, ``EGRU_RESET_AFTER``."""

    model_type: str
    emb_size: int
    hidden_sizes: tuple[int, ...]
    vocab_size: int | None = None
    tied: bool = True
    reset_after: bool = False

    def __post_init__(self) -> None:
        if self.model_type not in CELLS:
            raise ValueError(f"model type {self.model_type!r} is not one of {', '.join(CELLS)}")
        if self.reset_after and self.model_type != "egru":
            raise ValueError(f"reset_after is an EGRU option, not one of {self.model_type!r}")
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    @classmethod
    def of(cls, model: Any) -> Architecture:
        """The architecture of a ``LanguageModel`` (read from its config, no PyTorch call)."""
        cfg = model.cfg
        reset_after = cfg.type == "egru" and bool(getattr(cfg, "reset_after", False))
        return cls(
            cfg.type, cfg.emb_size, cfg.hidden_sizes, model.vocab_size, cfg.tie_weights, reset_after
        )

    @property
    def cell(self) -> Cell:
        return EGRU_RESET_AFTER if self.reset_after else CELLS[self.model_type]

    @property
    def projection(self) -> bool:
        return self.tied and self.hidden_sizes[-1] != self.emb_size

    def layer_products(self, layer: int) -> list[Product]:
        """Layer ``layer``'s products: the input product, then the recurrent ones in
        ``Cell.recurrent`` order."""
        hidden = self.hidden_sizes[layer]
        n_in = self.hidden_sizes[layer - 1] if layer else self.emb_size
        gates, param = self.cell.gates, f"layers.{layer}"
        products = [
            Product(
                name=f"layer{layer}.W_ih",
                weight=f"{param}.weight_ih",
                row_start=0,
                rows=gates * hidden,
                cols=n_in,
                reads=INPUT,
                source=f"x{layer}",
                recurrent=True,
            )
        ]
        for part in self.cell.recurrent:
            products.append(
                Product(
                    name=f"layer{layer}.{part.name}",
                    weight=f"{param}.weight_hh",
                    row_start=part.first_gate * hidden,
                    rows=part.gates * hidden,
                    cols=hidden,
                    reads=part.reads,
                    source=f"h{layer}",
                    recurrent=True,
                )
            )
        return products

    def head_products(self) -> list[Product]:
        """Projection (if any) and decoder; none without a vocabulary."""
        if self.vocab_size is None:
            return []

        def head(name: str, rows: int, cols: int, source: str) -> Product:
            return Product(name, f"{name}.weight", 0, rows, cols, INPUT, source, recurrent=False)

        last, hidden = f"x{len(self.hidden_sizes)}", self.hidden_sizes[-1]
        if not self.projection:
            return [head("decoder", self.vocab_size, hidden, last)]
        return [
            head("projection", self.emb_size, hidden, last),
            head("decoder", self.vocab_size, self.emb_size, "projected"),
        ]

    def products(self) -> list[Product]:
        layers = range(len(self.hidden_sizes))
        return [p for layer in layers for p in self.layer_products(layer)] + self.head_products()

    def sparse_products(self) -> list[Product]:
        """The products stored as sparse matrices in an export: all but the decoder (which
        is the embedding when tied, and dense)."""
        return [p for p in self.products() if p.name != "decoder"]

    def dense_macs_per_token(self, part: str = "rnn") -> int:
        """Dense MACs per token over the recurrent layers (``rnn``, the paper's convention)
        or all products (``full``)."""
        if part not in ("rnn", "full"):
            raise ValueError(f"part must be 'rnn' or 'full', not {part!r}")
        return sum(p.dense_macs_per_token for p in self.products() if p.recurrent or part == "full")

    def dense_tensors(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """The tensors an export stores densely: name -> (``LanguageModel`` parameter, shape).
        ``embedding`` is the decoder too when tied; an untied decoder has no projection."""
        if self.vocab_size is None:
            raise ValueError("dense tensors need the vocabulary size")
        tensors = {
            "embedding": ("encoder.weight", (self.vocab_size, self.emb_size)),
            "decoder.bias": ("decoder.bias", (self.vocab_size,)),
        }
        if not self.tied:
            tensors["decoder.weight"] = ("decoder.weight", (self.vocab_size, self.hidden_sizes[-1]))
        for layer, hidden in enumerate(self.hidden_sizes):
            for name, blocks in self.cell.vectors:
                tensors[f"layer{layer}.{name}"] = (f"layers.{layer}.{name}", (blocks * hidden,))
        return tensors
