"""The streaming engine: batch 1, one token at a time, event-driven in every product.

Per token: the first layer reads the embedding row (or a row of the precomputed
table W_ih·E + b), each layer runs one compiled kernel over the active inputs of
its input and of its own previous output, the projection (if any) runs on the
last layer's active outputs, and the decoder adds one dense column per active
entry of its input. Python does only the dispatch between these calls.

With ``carry_local_state`` false (``ExportedModel.local_state_window`` L), every EGRU
layer's c restarts at 0 before tokens 0, L, 2L, … counted from ``reset``, and only y is
carried: the windows of ``evaluation.walk_split`` at batch 1, so ``score`` equals
``evaluate`` on the same text.

Counts (``Engine.counts``) are those of ``sparsity.macs.measure_macs`` at batch
size 1: per product the active inputs and the event-driven MACs summed over
tokens, and per layer the activity (fraction of nonzero outputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dualsparse.engine import kernels, kernels_sharded
from dualsparse.engine.export import load_export
from dualsparse.engine.format import ExportedModel, with_dtype
from dualsparse.engine.jit import require_numba
from dualsparse.engine.kernels import (
    ACTIVE_INPUTS,
    ACTIVE_RECURRENT,
    HEAD_ACTIVE_INPUTS,
    HEAD_MACS,
    HEAD_STATS,
    LAYER_STATS,
    MACS_INPUT,
    MACS_RECURRENT,
)
from dualsparse.engine.layers import Layer, ShardedLayer, shard_bounds
from dualsparse.errors import DualsparseError

EOS, UNK = "<eos>", "<unk>"


class Engine:
    """Batch-1 streaming inference on an exported model (see ``engine.export``).

    ``input_table=True`` precomputes W_ih·E + b of the first layer for the whole
    vocabulary (``table_bytes`` says what it costs): the first layer's input
    product becomes one row read. ``threads`` > 1 splits every layer and the decoder
    over threads. ``dtype=np.float64`` computes in double precision from the stored
    float32 weights: a reference that agrees with a float64 PyTorch model over any
    length of text (in float32 a unit whose ĉ lies within rounding of θ can fire one
    step earlier or later than in PyTorch, whose sums run in another order).
    """

    def __init__(
        self,
        model: ExportedModel,
        *,
        input_table: bool = False,
        threads: int = 1,
        dtype: type = np.float32,
    ) -> None:
        require_numba()
        if np.dtype(dtype) != np.float32:
            model = with_dtype(model, dtype)
        self.model = model
        self.itos = model.itos
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.embedding = model.dense["embedding"]
        self.local_state_window = model.local_state_window
        self._build_layers(threads)
        self.emb_active = np.zeros(model.emb_size, dtype=np.int64)
        self.projection = model.matrices.get("projection")
        if self.projection is not None:
            self.projected = np.zeros(model.emb_size, dtype=self.embedding.dtype)
            self.projected_active = np.zeros(model.emb_size, dtype=np.int64)
            self.projection_stats = np.zeros(HEAD_STATS, dtype=np.int64)
        decoder = model.decoder_weight
        self.decoder_t = np.ascontiguousarray(decoder.T)  # column j of D is one row here
        self.decoder_col_nnz = (decoder != 0).sum(axis=0).astype(np.int64)
        self.decoder_bias = model.dense["decoder.bias"]
        self.decoder_stats = np.zeros(HEAD_STATS, dtype=np.int64)
        self.logits = np.zeros(model.vocab_size, dtype=self.embedding.dtype)
        self.exp_scratch = np.zeros(model.vocab_size, dtype=np.float64)
        self.log_normalizer = 0.0
        self.table = None
        if input_table:
            self._build_input_table()
        self.reset()

    def set_threads(self, threads: int) -> None:
        """Split the layers (by units) and the decoder (by vocabulary) over ``threads``
        threads from now on; state and counts start afresh."""
        self._build_layers(threads)
        self.reset()

    def _build_layers(self, threads: int) -> None:
        if threads < 1:
            raise DualsparseError(f"threads must be at least 1, got {threads}")
        model = self.model
        self.threads = threads
        self.layers = [
            ShardedLayer(model, i, threads) if threads > 1 else Layer(model, i)
            for i in range(len(model.hidden_sizes))
        ]
        self._chain = list(
            zip(self.layers, [la.base for la in self.layers[1:]] + [None], strict=True)
        )
        self.vocab_bounds = shard_bounds(model.vocab_size, threads)
        self.part_max = np.zeros(threads, dtype=np.float64)
        self.part_sum = np.zeros(threads, dtype=np.float64)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        input_table: bool = False,
        threads: int = 1,
        dtype: type = np.float32,
    ) -> Engine:
        return cls(load_export(directory), input_table=input_table, threads=threads, dtype=dtype)

    def _build_input_table(self) -> None:
        first = self.layers[0]
        nonzero = self.embedding != 0
        self.table = np.ascontiguousarray(
            self.embedding @ first.w_ih.to_dense().T + first.base, dtype=self.embedding.dtype
        )
        # what the input product would have cost (sparsity.macs counts it)
        per_token = np.zeros((len(self.embedding), LAYER_STATS), dtype=np.int64)
        per_token[:, MACS_INPUT] = nonzero.astype(np.int64) @ first.w_ih.column_nnz()
        per_token[:, ACTIVE_INPUTS] = nonzero.sum(axis=1)
        self.table_counts_per_token = per_token

    @property
    def table_bytes(self) -> int:
        return 0 if self.table is None else int(self.table.nbytes)

    def reset(self) -> None:
        """Zero state and zero counts (the start of a text)."""
        for layer in self.layers:
            layer.reset()
        self.table_counts = np.zeros(LAYER_STATS, dtype=np.int64)
        self.decoder_stats[:] = 0
        if self.projection is not None:
            self.projection_stats[:] = 0
        self.tokens = 0

    def step(self, token: int) -> float:
        """Feed one token id; leaves the next-token logits in ``self.logits`` and returns
        their log-normalizer log Σ exp(logits)."""
        x, x_active, n_x = self.step_rnn(token)
        if self.projection is not None:
            p = self.projection
            n_x = kernels.sparse_product(
                self.projected,
                p.values,
                p.row_indices,
                p.col_ptr,
                x,
                x_active,
                n_x,
                self.projected_active,
                self.projection_stats,
            )
            x, x_active = self.projected, self.projected_active
        decoder = (self.decoder_bias, self.decoder_t, self.decoder_col_nnz, x, x_active, n_x)
        if self.threads > 1:
            self.log_normalizer = kernels_sharded.decoder_logits_sharded(
                *decoder,
                self.logits,
                self.exp_scratch,
                self.vocab_bounds,
                self.part_max,
                self.part_sum,
                self.decoder_stats,
            )
        else:
            self.log_normalizer = kernels.decoder_logits(
                *decoder, self.logits, self.exp_scratch, self.decoder_stats
            )
        return self.log_normalizer

    def step_rnn(self, token: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The recurrent layers only (what the paper's RNN-only MACs cover); returns the last
        layer's output, its active indices and how many there are."""
        first = self.layers[0]
        if self.local_state_window and self.tokens % self.local_state_window == 0:
            for layer in self.layers:  # a window starts: c = 0, y carried
                layer.reset_local_state()
        x = self.embedding[token]
        if self.table is not None:  # the input product is already in the table row
            base, n_x = self.table[token], 0
            self.table_counts += self.table_counts_per_token[token]
        else:
            base, n_x = first.base, kernels.find_active(x, self.emb_active)
        x_active = self.emb_active
        for layer, next_base in self._chain:
            n_x = layer.step(base, x, x_active, n_x)
            x, x_active, base = layer.out, layer.active, next_base
        self.tokens += 1
        return x, x_active, n_x

    def log_prob(self, token: int) -> float:
        """log p(token | everything fed so far)."""
        return float(self.logits[token]) - self.log_normalizer

    def score(self, token_ids: list[int] | np.ndarray) -> np.ndarray:
        """log p(w_{t+1} | w_1..w_t) for t = 1..N−1, from the current state (float64 [N−1])."""
        self._check_ids(token_ids)
        out = np.empty(max(len(token_ids) - 1, 0), dtype=np.float64)
        for t in range(len(out)):
            self.step(int(token_ids[t]))
            out[t] = self.log_prob(int(token_ids[t + 1]))
        return out

    def generate(
        self, prompt_ids: list[int], max_tokens: int, temperature: float = 1.0, seed: int = 0
    ) -> list[int]:
        """Feed the prompt (``<eos>`` if empty), then sample ``max_tokens`` ids from
        softmax(logits / temperature); temperature 0 takes the most likely id."""
        if temperature < 0 or not np.isfinite(temperature):
            raise DualsparseError(f"--temperature {temperature} must be >= 0 (0 = greedy)")
        self._check_ids(prompt_ids)
        rng = np.random.default_rng(seed)
        for token in prompt_ids or [self.token_id(EOS)]:
            self.step(int(token))
        sampled = []
        for _ in range(max_tokens):
            if temperature == 0:
                token = int(np.argmax(self.logits))
            else:
                scaled = (self.logits.astype(np.float64) - self.logits.max()) / temperature
                cumulative = np.cumsum(np.exp(scaled))
                token = int(
                    np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")
                )
                token = min(token, len(cumulative) - 1)
            sampled.append(token)
            self.step(token)
        return sampled

    def _check_ids(self, token_ids: list[int] | np.ndarray) -> None:
        """Kernels index without bounds checks: refuse ids outside the vocabulary up front."""
        ids = np.asarray(token_ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.model.vocab_size):
            raise DualsparseError(
                f"token ids must be in 0..{self.model.vocab_size - 1}, got {ids.min()}.."
                f"{ids.max()}; encode words with Engine.encode"
            )

    def token_id(self, word: str) -> int:
        if word not in self.stoi:
            raise DualsparseError(
                f"the model's vocabulary has no {word}; export a model trained on a corpus with it"
            )
        return self.stoi[word]

    def encode(self, words: list[str]) -> tuple[list[int], int]:
        """Ids of ``words`` (unknown words become ``<unk>``) and how many were unknown."""
        ids = [self.stoi.get(w, -1) for w in words]
        unknown = ids.count(-1)
        if unknown:
            unk = self.token_id(UNK)
            ids = [unk if i < 0 else i for i in ids]
        return ids, unknown

    def counts(self) -> dict[str, Any]:
        """Per product (named as in ``sparsity.macs``): active inputs and event MACs summed
        over the tokens fed since ``reset``; per layer: activity."""
        products: dict[str, dict[str, Any]] = {}

        def add(name: str, weight_nonzero: int, active: int, macs: int) -> None:
            products[name] = {
                "weight_nonzero": int(weight_nonzero),
                "active_inputs": int(active),
                "event_macs_total": int(macs),
            }

        for layer in self.layers:
            s = layer.total_stats() + (self.table_counts if layer is self.layers[0] else 0)
            w_ih, *recurrent = layer.products
            add(w_ih.name, layer.w_ih.nnz, s[ACTIVE_INPUTS], s[MACS_INPUT])
            # every recurrent product reads the previous output's nonzeros (r ⊙ y too)
            for k, (product, w) in enumerate(zip(recurrent, layer.recurrent, strict=True)):
                add(product.name, w.nnz, s[ACTIVE_RECURRENT], s[MACS_RECURRENT + k])
        if self.projection is not None:
            s = self.projection_stats
            add("projection", self.projection.nnz, s[HEAD_ACTIVE_INPUTS], s[HEAD_MACS])
        s = self.decoder_stats
        add("decoder", self.decoder_col_nnz.sum(), s[HEAD_ACTIVE_INPUTS], s[HEAD_MACS])
        tokens = max(self.tokens, 1)
        activity = [layer.active_outputs / (tokens * layer.hidden) for layer in self.layers]
        in_rnn = {p.name for layer in self.layers for p in layer.products}
        rnn = sum(v["event_macs_total"] for k, v in products.items() if k in in_rnn)
        head = sum(v["event_macs_total"] for k, v in products.items() if k not in in_rnn)
        return {
            "tokens": self.tokens,
            "products": products,
            "layer_activity": activity,
            "event_macs_per_token": {"rnn": rnn / tokens, "full": (rnn + head) / tokens},
        }


def encode_text_lines(text: str) -> list[str]:
    """The corpus convention (``data.corpus``): each line's words, then ``<eos>``."""
    words: list[str] = []
    for line in text.splitlines():
        words.extend(line.split())
        words.append(EOS)
    return words
