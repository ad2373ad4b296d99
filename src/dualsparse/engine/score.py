"""Scoring a text on the engine (``dualsparse score``): per-token log-probabilities,
perplexity, activity and event-driven MACs of an exported model, state carried from
the first word to the last.

Perplexity follows the project convention (DEVELOPERS.md): exp of the mean negative
log-probability over the predicted tokens, i.e. every token but the first.

Two ways to the same output: ``score_text`` / ``score_file`` hold the whole text, its
tokens and log-probabilities (~80 bytes a token; a ``TextScore`` for Python callers),
while ``write_score`` / ``write_score_file`` read the text a line at a time and write the
report as they go, in memory that does not grow with the text (what the command needs
for a corpus). Their output is byte for byte what printing the first way's report gives:
the mean log-probability is summed in numpy's order (``pairwise_sum``).
"""

from __future__ import annotations

import codecs
import json
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

import numpy as np

from dualsparse.engine.runtime import EOS, Engine, encode_text_lines
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
    summary = _summary(engine, model, file, len(log_probs), unknown, loss)
    if compare_with is not None:
        _add_comparison(summary, log_probs, compare_with, ids)
    return TextScore(summary, words, log_probs)


def _summary(
    engine: Engine, model: str, file: str, scored: int, unknown: int, loss: float
) -> dict[str, Any]:
    """What ``score --json`` prints before ``log_probs``: the counts of the tokens fed."""
    counts = engine.counts()
    return {
        "model": model,
        "file": file,
        "tokens_scored": scored,
        "unknown_words": unknown,
        "loss": loss,
        "perplexity": math.exp(loss),
        "layer_activity": counts["layer_activity"],
        "event_macs_per_token": counts["event_macs_per_token"],
    }


def _add_comparison(summary: dict, log_probs: np.ndarray, run_dir: str | Path, ids) -> None:
    from dualsparse.engine.compare import compare

    summary["comparison"] = compare(log_probs, summary["layer_activity"], run_dir, ids)


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
    lines = []
    if per_token:
        for t, lp in enumerate(score.log_probs, start=1):
            lines.append(_token_line(t, score.words[t], lp))
    return "\n".join([*lines, *_summary_lines(score.summary)])


def _token_line(t: int, word: str, log_prob: float) -> str:
    return f"{t}\t{word}\t{log_prob:.6f}"


def _summary_lines(s: dict[str, Any]) -> list[str]:
    lines = []
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
    return lines


# ---------------------------------------------------------------- streaming


def text_words(lines: Iterable[str]) -> Iterator[list[str]]:
    """Each line's words and ``<eos>`` (``encode_text_lines``'s convention), from lines as
    a text file yields them: a line holding other line breaks (``str.splitlines``') is
    split at them, as the whole text would have been."""
    for chunk in lines:
        for line in chunk.splitlines():
            yield [*line.split(), EOS]


class _LogProbSpool:
    """A text's log-probabilities in a temporary file (8 bytes a token), written in blocks
    and read back in order: the mean needs them all, the JSON report lists them after
    the summary."""

    BLOCK = 8192

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile()
        self.block, self.filled, self.count = np.empty(self.BLOCK), 0, 0

    def add(self, value: float) -> None:
        self.block[self.filled] = value
        self.filled += 1
        self.count += 1
        if self.filled == self.BLOCK:
            self._flush()

    def _flush(self) -> None:
        self.file.write(self.block[: self.filled].tobytes())
        self.filled = 0

    def reader(self) -> Callable[[int], np.ndarray]:
        """``take(k)``: the next k values, from the first on."""
        self._flush()
        self.file.seek(0)
        return lambda k: np.frombuffer(self.file.read(8 * k), dtype=np.float64)

    def blocks(self) -> Iterator[np.ndarray]:
        take, left = self.reader(), self.count
        while left:
            block = take(min(left, self.BLOCK))
            left -= len(block)
            yield block

    def close(self) -> None:
        self.file.close()


def pairwise_sum(take: Callable[[int], np.ndarray], n: int, block: int = 8192) -> float:
    """The sum of ``n`` float64 values read in order by ``take``, added exactly as numpy's
    ``np.add.reduce`` (so ``mean``) adds a contiguous array: halves split at n/2 rounded
    down to a multiple of 8, down to 128 values summed with 8 accumulators. numpy does
    that itself on any piece of up to ``block`` (at least 128) values, so only those are
    in memory at once."""
    if n <= max(block, 128):
        return float(np.add.reduce(take(n)))
    half = n // 2 - (n // 2) % 8
    return pairwise_sum(take, half, block) + pairwise_sum(take, n - half, block)


