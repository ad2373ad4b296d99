"""Initialisation schemes of the recurrent layers' parameters (``model.weight_init``).

- ``uniform``: every weight and bias from U(−1/√H, 1/√H), torch.nn.GRU / LSTM's default
  and dualsparse's from the start;
- ``xavier_normal``: weight matrices from N(0, 2 / (fan_in + fan_out)) with the fans of
  the whole stacked matrix ([3H, I] counts 3H + I), biases zero — the EvNN reference's
  EGRU (frameworks/pytorch/egru.py lines 366-373, gain 1 by train.py's default).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch import Tensor, nn


def init_rnn_parameters(params: Iterable[Tensor], hidden_size: int, scheme: str) -> None:
    """Initialise ``params`` in place, in order (the random stream depends on it)."""
    bound = 1.0 / math.sqrt(hidden_size)
    for param in params:
        if scheme == "uniform":
            nn.init.uniform_(param, -bound, bound)
        elif scheme == "xavier_normal":
            if param.ndim >= 2:
                nn.init.xavier_normal_(param)
            else:
                nn.init.zeros_(param)
        else:
            raise ValueError(f"unknown weight_init {scheme!r}")
