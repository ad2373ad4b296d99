import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import SHARED_DATA, TINY_TEST, TINY_TRAIN, TINY_VALID
from dualsparse.data import download
from dualsparse.data.download import (
    DatasetSource,
    RemoteFile,
    default_cache_dir,
    fetch_dataset,
    resolve_corpus,
)
from dualsparse.errors import DualsparseError

DEAD_URL = "http://127.0.0.1:9"  # the discard port: connection refused, no network needed
PTB_MD5 = {
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def offline_ptb(monkeypatch, md5: dict[str, str] = PTB_MD5) -> None:
    """Keep the real names and md5s, but make every download fail at once."""
    files = tuple(RemoteFile(name, f"{DEAD_URL}/{name}", md5[name]) for name in PTB_MD5)
    monkeypatch.setitem(download.DATASETS, "ptb", DatasetSource(files=files))


def fetch_error(*args, **kwargs) -> str:
    with pytest.raises(DualsparseError) as info:
        fetch_dataset(*args, **kwargs)
    return str(info.value)


def test_builtin_table_matches_the_published_checksums():
    assert {f.name: f.md5 for f in download.DATASETS["ptb"].files} == PTB_MD5
    (wikitext_zip,) = download.DATASETS["wikitext2"].files
    assert wikitext_zip.md5 == "542ccefacc6c27f945fb54453812b3cd"
    assert wikitext_zip.url.endswith("/wikitext-2-v1.zip")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DUALSPARSE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DUALSPARSE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "dualsparse"


def test_unknown_dataset(tmp_path):
    message = fetch_error("wikitext103", tmp_path)
    assert "unknown dataset 'wikitext103'; choose one of ptb, wikitext2" in message
    assert "--data DIR" in message


def test_offline_error_says_which_files_to_put_where(monkeypatch, tmp_path):
    offline_ptb(monkeypatch)
    message = fetch_error("ptb", tmp_path, timeout=2)
    assert "downloading ptb.train.txt from http://127.0.0.1:9/ptb.train.txt failed" in message
    for name, md5 in PTB_MD5.items():
        assert f"{name} (md5 {md5}" in message
    assert f"into {tmp_path / 'ptb'}" in message and "--data DIR" in message
    assert list((tmp_path / "ptb").iterdir()) == []  # no partial file left behind


def test_download_switched_off(monkeypatch, tmp_path):
    offline_ptb(monkeypatch)
    message = fetch_error("ptb", tmp_path, download=False)
    assert "downloading is switched off" in message and "ptb.valid.txt (md5 aa0aff" in message
    assert not (tmp_path / "ptb").exists()


def test_good_cached_files_need_no_network(monkeypatch, tmp_path):
    ptb = SHARED_DATA / "ptb"
    if not (ptb / "ptb.valid.txt").exists():
        pytest.skip(f"{ptb} not available (shared dev data is absent)")
    cache = tmp_path / "ptb"
    cache.mkdir()
    shutil.copy(ptb / "ptb.valid.txt", cache)
    shutil.copy(ptb / "ptb.test.txt", cache)
    train = b" the real train split is not available here \n"
    (cache / "ptb.train.txt").write_bytes(train)
    offline_ptb(monkeypatch, {**PTB_MD5, "ptb.train.txt": md5_of(train)})
    assert fetch_dataset("ptb", tmp_path) == cache
    corpus = resolve_corpus(None, "ptb", cache_dir=str(tmp_path))
    assert corpus.name == "ptb" and len(corpus.test) == 82_430 and len(corpus.train) == 9


def test_mismatching_cached_file_is_reported_not_deleted(monkeypatch, tmp_path):
    offline_ptb(monkeypatch)
    bad = tmp_path / "ptb" / "ptb.valid.txt"
    bad.parent.mkdir()
    bad.write_bytes(b"not ptb\n")
    bad_md5 = md5_of(b"not ptb\n")
    message = fetch_error("ptb", tmp_path)
    assert f"cached file {bad} has md5 {bad_md5}" in message
    assert "expected aa0affc06ff7c36e977d7cd49e3839bf; delete it or replace it" in message
    assert bad.read_bytes() == b"not ptb\n"


def serve(tmp_path: Path, name: str, data: bytes, md5: str | None = None) -> RemoteFile:
    """A file reachable by URL without any network: urllib reads file:// URLs."""
    remote = tmp_path / "remote" / name
    remote.parent.mkdir(exist_ok=True)
    remote.write_bytes(data)
    return RemoteFile(name, remote.as_uri(), md5 or md5_of(data))


def test_download_lands_verified(monkeypatch, tmp_path):
    files = tuple(
        serve(tmp_path, f"{s}.txt", t.encode())
        for s, t in (("train", TINY_TRAIN), ("valid", TINY_VALID), ("test", TINY_TEST))
    )
    monkeypatch.setitem(download.DATASETS, "ptb", DatasetSource(files=files))
    target = fetch_dataset("ptb", tmp_path / "cache")
    assert sorted(p.name for p in target.iterdir()) == ["test.txt", "train.txt", "valid.txt"]
    assert (target / "valid.txt").read_text() == TINY_VALID


def test_download_with_wrong_checksum_is_discarded(monkeypatch, tmp_path):
    tampered = b"tampered\n"
    remote = serve(tmp_path, "ptb.train.txt", tampered, md5=PTB_MD5["ptb.train.txt"])
    monkeypatch.setitem(download.DATASETS, "ptb", DatasetSource(files=(remote,)))
    message = fetch_error("ptb", tmp_path / "cache")
    assert f"the downloaded file has md5 {md5_of(tampered)}" in message
    assert "expected f26c4b92c5fdc7b3f8c7cdcb991d8420" in message
    assert list((tmp_path / "cache" / "ptb").iterdir()) == []


def wikitext_zip(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w") as zf:
        for split, text in (("train", TINY_TRAIN), ("valid", TINY_VALID), ("test", TINY_TEST)):
            zf.writestr(f"wikitext-2/wiki.{split}.tokens", text)
    return path.read_bytes()


def test_wikitext_zip_is_verified_then_extracted(monkeypatch, tmp_path):
    cache = tmp_path / "wikitext2"
    cache.mkdir()
    archive = wikitext_zip(cache / "wikitext-2-v1.zip")
    remote = RemoteFile("wikitext-2-v1.zip", f"{DEAD_URL}/w.zip", md5_of(archive))
    source = DatasetSource(files=(remote,), extract=download.DATASETS["wikitext2"].extract)
    monkeypatch.setitem(download.DATASETS, "wikitext2", source)

    corpus = resolve_corpus(None, "wikitext2", cache_dir=str(tmp_path))
    assert corpus.name == "wikitext2" and len(corpus.train) == 154
    assert corpus.paths["test"] == str(cache / "wiki.test.tokens")
    assert fetch_dataset("wikitext2", tmp_path) == cache  # second call: files already good

    edited = cache / "wiki.valid.tokens"
    edited.write_text("my own text\n")
    message = fetch_error("wikitext2", tmp_path)
    assert f"{edited} differs from wikitext-2/wiki.valid.tokens; delete it" in message
    assert edited.read_text() == "my own text\n"

    (cache / "wikitext-2-v1.zip").write_bytes(archive[:-10])
    message = fetch_error("wikitext2", tmp_path)
    assert "wikitext-2-v1.zip has md5" in message and f"expected {md5_of(archive)}" in message


def test_resolve_corpus_needs_exactly_one_source(tiny_corpus_dir):
    for data, dataset in ((None, None), (str(tiny_corpus_dir), "ptb")):
        with pytest.raises(DualsparseError, match=r"give --data DIR or --dataset ptb\|wikitext2"):
            resolve_corpus(data, dataset)
    assert len(resolve_corpus(str(tiny_corpus_dir), None).valid) == 33
