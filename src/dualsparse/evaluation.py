"""Walking a split with the hidden state carried, and perplexity and activity on it.

Every measurement on a split (perplexity, activity, MACs, the PyTorch side of
``score --compare``) reads it the AWD-LSTM way, through ``walk_split``: the split
is batchified into ``batch_size`` columns and run in eval mode in windows of
``bptt`` steps, the hidden state carried across windows. The perplexity is
exp(total negative log-likelihood / number of predicted tokens). Activity of a
layer is the fraction of its outputs that are nonzero (EGRU: the fraction of
units emitting an event; LSTM/GRU: ≈ 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dualsparse.data.batching import batchify, get_batch
from dualsparse.errors import DualsparseError
from dualsparse.models.lm import LanguageModel, LMOutput, detach_state

# Window length for every measurement that walks a split (evaluation, activity, MACs,
# engine comparisons): AWD-LSTM's bptt.
DEFAULT_BPTT = 70


@dataclass
class Window:
    """One window of a walk: rows ``start .. start + L`` of the batchified split."""

    start: int
    inputs: torch.Tensor  # [L, B] token ids
    targets: torch.Tensor  # [L, B] the next token of each input
    output: LMOutput  # logits, per-layer outputs and ĉ, and the state after the window


def walk_split(
    model: LanguageModel,
    data: torch.Tensor,
    batch_size: int,
    bptt: int = DEFAULT_BPTT,
    *,
    progress: bool = False,
    desc: str = "",
) -> Iterator[Window]:
    """The model's output on each ``bptt``-step window of ``data`` batchified into
    ``batch_size`` columns, the state of one window the initial state of the next.

    The windows predict every target of the batchified split exactly once. The model
    runs in eval mode without gradients; its mode is restored when the walk ends
    (or is closed). The outputs carry no graph; a consumer that computes with the
    parameters themselves (thresholds, the embedding) runs under its own ``no_grad``.

    A model with ``carry_local_state: false`` restarts the EGRU's c at 0 in every
    forward call, so at every window here: its numbers then depend on ``bptt``.
    """
    if bptt < 1:
        raise DualsparseError(f"bptt must be at least 1, got {bptt}; fix --bptt")
    source = batchify(data, batch_size).to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        state = model.init_state(batch_size)
        starts = range(0, source.shape[0] - 1, bptt)
        for start in tqdm(starts, desc=desc, disable=not progress, unit="win", leave=False):
            inputs, targets = get_batch(source, start, bptt)
            with torch.no_grad():
                output = model(inputs, state)
            state = detach_state(output.state)
            yield Window(start, inputs, targets, output)
    finally:
        model.train(was_training)


@dataclass
class EvalResult:
    loss: float  # mean NLL in nats per predicted token
    perplexity: float
    tokens: int
    layer_activity: list[float]  # fraction of nonzero outputs per layer
    layer_sizes: list[int] = field(default_factory=list)
    split: str = ""
    batch_size: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(
    model: LanguageModel,
    data: torch.Tensor,
    batch_size: int,
    bptt: int = DEFAULT_BPTT,
    *,
    split: str = "",
    progress: bool = False,
) -> EvalResult:
    total_nll, total_tokens = 0.0, 0
    nonzero = [0] * len(model.layers)
    counted = [0] * len(model.layers)
    for window in walk_split(
        model, data, batch_size, bptt, progress=progress, desc=f"eval {split}"
    ):
        logits = window.output.logits
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), window.targets.reshape(-1), reduction="sum"
        )
        total_nll += nll.item()
        total_tokens += window.targets.numel()
        for k, y in enumerate(window.output.layer_outputs):
            nonzero[k] += int(torch.count_nonzero(y))
            counted[k] += y.numel()
    loss = total_nll / max(total_tokens, 1)
    return EvalResult(
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        tokens=total_tokens,
        layer_activity=[n / max(c, 1) for n, c in zip(nonzero, counted, strict=True)],
        layer_sizes=[layer.hidden_size for layer in model.layers],
        split=split,
        batch_size=batch_size,
    )


def format_eval_table(result: EvalResult, title: str | Path = "") -> str:
    lines = []
    if title:
        lines.append(str(title))
    lines.append(f"split        {result.split}")
    lines.append(f"tokens       {result.tokens:,}")
    lines.append(f"batch size   {result.batch_size}")
    lines.append(f"loss         {result.loss:.4f} nats/token")
    lines.append(f"perplexity   {result.perplexity:.2f}")
    lines.append("")
    lines.append("layer  units  activity (fraction of nonzero outputs)")
    for k, (size, act) in enumerate(zip(result.layer_sizes, result.layer_activity, strict=True)):
        lines.append(f"{k:>5}  {size:>5}  {act:.4f}")
    return "\n".join(lines)
