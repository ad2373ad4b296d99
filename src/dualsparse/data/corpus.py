"""Word-level corpora in the Mikolov PTB / WikiText format, and their vocabulary.

The token convention is the one every AWD-LSTM number in the literature uses
(pytorch/examples ``word_language_model``, salesforce/awd-lstm-lm): each line is
split on whitespace and followed by one ``<eos>``, blank lines included; the
vocabulary comes from the train split in first-seen order. Keeping exactly this
convention is what makes our perplexities comparable to published ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dualsparse.errors import DualsparseError
from dualsparse.fileio import atomic_write_text

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")

# Checked in this order; the first naming scheme with all three files wins.
NAMING_SCHEMES: tuple[dict[str, str], ...] = (
    {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"},
    {"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"},
    {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"},
)
_EXPECTED = "expected train.txt, valid.txt, test.txt (or ptb.*.txt / wiki.*.tokens)"

_VOCAB_FORMAT = "dualsparse-vocab"
_VOCAB_VERSION = 1


class Vocabulary:
    """Word <-> id table. It travels with a trained model: ids mean nothing without it."""

    def __init__(self, words: Iterable[str] = ()) -> None:
        self.itos: list[str] = []
        self.stoi: dict[str, int] = {}
        for word in words:
            self.add(word)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"

    def add(self, word: str) -> int:
        """Return the id of ``word``, appending it if new (ids are first-seen order)."""
        index = self.stoi.get(word)
        if index is None:
            index = len(self.itos)
            self.itos.append(word)
            self.stoi[word] = index
        return index

    def _special_id(self, word: str) -> int:
        index = self.stoi.get(word)
        if index is None:
            raise DualsparseError(
                f"vocabulary of {len(self)} words has no {word}; build it with "
                f"read_corpus or add {word} before encoding"
            )
        return index

    @property
    def eos_id(self) -> int:
        return self._special_id(EOS)

    @property
    def unk_id(self) -> int:
        return self._special_id(UNK)

    def encode(self, words: Sequence[str]) -> list[int]:
        """Map words to ids; words outside the vocabulary become ``<unk>``."""
        return _encode_counting_oov(self, words)[0]

    def decode(self, ids: Iterable[int] | torch.Tensor) -> list[str]:
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return [self.itos[int(i)] for i in ids]

    def to_json(self) -> dict:
        return {"format": _VOCAB_FORMAT, "version": _VOCAB_VERSION, "itos": list(self.itos)}

    @classmethod
    def from_json(cls, d: object, source: str = "vocabulary JSON") -> Vocabulary:
        """Validate and rebuild; a silently wrong vocabulary would scramble every id."""
        fix = "re-save it with Vocabulary.save or rebuild it from the training data"
        if not isinstance(d, dict) or d.get("format") != _VOCAB_FORMAT:
            raise DualsparseError(f"{source} is not a {_VOCAB_FORMAT} file; {fix}")
        if d.get("version") != _VOCAB_VERSION:
            raise DualsparseError(
                f"{source} has version {d.get('version')!r}, this dualsparse reads version "
                f"{_VOCAB_VERSION}; {fix}"
            )
        itos = d.get("itos")
        if not isinstance(itos, list):
            raise DualsparseError(f"{source} has no 'itos' list of words; {fix}")
        # A word must survive the reader's whitespace split unchanged to be reachable.
        bad = [w for w in itos if not isinstance(w, str) or w.split() != [w]]
        if bad:
            raise DualsparseError(
                f"{source} has {len(bad)} entries that are not single words "
                f"(first: {bad[0]!r}); {fix}"
            )
        seen: set[str] = set()
        duplicates: list[str] = []
        for word in itos:
            if word in seen:
                duplicates.append(word)
            seen.add(word)
        if duplicates:
            raise DualsparseError(
                f"{source} lists {len(duplicates)} words twice (first: {duplicates[0]!r}); {fix}"
            )
        for special in (EOS, UNK):
            if special not in seen:
                raise DualsparseError(f"{source} has no {special} entry; {fix}")
        return cls(itos)

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically, so a crash never leaves a truncated vocabulary behind."""
        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DualsparseError(
                f"vocabulary file {path} does not exist; give the vocab.json saved with the model"
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise DualsparseError(
                f"cannot read vocabulary file {path} ({e}); give the vocab.json saved with "
                "the model"
            ) from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise DualsparseError(
                f"vocabulary file {path} is not valid JSON ({e}); give the vocab.json saved "
                "with the model"
            ) from None
        return cls.from_json(d, source=f"vocabulary file {path}")


def _encode_counting_oov(vocab: Vocabulary, words: Sequence[str]) -> tuple[list[int], int]:
    """Ids plus how many words were outside the vocabulary (literal ``<unk>`` is not OOV)."""
    stoi = vocab.stoi
    missing = -1
    ids = [stoi.get(w, missing) for w in words]
    n_oov = ids.count(missing)
    if n_oov:
        unk = vocab.unk_id
        ids = [unk if i == missing else i for i in ids]
    return ids, n_oov


@dataclass
class Corpus:
    """Three encoded splits plus what is needed to reproduce or explain them."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocab: Vocabulary
    name: str
    paths: dict[str, str] = field(default_factory=dict)
    oov_counts: dict[str, int] = field(default_factory=dict)


def _iter_line_words(path: str | os.PathLike) -> Iterator[list[str]]:
    """Yield the words of each line, streaming, with checks a user can act on.

    Reads bytes so that a decoding error can name the exact line and byte offset.
    """
    path = Path(path)
    fix = "give a UTF-8 text file with one sentence per line (PTB / WikiText format)"
    if not path.exists():
        raise DualsparseError(f"data file {path} does not exist; {fix}")
    if not path.is_file():
        raise DualsparseError(f"data file {path} is not a regular file; {fix}")
    n_words = 0
    offset = 0
    try:
        with path.open("rb") as f:
            for line_no, raw in enumerate(f, start=1):
                nul = raw.find(b"\x00")
                if nul >= 0:
                    raise DualsparseError(
                        f"data file {path} looks binary (NUL byte on line {line_no}, byte "
                        f"{offset + nul}); {fix}"
                    )
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DualsparseError(
                        f"data file {path} is not UTF-8 (line {line_no}, byte {offset + e.start}:"
                        f" {e.reason}); convert it, e.g. iconv -t UTF-8, or {fix}"
                    ) from None
                if line_no == 1:
                    text = text.removeprefix("\ufeff")
                words = text.split()
                n_words += len(words)
                offset += len(raw)
                yield words
    except OSError as e:
        raise DualsparseError(f"cannot read data file {path} ({e}); {fix}") from None
    if n_words == 0:
        raise DualsparseError(f"data file {path} has no words (empty or only blank lines); {fix}")


def read_tokens(path: str | os.PathLike) -> list[str]:
    """All tokens of one file: each line's words followed by ``<eos>``."""
    tokens: list[str] = []
    for words in _iter_line_words(path):
        tokens.extend(words)
        tokens.append(EOS)
    return tokens


def count_tokens(path: str | os.PathLike) -> int:
    """Token count including one ``<eos>`` per line: the N that perplexity divides by."""
    return sum(len(words) + 1 for words in _iter_line_words(path))


def find_split_files(data_dir: str | os.PathLike) -> dict[str, Path]:
    """Map train/valid/test to files, accepting the PTB, WikiText and plain namings."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DualsparseError(f"data dir {data_dir} does not exist; {_EXPECTED} in it")
    if not data_dir.is_dir():
        raise DualsparseError(f"data dir {data_dir} is not a directory; {_EXPECTED} in it")
    best_found: list[str] = []
    best_missing: list[str] = []
    for scheme in NAMING_SCHEMES:
        found = [name for name in scheme.values() if (data_dir / name).exists()]
        if len(found) == len(scheme):
            return {split: data_dir / scheme[split] for split in SPLITS}
        if len(found) > len(best_found):
            best_found = found
            best_missing = [name for name in scheme.values() if name not in found]
    if best_found:
        raise DualsparseError(
            f"data dir {data_dir} has {', '.join(best_found)} but no "
            f"{', '.join(best_missing)}; {_EXPECTED}"
        )
    hint = _nested_dir_hint(data_dir)
    listing = sorted(p.name for p in data_dir.iterdir())
    shown = ", ".join(listing[:8]) + (", ..." if len(listing) > 8 else "")
    raise DualsparseError(
        f"data dir {data_dir} has no split files (it contains: {shown or 'nothing'}); "
        f"{hint or _EXPECTED}"
    )


def _nested_dir_hint(data_dir: Path) -> str | None:
    """Unzipped archives often put the files one level down (e.g. wikitext-2/)."""
    for sub in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        for scheme in NAMING_SCHEMES:
            if all((sub / name).exists() for name in scheme.values()):
                return f"the split files are in {sub}; pass that directory instead"
    return None


def read_corpus(data_dir: str | os.PathLike, vocab: Vocabulary | None = None) -> Corpus:
    """Read and encode the three splits of ``data_dir``.

    Without ``vocab`` the vocabulary is built from train (first-seen order, plus
    ``<unk>`` at the end when train never contains it). With ``vocab`` (a saved
    model's) it is used unchanged: ids must mean what they meant at training time.
    """
    files = find_split_files(data_dir)
    tokens = {split: read_tokens(files[split]) for split in SPLITS}
    if vocab is None:
        vocab = Vocabulary(tokens["train"])
        vocab.add(EOS)
        vocab.add(UNK)
    encoded: dict[str, torch.Tensor] = {}
    oov_counts: dict[str, int] = {}
    for split in SPLITS:
        ids, oov_counts[split] = _encode_counting_oov(vocab, tokens[split])
        encoded[split] = torch.tensor(ids, dtype=torch.long)
    return Corpus(
        train=encoded["train"],
        valid=encoded["valid"],
        test=encoded["test"],
        vocab=vocab,
        name=Path(data_dir).resolve().name,
        paths={split: str(files[split]) for split in SPLITS},
        oov_counts=oov_counts,
    )
