"""Batching for truncated backpropagation through time, AWD-LSTM style.

The token stream is cut into ``batch_size`` parallel columns that are read
top to bottom, so the hidden state of one window is the right initial state of
the next. Training uses AWD-LSTM's variable window length (Merity et al., 2018,
sec. 4.1) so that the same token does not always sit at the same BPTT position.
"""

from __future__ import annotations

import torch

from dualsparse.errors import DualsparseError

MIN_VARIABLE_SEQ_LEN = 5  # AWD-LSTM's lower bound on a sampled window length
_FULL_BPTT_PROBABILITY = 0.95  # otherwise the window is centred on bptt / 2
_SEQ_LEN_STD = 5.0


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Reshape a 1-D token stream to [n_steps, batch_size], column j a contiguous slice.

    The remainder that does not fill a whole row is dropped, as in AWD-LSTM, so
    evaluation numbers match theirs token for token.
    """
    if batch_size < 1:
        raise DualsparseError(f"batch size must be at least 1, got {batch_size}; fix --batch-size")
    n_steps = data.size(0) // batch_size
    if n_steps == 0:
        raise DualsparseError(
            f"batch size {batch_size} is larger than the data ({data.size(0)} tokens); "
            "use a smaller --batch-size or a larger split"
        )
    return data.narrow(0, 0, n_steps * batch_size).view(batch_size, -1).t().contiguous()


def get_batch(source: torch.Tensor, i: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``source[i:i+L]`` and next-token targets ``source[i+1:i+1+L]``, both [L, B].

    L is shortened at the end of the data, where fewer than ``seq_len`` targets remain.
    """
    length = min(seq_len, source.size(0) - 1 - i)
    if i < 0 or length < 1:
        raise ValueError(f"no window at step {i} with seq_len {seq_len} in {source.size(0)} steps")
    return source[i : i + length], source[i + 1 : i + 1 + length]


def bptt_windows(
    n_steps: int,
    bptt: int,
    *,
    variable: bool,
    generator: torch.Generator | None = None,
) -> list[tuple[int, int]]:
    """The (start, seq_len) windows of one epoch over ``n_steps`` rows.

    The windows cover inputs 0 .. n_steps-2 exactly once (the last row is only a
    target). With ``variable`` each length is drawn like AWD-LSTM's training loop:
    base = bptt with probability 0.95 else bptt / 2, seq_len = max(5, int(N(base, 5))),
    clipped to fit. Unlike AWD-LSTM a final 1-step window is kept, not skipped.
    Drawing all windows up front from ``generator`` makes an epoch reproducible and
    lets a resumed run skip the windows it has already trained on.
    """
    if bptt < 1:
        raise DualsparseError(f"bptt must be at least 1, got {bptt}; fix --bptt")
    if n_steps < 2:
        raise DualsparseError(
            f"only {n_steps} time step(s) per batch column, need at least 2 for one "
            "input/target pair; use a smaller --batch-size or a larger split"
        )
    if variable and generator is None:
        raise ValueError("variable BPTT windows need an explicit torch.Generator")
    windows: list[tuple[int, int]] = []
    start = 0
    last_input = n_steps - 1  # exclusive end of the input rows
    while start < last_input:
        if variable:
            coin = torch.rand(1, generator=generator).item()
            base = float(bptt) if coin < _FULL_BPTT_PROBABILITY else bptt / 2.0
            draw = torch.normal(base, _SEQ_LEN_STD, size=(1,), generator=generator).item()
            seq_len = max(MIN_VARIABLE_SEQ_LEN, int(draw))
        else:
            seq_len = bptt
        seq_len = min(seq_len, last_input - start)
        windows.append((start, seq_len))
        start += seq_len
    return windows


def lr_scale(seq_len: int, bptt: int) -> float:
    """AWD-LSTM multiplies the learning rate by seq_len / bptt for each window, so
    that short windows (whose loss is a mean over fewer steps) do not get
    over-weighted updates."""
    return seq_len / bptt
