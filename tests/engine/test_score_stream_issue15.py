"""`score` in memory that does not grow with the text (issue 15, point 11: it held ~80
bytes a token): the streamed report is byte for byte the whole-text report, the text is
read as it is scored, and errors are the same, before any output."""

import io
import json
import tracemalloc

import numpy as np
import pytest
from engine_helpers import WORDS, export_fixture, random_model

from conftest import tiny_run_config
from dualsparse.data.corpus import read_corpus
from dualsparse.engine.export import export_run
from dualsparse.engine.runtime import Engine
from dualsparse.engine.score import (
    check_utf8,
    format_score,
    pairwise_sum,
    read_text,
    score_file,
    score_text,
    write_score,
    write_score_file,
)
from dualsparse.errors import DualsparseError
from dualsparse.training.loop import train


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_fixture(tmp_path_factory.mktemp("stream"))(random_model("egru", 0.5))


def awkward_text(lines: int, seed: int = 0) -> str:
    """Known and unknown words, empty lines, CRLF and CR endings, a vertical tab inside a
    line (str.splitlines breaks there), no newline at the end."""
    rng = np.random.default_rng(seed)
    vocabulary = [*WORDS[2:], "zzz", "<unk>", "ünï"]
    out = []
    for i in range(lines):
        words = " ".join(rng.choice(vocabulary, size=int(rng.integers(0, 12))))
        ending = ["\n", "\r\n", "\r", "\x0b", "\n\n"][i % 5]
        out.append(f"  {words} {ending}")
    return "".join(out) + "w3 w4"


def whole_text_report(model, path, float64, as_json, per_token) -> str:
    """What `dualsparse score` printed before: the report of the whole-text score."""
    score = score_file(model, path, float64=float64)
    return (
        json.dumps(score.to_dict(), indent=1) if as_json else format_score(score, per_token)
    ) + "\n"


@pytest.mark.parametrize("float64", [False, True])
@pytest.mark.parametrize("as_json, per_token", [(False, False), (False, True), (True, False)])
def test_the_streamed_report_is_byte_for_byte_the_whole_text_report(
    exported, tmp_path, float64, as_json, per_token
):
    path = tmp_path / "text.txt"
    path.write_bytes(awkward_text(3000).encode("utf-8"))  # ~17k tokens, three spool blocks
    out = io.StringIO()
    summary = write_score_file(
        exported, path, out, float64=float64, as_json=as_json, per_token=per_token
    )
    assert summary["tokens_scored"] > 2 * 8192 and summary["unknown_words"] > 0
    assert out.getvalue() == whole_text_report(exported, path, float64, as_json, per_token)


@pytest.mark.parametrize("n", [*range(1, 20), 127, 128, 129, 136, 1000, 8192, 8193, 70001])
def test_pairwise_sum_adds_in_numpys_order(n):
    values = -np.random.default_rng(n).exponential(3.0, n) * np.logspace(-3, 3, n)
    for block in (128, 136, 8192):  # numpy sums 128 values or fewer without splitting
        reads = []

        def take(k, reads=reads):
            reads.append(k)
            start = sum(reads) - k
            return values[start : start + k]

        total = pairwise_sum(take, n, block)
        assert total == float(np.add.reduce(values)) and sum(reads) == n
        assert max(reads) <= max(block, 128)
        assert -(total / n) == -float(values.mean())  # how score computes its loss


def generated_lines(count: int, drawn: list | None = None):
    """A text that never exists whole: each line made when it is asked for (and counted
    in ``drawn``)."""
    for i in range(count):
        if drawn is not None:
            drawn.append(i)
        yield " ".join(f"w{(i * 7 + k) % 28}" for k in range(10)) + "\n"


