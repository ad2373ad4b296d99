"""LSTM and GRU baseline layers with the same interface as ``EGRULayer``.

They hold their own parameters (``weight_ih``, ``weight_hh``, ``bias_ih``,
``bias_hh``, torch.nn.LSTM/GRU gate order) and call PyTorch's fused
``torch.lstm`` / ``torch.gru`` kernels with them, so that DropConnect can pass a
dropped recurrent weight for one call and pruning sees plain parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dualsparse.models.init import init_rnn_parameters


class _TorchRNNLayer(nn.Module):
    gates: int = 1

    def __init__(self, input_size: int, hidden_size: int, *, weight_init: str = "uniform") -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_init = weight_init
        g = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g, input_size))
        self.weight_hh = nn.Parameter(torch.empty(g, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(g))
        self.bias_hh = nn.Parameter(torch.empty(g))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_rnn_parameters(self.parameters(), self.hidden_size, self.weight_init)

    def _weights(self, weight_hh: Tensor | None) -> list[Tensor]:
        w_hh = self.weight_hh if weight_hh is None else weight_hh
        return [self.weight_ih, w_hh, self.bias_ih, self.bias_hh]

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class LSTMLayer(_TorchRNNLayer):
    """One LSTM layer; state (h, c)."""

    gates = 4

    def init_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        zeros = self.weight_hh.new_zeros(batch_size, self.hidden_size)
        return zeros, zeros.clone()

    def forward(self, x: Tensor, state=None, weight_hh: Tensor | None = None):
        if state is None:
            state = self.init_state(x.shape[1])
        h0, c0 = state
        hx = (h0.unsqueeze(0), c0.unsqueeze(0))
        out, h, c = torch.lstm(
            x, hx, self._weights(weight_hh), True, 1, 0.0, self.training, False, False
        )
        return out, (h[0], c[0]), None


class GRULayer(_TorchRNNLayer):
    """One GRU layer; state h."""

    gates = 3

    def init_state(self, batch_size: int) -> tuple[Tensor]:
        return (self.weight_hh.new_zeros(batch_size, self.hidden_size),)

    def forward(self, x: Tensor, state=None, weight_hh: Tensor | None = None):
        if state is None:
            state = self.init_state(x.shape[1])
        out, h = torch.gru(
            x,
            state[0].unsqueeze(0),
            self._weights(weight_hh),
            True,
            1,
            0.0,
            self.training,
            False,
            False,
        )
        return out, (h[0],), None
