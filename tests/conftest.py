"""Fixtures shared by all test folders: keep them tiny and hand-countable."""

from pathlib import Path

import pytest
import torch
import yaml

from dualsparse.config import RunConfig
from dualsparse.errors import DualsparseError

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


def error_message(call, *args) -> str:
    """The message of the DualsparseError that ``call(*args)`` must raise."""
    with pytest.raises(DualsparseError) as info:
        call(*args)
    return str(info.value)


def file_contents(directory: Path) -> dict[Path, bytes]:
    """Every file below ``directory`` with its bytes: compare before/after to see any write."""
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def temp_files(directory: Path) -> list[Path]:
    """Leftovers of interrupted atomic writes (checkpoint dirs and tempfiles)."""
    return [
        p
        for p in directory.rglob("*")
        if p.name.startswith(".incoming-") or p.name.endswith(".tmp")
    ]


def write_tiny_corpus(directory: Path) -> Path:
    """train.txt / valid.txt / test.txt of the tiny corpus in ``directory`` (created)."""
    directory.mkdir(parents=True)
    for split, text in (("train", TINY_TRAIN), ("valid", TINY_VALID), ("test", TINY_TEST)):
        (directory / f"{split}.txt").write_text(ptb_format(text), encoding="utf-8")
    return directory


@pytest.fixture
def tiny_corpus_dir(tmp_path: Path) -> Path:
    """A directory with train.txt / valid.txt / test.txt of the tiny corpus."""
    return write_tiny_corpus(tmp_path / "tiny")


# A run that trains in well under a second on the tiny corpus: 154 train tokens in
# 4 columns = 5-7 windows of ~8 steps per epoch; default dropouts stay on so that
# resume tests also cover the random-number streams.
TINY_RUN = {
    "model": {"type": "egru", "emb_size": 16, "hidden_sizes": [16, 12]},
    "train": {
        "epochs": 1,
        "batch_size": 4,
        "bptt": 8,
        "eval_batch_size": 2,
        "lr": 0.01,
        "log_interval": 1000,
    },
}


# Every dropout off: the model is a deterministic function of weights and input.
NO_DROPOUT = {
    "dropout_words": 0.0,
    "dropout_emb": 0.0,
    "dropout_forward": 0.0,
    "dropout_output": 0.0,
    "dropout_connect": 0.0,
}


def tiny_run_dict(model: dict | None = None, **train_overrides) -> dict:
    """TINY_RUN with some model keys and train keys replaced."""
    return {
        "model": {**TINY_RUN["model"], **(model or {})},
        "train": {**TINY_RUN["train"], **train_overrides},
    }


def tiny_run_config(model: dict | None = None, **train_overrides) -> RunConfig:
    return RunConfig.from_dict(tiny_run_dict(model, **train_overrides))


def write_run_config(path: Path, model: dict | None = None, **train_overrides) -> Path:
    """A tiny run's config as the YAML file a user would give to --config."""
    path.write_text(yaml.safe_dump(tiny_run_dict(model, **train_overrides)), encoding="utf-8")
    return path


def resume_run(run_dir: Path, corpus, overrides=(), **kwargs):
    """What `dualsparse train --resume RUN --set ...` does, on the corpus given."""
    from dualsparse.runs import open_for_resume
    from dualsparse.training.loop import train

    point = open_for_resume(run_dir, overrides)
    return train(point.config, corpus, run_dir, resume=True, progress=False, **kwargs)


@pytest.fixture
def tiny_config_file(tmp_path: Path) -> Path:
    return write_run_config(tmp_path / "tiny.yaml")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny matrices gain nothing from threads, and on a shared 2-core machine the
    OpenMP workers of a busy pool make every small matmul ~100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# The modules that take a minute or more, run first: with pytest-xdist's --dist loadfile
# (pyproject's addopts) each worker takes whole modules in collection order, so a long
# module collected last would leave the other workers idle while it runs.
SLOW_MODULES_FIRST = (
    "tests/test_demo.py",
    "tests/reports/test_report.py",
    "tests/training/test_distributed.py",
    "tests/sweeps/test_runner.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        path = item.nodeid.split("::", 1)[0]
        return (
            SLOW_MODULES_FIRST.index(path)
            if path in SLOW_MODULES_FIRST
            else len(SLOW_MODULES_FIRST)
        )

    items.sort(key=rank)  # stable: the order within each rank stays as collected
