"""Fixtures shared by all test folders: keep them tiny and hand-countable."""

from pathlib import Path

import pytest

# Real corpora for development (read-only); tests using them skip when absent.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# A made-up 200-word corpus in PTB format: every line has exactly 10 words, so
# train = 14 lines = 154 tokens with <eos>, valid and test = 3 lines = 33 tokens.
# Words absent from train: valid "zebra", "giraffe", "delayed"; test "sea", "boats".
# train and test also contain a literal <unk>, as PTB does.
TINY_TRAIN = """\
the cat sat on the mat and the dog sat
a dog ran to the park with a small ball
the old man said the weather was cold in N
she bought N apples and a loaf of bread there
the market opened early and closed late on friday night
prices rose N % after the <unk> report was released
the children played in the park until the sun set
he said the company would hire N new workers soon
rain fell on the city for three days in march
the river rose and the old bridge was closed again
a small boat sailed down the river at dawn today
the dog and the cat slept by the warm fire
investors sold shares as the market fell sharply on monday
the new bridge opened to traffic in the spring sun
"""
TINY_VALID = """\
the zebra sat on the mat and the dog slept
a small boat sailed to the city in the spring
prices fell N % as the giraffe report was delayed
"""
TINY_TEST = """\
the old dog ran down the river to the sea
he bought three new boats and a loaf of <unk>
the market closed early on friday and rose on monday
"""


def ptb_format(text: str) -> str:
    """Mikolov's files pad every line with one space on each side."""
    return "".join(f" {line} \n" for line in text.splitlines())


@pytest.fixture
def tiny_corpus_dir(tmp_path: Path) -> Path:
    """A directory with train.txt / valid.txt / test.txt of the tiny corpus."""
    directory = tmp_path / "tiny"
    directory.mkdir()
    for split, text in (("train", TINY_TRAIN), ("valid", TINY_VALID), ("test", TINY_TEST)):
        (directory / f"{split}.txt").write_text(ptb_format(text), encoding="utf-8")
    return directory
