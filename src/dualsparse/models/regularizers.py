"""AWD-LSTM regularisers (Merity et al., 2018), written for current PyTorch.

- locked (variational) dropout: one mask per sequence, shared over time steps (or,
  as the EvNN reference runs it, one per time step shared over the batch);
- embedding dropout: drops whole word types (rows of the embedding matrix);
- DropConnect on recurrent weights: a dropped copy of the weight is computed
  in every training forward and passed to the layer for that call only, so no
  second copy of the weight is ever registered as a parameter, and nothing
  needs undoing when the model switches between train and eval (the classic
  ``WeightDrop`` deletes parameters and breaks on current PyTorch).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def locked_dropout(x: Tensor, p: float, training: bool, shared_over: str = "time") -> Tensor:
    """Dropout on a [T, B, D] sequence with one mask shared over time (AWD-LSTM: one mask
    per sequence) or, with ``shared_over="batch"``, one mask per time step shared by the
    whole batch — what the EvNN reference's ``VariationalDropout`` does in practice, as it
    draws a (1, dim1, dim2) mask on batch-first tensors (benchmarks/lm/modules.py line 29)."""
    if not training or p == 0.0:
        return x
    shape = (1, x.shape[1], x.shape[2]) if shared_over == "time" else (x.shape[0], 1, x.shape[2])
    mask = x.new_empty(shape).bernoulli_(1.0 - p) / (1.0 - p)
    return x * mask


def embedding_dropout(weight: Tensor, p: float, training: bool) -> Tensor:
    """The embedding matrix with whole rows (word types) dropped, rescaled by 1/(1−p)."""
    if not training or p == 0.0:
        return weight
    mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1.0 - p) / (1.0 - p)
    return weight * mask


def drop_connect(weight: Tensor, p: float, training: bool) -> Tensor:
    """DropConnect (Wan et al., 2013): dropout on the weight entries themselves."""
    if not training or p == 0.0:
        return weight
    return F.dropout(weight, p, training=True)
