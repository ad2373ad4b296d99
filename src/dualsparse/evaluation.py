"""Perplexity and activity on a split (AWD-LSTM convention).

The split is batchified into ``batch_size`` columns, run in windows of ``bptt``
steps with the hidden state carried across windows, and the perplexity is
exp(total negative log-likelihood / number of predicted tokens). Activity of a
layer is the fraction of its outputs that are nonzero (EGRU: the fraction of
units emitting an event; LSTM/GRU: ≈ 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dualsparse.data.batching import batchify, get_batch
from dualsparse.models.lm import LanguageModel, detach_state

# Window length for every measurement that walks a split (evaluation, activity, MACs,
# engine comparisons): AWD-LSTM's bptt.
DEFAULT_BPTT = 70

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


@torch.no_grad()
def evaluate(
    model: LanguageModel,
    data: torch.Tensor,
    batch_size: int,
    bptt: int = DEFAULT_BPTT,
    *,
    split: str = "",
    progress: bool = False,
) -> EvalResult:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    source = batchify(data, batch_size).to(device)
    state = model.init_state(batch_size)
    total_nll, total_tokens = 0.0, 0
    nonzero = [0] * len(model.layers)
    counted = [0] * len(model.layers)
    starts = range(0, source.shape[0] - 1, bptt)
    for i in tqdm(starts, desc=f"eval {split}", disable=not progress, unit="win", leave=False):
        inputs, targets = get_batch(source, i, bptt)
        out = model(inputs, state)
        state = detach_state(out.state)
        nll = F.cross_entropy(
            out.logits.reshape(-1, out.logits.shape[-1]), targets.reshape(-1), reduction="sum"
        )
        total_nll += nll.item()
        total_tokens += targets.numel()
        for k, y in enumerate(out.layer_outputs):
            nonzero[k] += int(torch.count_nonzero(y))
            counted[k] += y.numel()
    model.train(was_training)
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
