"""Dense baselines for the latency benchmark: a dense model stepped one token at a time in
PyTorch (its dense MACs are ``Architecture.dense_macs_per_token``).

Each step is one fused ``torch.addmv`` per gate block and in-place elementwise ops (a BLAS
sgemv per product). This is the fastest dense path here: ``torch.nn.LSTM`` called per step
is several times slower because of its per-call setup, so it would flatter the engine. The
weights are random (latency does not depend on the values). PyTorch is imported only when a
stepper is built.
"""

from __future__ import annotations

from typing import Any

from dualsparse.architecture import GATES

AWD_LSTM = ("lstm", 400, [1150, 1150, 400])


class DenseStepper:
    """A dense model stepped token by token with fused addmv products (PyTorch)."""

    def __init__(
        self,
        model_type: str,
        emb_size: int,
        hidden_sizes: list[int],
        vocab_size: int,
        seed: int = 0,
        *,
        input_table: bool = False,
    ) -> None:
        import torch

        self.torch, self.model_type = torch, model_type
        gen = torch.Generator().manual_seed(seed)

        def uniform(*shape: int, bound: float) -> Any:
            return (torch.rand(*shape, generator=gen) * 2 - 1) * bound

        self.embedding = uniform(vocab_size, emb_size, bound=0.1)
        self.decoder_bias = torch.zeros(vocab_size)
        last = hidden_sizes[-1]
        self.projection = uniform(emb_size, last, bound=last**-0.5) if last != emb_size else None
        self.layers = []
        sizes = [emb_size, *hidden_sizes]
        for n_in, hidden in zip(sizes[:-1], sizes[1:], strict=True):
            rows, bound = GATES[model_type] * hidden, hidden**-0.5
            layer = {
                "w_ih": uniform(rows, n_in, bound=bound),
                "b": uniform(rows, bound=bound),
                "w_hh": uniform(rows, hidden, bound=bound),
                "b_hh": uniform(rows, bound=bound),
                "h": torch.zeros(hidden),
                "c": torch.zeros(hidden),
                "gates": torch.zeros(rows),
                "gates_hh": torch.zeros(rows),
                "threshold": torch.full((hidden,), 0.1),
            }
            if model_type == "lstm":  # one sgemv over [W_ih W_hh] · [x; h]
                layer["w_cat"] = torch.cat([layer["w_ih"], layer["w_hh"]], dim=1).contiguous()
                layer["xh"] = torch.zeros(n_in + hidden)
                layer["h"] = layer["xh"][n_in:]
            self.layers.append(layer)
        self.logits = torch.zeros(vocab_size)
        # the engine's first-layer table, open to a dense model alike: W_ih·E + b for the
        # whole vocabulary, one row read per token instead of the first input product
        first = self.layers[0]
        self.table = (
            torch.addmm(first["b"], self.embedding, first["w_ih"].T) if input_table else None
        )

    def _lstm(self, layer: dict, x: Any, from_table: bool) -> Any:
        torch, xh, gates, c, h = self.torch, layer["xh"], layer["gates"], layer["c"], layer["h"]
        hidden = c.shape[0]
        if from_table:  # x is the table row W_ih·x + b
            torch.addmv(x, layer["w_hh"], h, out=gates)
        else:
            xh[: xh.shape[0] - hidden].copy_(x)
            torch.addmv(layer["b"], layer["w_cat"], xh, out=gates)
        gates[: 2 * hidden].sigmoid_()
        gates[3 * hidden :].sigmoid_()
        gates[2 * hidden : 3 * hidden].tanh_()
        c.mul_(gates[hidden : 2 * hidden]).addcmul_(gates[:hidden], gates[2 * hidden : 3 * hidden])
        torch.tanh(c, out=h).mul_(gates[3 * hidden :])
        return h

    def _input_product(self, layer: dict, x: Any, from_table: bool) -> Any:
        if from_table:
            return x
        return self.torch.addmv(layer["b"], layer["w_ih"], x, out=layer["gates"])

    def _gru(self, layer: dict, x: Any, from_table: bool) -> Any:
        torch, gh, h = self.torch, layer["gates_hh"], layer["h"]
        hidden = h.shape[0]
        gi = self._input_product(layer, x, from_table)
        torch.addmv(layer["b_hh"], layer["w_hh"], h, out=gh)
        rz = (gi[: 2 * hidden] + gh[: 2 * hidden]).sigmoid_()
        cand = torch.addcmul(gi[2 * hidden :], rz[:hidden], gh[2 * hidden :]).tanh_()
        h.sub_(cand).mul_(rz[hidden:]).add_(cand)  # h = n + z (h − n)
        return h

    def _egru(self, layer: dict, x: Any, from_table: bool) -> Any:
        torch, y, c = self.torch, layer["h"], layer["c"]
        hidden, w_hh = y.shape[0], layer["w_hh"]
        gi = self._input_product(layer, x, from_table)
        ur = torch.addmv(gi[: 2 * hidden], w_hh[: 2 * hidden], y).sigmoid_()
        z = torch.addmv(gi[2 * hidden :], w_hh[2 * hidden :], ur[hidden:] * y).tanh_()
        c_pre = torch.addcmul(c, ur[:hidden], z - c)
        event = c_pre > layer["threshold"]
        torch.mul(c_pre, event, out=y)
        torch.sub(c_pre, layer["threshold"] * event, out=c)
        return y

    def step_rnn(self, token: int) -> Any:
        x = self.embedding[token] if self.table is None else self.table[token]
        cell = {"lstm": self._lstm, "gru": self._gru, "egru": self._egru}[self.model_type]
        for index, layer in enumerate(self.layers):
            x = cell(layer, x, index == 0 and self.table is not None)
        return x

    def reset(self) -> None:
        """Zero state, as at the start of a text."""
        for layer in self.layers:
            layer["h"].zero_()
            layer["c"].zero_()

    def step(self, token: int) -> Any:
        x = self.step_rnn(token)
        if self.projection is not None:
            x = self.torch.mv(self.projection, x)
        self.torch.addmv(self.decoder_bias, self.embedding, x, out=self.logits)
        return self.torch.logsumexp(self.logits, 0)

    def log_probs(self, token: int) -> Any:
        """The next token's log-probabilities after ``token`` (a new tensor)."""
        return self.logits - self.step(token)
