"""Scoring a text on the engine (``dualsparse score``): per-token log-probabilities,
perplexity, activity and event-driven MACs of an exported model, state carried from
the first word to the last.

Perplexity follows the project convention (DEVELOPERS.md): exp of the mean negative
log-probability over the predicted tokens, i.e. every token but the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dualsparse.engine.runtime import Engine, encode_text_lines
from dualsparse.errors import DualsparseError


@dataclass
class TextScore:
    """``summary`` is what ``score --json`` prints (before ``log_probs``); ``words`` are
    the text's tokens (``<eos>`` ending each line), ``log_probs[t]`` is
    log p(words[t + 1] | words[..t])."""

    summary: dict[str, Any]
    words: list[str]
    log_probs: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary, "log_probs": self.log_probs.tolist()}


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DualsparseError(f"cannot read {path} ({exc}); give a UTF-8 text file") from None


def score_text(
    engine: Engine,
    text: str,
    *,
    model: str = "",
    file: str = "<text>",
    compare_with: str | Path | None = None,
) -> TextScore:
    """Score ``text`` (one sentence per line, as the corpora) from the engine's current
    state. ``model`` and ``file`` only label the summary; ``compare_with`` (a run
    directory) adds the agreement with that run's PyTorch model (``engine.compare``)."""
    words = encode_text_lines(text)
    if len(words) < 2:
        raise DualsparseError(f"{file} has fewer than two tokens; nothing to score")
    ids, unknown = engine.encode(words)
    log_probs = engine.score(ids)
    loss = -float(log_probs.mean())
    counts = engine.counts()
    summary: dict[str, Any] = {
        "model": model,
        "file": file,
        "tokens_scored": len(log_probs),
        "unknown_words": unknown,
        "loss": loss,
        "perplexity": math.exp(loss),
        "layer_activity": counts["layer_activity"],
        "event_macs_per_token": counts["event_macs_per_token"],
    }
    if compare_with is not None:
        from dualsparse.engine.compare import compare

        summary["comparison"] = compare(log_probs, counts["layer_activity"], compare_with, ids)
    return TextScore(summary, words, log_probs)


def score_file(
    model_dir: str | Path,
    file: str | Path,
    *,
    float64: bool = False,
    compare_with: str | Path | None = None,
) -> TextScore:
    """``dualsparse score MODEL FILE``: load the exported model (float32, or float64 as a
    reference) and score the file with it."""
    engine = Engine.load(model_dir, dtype=np.float64 if float64 else np.float32)
    return score_text(
        engine, read_text(file), model=str(model_dir), file=str(file), compare_with=compare_with
    )


def format_score(score: TextScore, per_token: bool = False) -> str:
    """The human-readable report: optionally one line per token, then the summary."""
    s = score.summary
    lines = []
    if per_token:
        for t, lp in enumerate(score.log_probs, start=1):
            lines.append(f"{t}\t{score.words[t]}\t{lp:.6f}")
    lines.append(
        f"{s['file']}: {s['tokens_scored']:,} tokens scored ({s['unknown_words']:,} unknown "
        f"words as <unk>), perplexity {s['perplexity']:.2f}"
    )
    lines.append("activity per layer: " + ", ".join(f"{a:.3f}" for a in s["layer_activity"]))
    macs = s["event_macs_per_token"]
    lines.append(
        f"event-driven MACs per token: RNN {macs['rnn'] / 1e6:.4f}M, "
        f"with decoder {macs['full'] / 1e6:.4f}M"
    )
    if "comparison" in s:
        from dualsparse.engine.compare import format_comparison

        lines.append(format_comparison(s["comparison"]))
    return "\n".join(lines)