def write_score(
    engine: Engine,
    lines: Iterable[str],
    out: TextIO,
    *,
    model: str = "",
    file: str = "<text>",
    as_json: bool = False,
    per_token: bool = False,
    compare_with: str | Path | None = None,
) -> dict[str, Any]:
    """Score the text ``lines`` yields (a file object read line by line, a generator …)
    from the engine's current state and write to ``out`` what printing ``score_text``'s
    report writes: ``json.dumps(score.to_dict(), indent=1)`` with ``as_json``, else
    ``format_score(score, per_token)``, and a newline. Per-token lines are written as the
    tokens are scored; the log-probabilities wait on disk for the mean and the JSON list.
    ``compare_with`` (a run directory) needs the whole text's ids and log-probabilities
    in memory, as the PyTorch model reads them at once. Returns the summary."""
    spool, ids_seen = _LogProbSpool(), [] if compare_with is not None else None
    try:
        tokens, unknown, previous = 0, 0, -1
        for words in text_words(lines):
            ids, unknown_here = engine.encode(words)
            unknown += unknown_here
            for word, token in zip(words, ids, strict=True):
                if previous >= 0:  # as Engine.score: feed a token, then the next one's log p
                    engine.step(previous)
                    log_prob = engine.log_prob(token)
                    spool.add(log_prob)
                    if per_token and not as_json:
                        out.write(_token_line(spool.count, word, log_prob) + "\n")
                previous = token
                tokens += 1
                if ids_seen is not None:
                    ids_seen.append(token)
        if tokens < 2:
            raise DualsparseError(f"{file} has fewer than two tokens; nothing to score")
        loss = -(pairwise_sum(spool.reader(), spool.count) / spool.count)
        summary = _summary(engine, model, file, spool.count, unknown, loss)
        if compare_with is not None:
            log_probs = np.concatenate(list(spool.blocks()))
            _add_comparison(summary, log_probs, compare_with, ids_seen)
        if not as_json:
            out.write("\n".join(_summary_lines(summary)) + "\n")
        else:  # the summary, then the list, as json.dumps(..., indent=1) lays them out
            out.write(json.dumps(summary, indent=1)[: -len("\n}")] + ',\n "log_probs": [\n')
            separator = ""
            for block in spool.blocks():
                for value in block.tolist():
                    out.write(separator + "  " + json.dumps(value))
                    separator = ",\n"
            out.write("\n ]\n}\n")
        return summary
    finally:
        spool.close()


def write_score_file(
    model_dir: str | Path,
    file: str | Path,
    out: TextIO,
    *,
    float64: bool = False,
    compare_with: str | Path | None = None,
    as_json: bool = False,
    per_token: bool = False,
) -> dict[str, Any]:
    """``dualsparse score MODEL FILE`` streaming: ``write_score`` on the file, read a line
    at a time; what it writes is what printing ``score_file``'s report writes. The file is
    checked to be UTF-8 first (in blocks), so a bad byte is the same error as before and
    comes before any output."""
    engine = Engine.load(model_dir, dtype=np.float64 if float64 else np.float32)
    check_utf8(file)
    try:
        with open(file, encoding="utf-8") as handle:
            return write_score(
                engine,
                handle,
                out,
                model=str(model_dir),
                file=str(file),
                as_json=as_json,
                per_token=per_token,
                compare_with=compare_with,
            )
    except (OSError, UnicodeDecodeError) as exc:  # the file changed since it was checked
        raise DualsparseError(f"cannot read {file} ({exc}); give a UTF-8 text file") from None


def check_utf8(path: str | Path, block: int = 1 << 20) -> None:
    """``read_text``'s errors for a file that cannot be read or is not UTF-8 (positions
    counted from the file's start), reading it a block at a time."""
    decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
    try:
        with open(path, "rb") as handle:
            while True:
                data = handle.read(block)
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(data, final=not data)
                except UnicodeDecodeError as exc:
                    raise DualsparseError(
                        f"cannot read {path} ({_decode_error(exc, offset - pending)}); "
                        "give a UTF-8 text file"
                    ) from None
                if not data:
                    return
                offset += len(data)
    except OSError as exc:
        raise DualsparseError(f"cannot read {path} ({exc}); give a UTF-8 text file") from None


def _decode_error(exc: UnicodeDecodeError, offset: int) -> str:
    """What str(exc) would say had the whole file been decoded at once (CPython's
    wording), ``offset`` being where the decoded piece starts in the file."""
    start, end = exc.start + offset, exc.end + offset
    if exc.start < len(exc.object) and exc.end == exc.start + 1:
        return (
            f"'{exc.encoding}' codec can't decode byte 0x{exc.object[exc.start]:02x} in "
            f"position {start}: {exc.reason}"
        )
    return f"'{exc.encoding}' codec can't decode bytes in position {start}-{end - 1}: {exc.reason}"
