"""Corpora, vocabulary, dataset download with checksums, and BPTT batching."""

from dualsparse.data.batching import batchify, bptt_windows, get_batch, lr_scale
from dualsparse.data.corpus import (
    Corpus,
    Vocabulary,
    count_tokens,
    find_split_files,
    read_corpus,
    read_tokens,
)
from dualsparse.data.download import default_cache_dir, fetch_dataset, resolve_corpus

__all__ = [
    "Corpus",
    "Vocabulary",
    "batchify",
    "bptt_windows",
    "count_tokens",
    "default_cache_dir",
    "fetch_dataset",
    "find_split_files",
    "get_batch",
    "lr_scale",
    "read_corpus",
    "read_tokens",
    "resolve_corpus",
]
