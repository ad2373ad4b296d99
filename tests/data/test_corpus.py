import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA
from dualsparse.data.corpus import (
    Vocabulary,
    count_tokens,
    find_split_files,
    read_corpus,
    read_tokens,
)
from dualsparse.errors import DualsparseError

PTB_DIR = SHARED_DATA / "ptb"
BROWN_DIR = SHARED_DATA / "brown"
NAMINGS = {
    "ptb": ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    "wiki": ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
    "plain": ("train.txt", "valid.txt", "test.txt"),
}


def write_splits(directory: Path, names: tuple[str, str, str], texts=("a b\n",) * 3) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in zip(names, texts, strict=True):
        (directory / name).write_text(text, encoding="utf-8")


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (shared dev data is absent)")
    return path


def error_message(call, *args) -> str:
    with pytest.raises(DualsparseError) as info:
        call(*args)
    return str(info.value)


# --- reading tokens ---------------------------------------------------------


def test_every_line_gets_one_eos_blank_lines_included(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b" a b \n\nc\r\nd")  # blank line, CRLF, no final newline
    assert read_tokens(path) == ["a", "b", "<eos>", "<eos>", "c", "<eos>", "d", "<eos>"]
    assert count_tokens(path) == 8


def test_tiny_corpus_counts(tiny_corpus_dir):
    # 10 words per line: 14 train lines, 3 valid, 3 test.
    assert count_tokens(tiny_corpus_dir / "train.txt") == 14 * 11
    assert len(read_tokens(tiny_corpus_dir / "valid.txt")) == 3 * 11
    assert read_tokens(tiny_corpus_dir / "test.txt")[:11] == (
        "the old dog ran down the river to the sea <eos>".split()
    )


@pytest.mark.parametrize("name, expected", [("ptb.valid.txt", 73_760), ("ptb.test.txt", 82_430)])
def test_real_ptb_counts(name, expected):
    path = need(PTB_DIR / name)
    assert count_tokens(path) == expected
    assert len(read_tokens(path)) == expected


@pytest.mark.parametrize(
    "name, expected", [("train.txt", 863_372), ("valid.txt", 107_473), ("test.txt", 107_598)]
)
def test_real_brown_counts(name, expected):
    assert count_tokens(need(BROWN_DIR / name)) == expected


def test_missing_file(tmp_path):
    message = error_message(read_tokens, tmp_path / "nope.txt")
    assert "nope.txt does not exist" in message and "UTF-8 text file" in message


def test_directory_is_not_a_file(tmp_path):
    assert "is not a regular file" in error_message(read_tokens, tmp_path)


@pytest.mark.parametrize("content", [b"", b"\n  \n\t\n"])
def test_empty_or_blank_file(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    message = error_message(count_tokens, path)
    assert "empty.txt has no words" in message and "one sentence per line" in message


def test_binary_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"fine line\nab\x00cd\n")
    message = error_message(read_tokens, path)
    # the NUL is the 3rd byte of line 2, which starts at byte 10
    assert "model.bin looks binary" in message and "line 2, byte 12" in message


def test_not_utf8_names_line_and_byte(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("ok line\nbad caf\u00e9 here\n".encode("latin-1"))
    message = error_message(read_tokens, path)
    # line 2 starts at byte 8; the e-acute is its 8th byte (offset 7)
    assert "latin1.txt is not UTF-8 (line 2, byte 15" in message and "iconv" in message


# --- vocabulary -------------------------------------------------------------


def test_vocabulary_first_seen_order_and_unk_appended(tmp_path):
    write_splits(tmp_path, NAMINGS["plain"], ("the cat\nthe dog\n", "the bird\n", "dog\n"))
    corpus = read_corpus(tmp_path)
    assert corpus.vocab.itos == ["the", "cat", "<eos>", "dog", "<unk>"]
    assert (corpus.vocab.eos_id, corpus.vocab.unk_id) == (2, 4)
    assert corpus.train.tolist() == [0, 1, 2, 0, 3, 2]
    assert corpus.valid.tolist() == [0, 4, 2]
    assert corpus.test.dtype == torch.long and corpus.test.tolist() == [3, 2]
    assert corpus.oov_counts == {"train": 0, "valid": 1, "test": 0}


def test_tiny_corpus(tiny_corpus_dir):
    corpus = read_corpus(tiny_corpus_dir)
    vocab = corpus.vocab
    assert vocab.itos[:8] == ["the", "cat", "sat", "on", "mat", "and", "dog", "<eos>"]
    # train has a literal <unk>, so it is not appended; the last new word is "spring"
    assert vocab.itos[-1] == "spring" and vocab.itos[vocab.unk_id] == "<unk>"
    assert [len(corpus.train), len(corpus.valid), len(corpus.test)] == [154, 33, 33]
    assert corpus.oov_counts == {"train": 0, "valid": 3, "test": 2}
    # test: 2 unknown words plus the literal <unk>
    assert (corpus.test == vocab.unk_id).sum().item() == 3
    assert vocab.decode(corpus.valid[:11]) == (
        "the <unk> sat on the mat and the dog slept <eos>".split()
    )
    assert corpus.name == "tiny"
    assert corpus.paths["valid"] == str(tiny_corpus_dir / "valid.txt")


def test_given_vocabulary_is_not_extended(tmp_path):
    write_splits(tmp_path, NAMINGS["plain"], ("a new b\n", "b\n", "zzz a\n"))
    vocab = Vocabulary(["a", "b", "<eos>", "<unk>"])
    corpus = read_corpus(tmp_path, vocab)
    assert corpus.vocab is vocab and len(vocab) == 4
    assert corpus.train.tolist() == [0, 3, 1, 2]
    assert corpus.oov_counts == {"train": 1, "valid": 0, "test": 1}


def test_encode_decode():
    vocab = Vocabulary(["x", "<eos>", "<unk>"])
    assert vocab.add("x") == 0 and vocab.add("y") == 3
    assert vocab.encode(["y", "q", "x"]) == [3, 2, 0]
    assert vocab.decode(torch.tensor([[3], [0]])) == ["y", "x"]
    assert Vocabulary(["x"]) != vocab and Vocabulary(vocab.itos) == vocab


def test_missing_specials_are_reported():
    vocab = Vocabulary(["x"])
    assert "has no <unk>" in error_message(vocab.encode, ["q"])
    assert "has no <eos>" in error_message(lambda: vocab.eos_id)


def test_vocab_json_round_trip(tmp_path):
    vocab = Vocabulary(["the", "caf\u00e9", "<eos>", "<unk>"])
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "format": "dualsparse-vocab",
        "version": 1,
        "itos": ["the", "caf\u00e9", "<eos>", "<unk>"],
    }
    assert Vocabulary.load(path) == vocab
    assert Vocabulary.from_json(vocab.to_json()).stoi == {
        "the": 0,
        "caf\u00e9": 1,
        "<eos>": 2,
        "<unk>": 3,
    }
    vocab.save(path)  # overwriting leaves no temporary file behind
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]