class FirstWrite(io.StringIO):
    """An output that notes how much of the text had been read when it was first written."""

    def __init__(self, drawn):
        super().__init__()
        self.drawn, self.lines_read_at_first_write = drawn, None

    def write(self, text):
        if self.lines_read_at_first_write is None:
            self.lines_read_at_first_write = len(self.drawn)
        return super().write(text)


def test_a_generated_text_is_scored_as_it_is_read(exported):
    drawn = []
    out = FirstWrite(drawn)
    summary = write_score(Engine.load(exported), generated_lines(2000, drawn), out, per_token=True)
    assert out.lines_read_at_first_write == 1 and len(drawn) == 2000
    assert summary["tokens_scored"] == 2000 * 11 - 1
    whole = score_text(Engine.load(exported), "".join(generated_lines(2000)))
    assert out.getvalue() == format_score(whole, per_token=True) + "\n"


def peak_bytes(engine, lines: int) -> int:
    tracemalloc.start()
    try:
        write_score(engine, generated_lines(lines), io.StringIO())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_text(exported):
    engine = Engine.load(exported)
    peak_bytes(engine, 10)  # first calls allocate what they keep (caches, compiled code)
    # 11k and 22k tokens, both past the blocks of 8192 log-probabilities read and written
    shorter, longer = peak_bytes(engine, 1000), peak_bytes(engine, 2000)
    # holding the 11k more tokens would take 88 kB as float64 alone, ~0.9 MB as words
    assert longer - shorter < 32_000, (shorter, longer)


def test_a_file_object_read_line_by_line_gives_the_file_report(exported, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(awkward_text(50, seed=1), encoding="utf-8")
    out = io.StringIO()
    with open(path, encoding="utf-8") as handle:
        write_score(Engine.load(exported), handle, out, model=str(exported), file=str(path))
    assert out.getvalue() == whole_text_report(exported, path, False, False, False)


@pytest.mark.parametrize(
    "content",
    [
        b"w1 w2\n" * 50 + b"caf\xe9 w3\n" + b"w4\n" * 10,  # a stray byte mid-file
        b"w1 w2\n" * 50 + b"\xe2\x82",  # a sequence cut at the end
        b"w1 w2 \xe2\x82" + b"w1\n" * 10,  # one cut by the next byte
    ],
)
def test_a_file_that_is_not_utf8_is_the_same_error_before_any_output(exported, tmp_path, content):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DualsparseError) as before:
        read_text(path)
    for block in (1, 7, 64, 1 << 20):  # the blocks the check reads never show
        with pytest.raises(DualsparseError) as now:
            check_utf8(path, block)
        assert str(now.value) == str(before.value)
    out = io.StringIO()
    with pytest.raises(DualsparseError) as streamed:
        write_score_file(exported, path, out, per_token=True)
    assert str(streamed.value) == str(before.value) and out.getvalue() == ""


@pytest.mark.parametrize("as_json", [False, True])
def test_the_streamed_comparison_with_the_pytorch_run_is_the_whole_text_one(
    tiny_corpus_dir, tmp_path, as_json
):
    run_dir = tmp_path / "run"
    train(tiny_run_config(), read_corpus(tiny_corpus_dir), run_dir, progress=False)
    model, text = export_run(run_dir, tmp_path / "export"), tiny_corpus_dir / "test.txt"
    out = io.StringIO()
    summary = write_score_file(model, text, out, as_json=as_json, compare_with=run_dir)
    assert summary["comparison"]["pytorch_float32"]["max_abs_diff"] < 1e-4
    whole = score_file(model, text, compare_with=run_dir)
    report = json.dumps(whole.to_dict(), indent=1) if as_json else format_score(whole)
    assert out.getvalue() == report + "\n"


def test_too_short_a_text_is_the_same_error_and_no_output(exported):
    out = io.StringIO()
    with pytest.raises(DualsparseError, match="^x has fewer than two tokens; nothing to score$"):
        write_score(Engine.load(exported), iter([""]), out, file="x", per_token=True)
    assert out.getvalue() == ""