GOOD = {"format": "dualsparse-vocab", "version": 1}


@pytest.mark.parametrize(
    "d, expected",
    [
        ([], "is not a dualsparse-vocab file"),
        ({"format": "torchtext", "version": 1, "itos": ["<eos>", "<unk>"]}, "not a dualsparse"),
        ({**GOOD, "version": 7, "itos": ["<eos>", "<unk>"]}, "has version 7"),
        ({**GOOD, "itos": "abc"}, "no 'itos' list"),
        ({**GOOD, "itos": ["<eos>", "<unk>", 3]}, "not single words (first: 3)"),
        ({**GOOD, "itos": ["<eos>", "<unk>", "two words"]}, "first: 'two words'"),
        ({**GOOD, "itos": ["<eos>", "<unk>", ""]}, "not single words"),
        ({**GOOD, "itos": ["a", "<eos>", "a", "<unk>"]}, "lists 1 words twice (first: 'a')"),
        ({**GOOD, "itos": ["a", "<eos>"]}, "has no <unk> entry"),
    ],
)
def test_malformed_vocab_json(d, expected):
    message = error_message(Vocabulary.from_json, d)
    assert expected in message and "rebuild it from the training data" in message


def test_vocab_load_errors(tmp_path):
    assert "does not exist" in error_message(Vocabulary.load, tmp_path / "vocab.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": ', encoding="utf-8")
    message = error_message(Vocabulary.load, broken)
    assert "broken.json is not valid JSON" in message and "vocab.json saved" in message


# --- split files ------------------------------------------------------------


@pytest.mark.parametrize("scheme", NAMINGS)
def test_each_naming_scheme(tmp_path, scheme):
    write_splits(tmp_path, NAMINGS[scheme], ("a b\n", "b\n", "a\n"))
    files = find_split_files(tmp_path)
    assert [files[s].name for s in ("train", "valid", "test")] == list(NAMINGS[scheme])
    corpus = read_corpus(tmp_path)
    assert corpus.train.tolist() == [0, 1, 2] and corpus.test.tolist() == [0, 2]


def test_ptb_naming_wins_over_plain(tmp_path):
    write_splits(tmp_path, NAMINGS["plain"])
    write_splits(tmp_path, NAMINGS["ptb"])
    assert find_split_files(tmp_path)["train"].name == "ptb.train.txt"


def test_missing_split(tmp_path):
    write_splits(tmp_path, NAMINGS["plain"])
    (tmp_path / "valid.txt").unlink()
    message = error_message(find_split_files, tmp_path)
    assert "has train.txt, test.txt but no valid.txt" in message
    assert "expected train.txt, valid.txt, test.txt (or ptb.*.txt / wiki.*.tokens)" in message


def test_missing_or_empty_dir(tmp_path):
    assert "does not exist" in error_message(read_corpus, tmp_path / "gone")
    (tmp_path / "notes.md").write_text("x")
    message = error_message(read_corpus, tmp_path)
    assert "has no split files (it contains: notes.md)" in message and "expected" in message
    assert "is not a directory" in error_message(find_split_files, tmp_path / "notes.md")


def test_nested_dir_is_suggested(tmp_path):
    write_splits(tmp_path / "wikitext-2", NAMINGS["wiki"])
    message = error_message(find_split_files, tmp_path)
    assert f"the split files are in {tmp_path / 'wikitext-2'}; pass that directory" in message


def test_real_ptb_files_as_corpus(tmp_path):
    valid, test = need(PTB_DIR / "ptb.valid.txt"), need(PTB_DIR / "ptb.test.txt")
    shutil.copy(valid, tmp_path / "ptb.train.txt")  # the train split is not available here
    shutil.copy(valid, tmp_path / "ptb.valid.txt")
    shutil.copy(test, tmp_path / "ptb.test.txt")
    corpus = read_corpus(tmp_path)
    assert [len(corpus.train), len(corpus.valid), len(corpus.test)] == [73_760, 73_760, 82_430]
    assert torch.equal(corpus.train, corpus.valid)
    assert corpus.vocab.decode(corpus.train[:15]) == (
        "consumers may want to move their telephones a little closer to the tv set <eos>".split()
    )
    # PTB is already <unk>-replaced to 10k types, so valid's vocabulary covers it
    assert "<unk>" in corpus.vocab.stoi and len(corpus.vocab) < 10_000
    assert corpus.oov_counts["valid"] == 0 and corpus.oov_counts["test"] > 0
