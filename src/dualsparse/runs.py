"""Runs as the commands see them: open one for evaluation (``load_run``) or to continue
it (``open_for_resume``), where its data came from (``source.json``), and the train,
resume and prune commands as functions (the CLI only parses their arguments)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dualsparse.config import RunConfig, apply_overrides
from dualsparse.data.corpus import Corpus, Vocabulary
from dualsparse.data.download import resolve_corpus
from dualsparse.errors import DualsparseError
from dualsparse.fileio import atomic_write_text, read_json
from dualsparse.models.lm import LanguageModel
from dualsparse.sparsity.masks import apply_masks
from dualsparse.training import checkpoint as ckpt
from dualsparse.training.distributed import torchrun_launch
from dualsparse.training.guards import check_new_run_dir, has_checkpoint, run_lock
from dualsparse.training.loop import TrainSummary, train


@dataclass
class LoadedRun:
    model: LanguageModel
    vocab: Vocabulary
    config: RunConfig
    state: dict[str, Any]
    checkpoint: Path
    masks: dict[str, torch.Tensor]


def load_run(run_dir: str | Path, which: str = "best", device: str = "cpu") -> LoadedRun:
    """The model of a run (``best`` validation checkpoint by default), ready for eval.

    A run may be in training meanwhile: its trainer deletes a checkpoint once the pointers
    name a newer one. A read that fails while the pointer moved is repeated on the
    checkpoint it names now; a failure on the checkpoint the pointer still names is a
    damaged run and reported as such."""
    attempts = 1
    while True:
        path = ckpt.checkpoint_dir(run_dir, which)
        try:
            return _load_checkpoint(path, device)
        except (DualsparseError, OSError):
            if attempts == ckpt.READ_ATTEMPTS or not ckpt.pointer_moved(run_dir, which, path):
                raise
        attempts += 1


def _load_checkpoint(path: Path, device: str) -> LoadedRun:
    state = ckpt.read_state(path)
    try:
        cfg = RunConfig.from_dict(state["config"], source=f"{path}/state.json")
    except KeyError:
        raise DualsparseError(
            f"{path}/state.json has no config; the checkpoint is damaged"
        ) from None
    vocab = Vocabulary.load(path / "vocab.json")
    if state.get("vocab_size") not in (None, len(vocab)):
        raise DualsparseError(
            f"{path}: vocab.json has {len(vocab)} words but the model was trained with "
            f"{state['vocab_size']}; the checkpoint is damaged"
        )
    model = LanguageModel(cfg.model, len(vocab))
    ckpt.load_model_weights(model, path / "model.safetensors")
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise DualsparseError(
            f"{path} holds NaN or infinite weights ({', '.join(bad[:3])}"
            f"{', …' if len(bad) > 3 else ''}): its training diverged; train it again, or "
            f"resume from an earlier checkpoint, with a lower train.lr or train.clip"
        )
    masks = ckpt.load_masks(path, model)
    apply_masks(model, masks)
    model.to(device).eval()
    return LoadedRun(model, vocab, cfg, state, path, masks)


# ---------------------------------------------------------------- where a run's data came from


def write_source(run_dir: str | Path, data: str | None, dataset: str | None, cache_dir) -> None:
    """Record in ``RUN/source.json`` where a new run's corpus came from, so that
    evaluate, prune, resume … find it again without --data/--dataset."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "data": str(Path(data).resolve()) if data else None,
        "dataset": dataset,
        "cache_dir": cache_dir,
    }
    atomic_write_text(run_dir / "source.json", json.dumps(record, indent=1))


def read_source(run_dir: str | Path) -> dict[str, Any]:
    """What ``RUN/source.json`` records ({} for a run that has none); a damaged file is
    a DualsparseError, not silently no record."""
    path = Path(run_dir) / "source.json"
    if not path.is_file():
        return {}
    source = read_json(path, "delete it and give the data with --data or --dataset")
    return source if isinstance(source, dict) else {}


def data_choice(
    source: dict[str, Any],
    data: str | None = None,
    dataset: str | None = None,
    cache_dir: str | None = None,
) -> tuple[str | None, str | None, str | None]:
    """(data, dataset, cache_dir): what is given, else what the run recorded (``source``)."""
    data_now = data or (None if dataset else source.get("data"))
    dataset_now = dataset or (None if data else source.get("dataset"))
    return data_now, dataset_now, cache_dir or source.get("cache_dir")


def run_corpus(
    run_dir: str | Path,
    vocab: Vocabulary,
    data: str | None = None,
    dataset: str | None = None,
    cache_dir: str | None = None,
) -> Corpus:
    """The corpus a run was trained on (or the one given), encoded with ``vocab``.

    A cache directory named only by the run's ``source.json`` is read, never created or
    downloaded into: a run's files do not choose where dualsparse writes."""
    source = read_source(run_dir)
    data_now, dataset_now, cache_now = data_choice(source, data, dataset, cache_dir)
    if dataset_now and cache_now and not cache_dir:
        if not (Path(cache_now) / dataset_now).is_dir():
            raise DualsparseError(
                f"{Path(run_dir) / 'source.json'} names the cache {cache_now}, which holds no "
                f"{dataset_now}; give --cache-dir DIR to name the cache to use (or download to)"
            )
    return resolve_corpus(data_now, dataset_now, cache_now, vocab=vocab)


def describe_source(source: dict[str, Any]) -> str:
    """A recorded data source as the options that give it."""
    if source.get("data"):
        return f"--data {source['data']}"
    cache = f" --cache-dir {source['cache_dir']}" if source.get("cache_dir") else ""
    return f"--dataset {source.get('dataset')}{cache}" if source.get("dataset") else "--data DIR"


def check_same_data(
    run_dir: str | Path,
    source: dict[str, Any],
    data: str | None,
    dataset: str | None,
    other_data: bool = False,
) -> None:
    """Continuing a run (resume, prune) on data other than it recorded is refused unless
    ``other_data`` says it is meant: the saved vocabulary would encode any text, so the
    vocabulary cannot tell. A run without ``source.json`` (trained from Python) has no
    record to compare with."""
    if other_data or not source or not (data or dataset):
        return
    if data:
        same = str(Path(data).resolve()) == source.get("data")
    else:
        same = dataset == source.get("dataset") and not source.get("data")
    if not same:
        given = f"--data {data}" if data else f"--dataset {dataset}"
        raise DualsparseError(
            f"{run_dir} was trained on {describe_source(source)}, not {given}; drop "
            "--data/--dataset to continue on its own data, or add --other-data to use the "
            "new data deliberately"
        )


# ---------------------------------------------------------------- training, resuming, pruning


@dataclass
class ResumePoint:
    """Where a resumed run continues from: its latest checkpoint's config (with the
    overrides applied), vocabulary, position and the run's recorded data source."""

    run_dir: Path
    checkpoint: Path
    config: RunConfig
    vocab: Vocabulary
    state: dict[str, Any]
    source: dict[str, Any]


def open_for_resume(run_dir: str | Path, overrides: Sequence[str] = ()) -> ResumePoint:
    """Open a run to continue it (``dualsparse train --resume``): the config saved in its
    latest checkpoint, not the one it was started with, so that ``--set`` overrides of an
    earlier resume persist; ``overrides`` (``train.epochs=5``, …) apply on top."""
    run_dir = Path(run_dir)
    if not has_checkpoint(run_dir) and (run_dir / "config.json").is_file():
        raise DualsparseError(
            f"{run_dir} was stopped before its first checkpoint was complete: there is nothing "
            f"to resume; start it over with: dualsparse train --config {run_dir}/config.json "
            f"{describe_source(read_source(run_dir))} --out {run_dir}"
        )
    latest = ckpt.checkpoint_dir(run_dir, "latest")
    state = ckpt.read_state(latest)
    if "config" not in state:
        raise DualsparseError(f"{latest}/state.json has no config; the checkpoint is damaged")
    cfg = RunConfig.from_dict(state["config"], source=f"{run_dir}")
    source = read_source(run_dir)
    vocab = Vocabulary.load(latest / "vocab.json")
    return ResumePoint(run_dir, latest, apply_overrides(cfg, list(overrides)), vocab, state, source)


def new_run(
    run_dir: str | Path,
    cfg: RunConfig,
    data: str | None = None,
    dataset: str | None = None,
    cache_dir: str | None = None,
    *,
    max_minutes: float | None = None,
    progress: bool = True,
) -> TrainSummary:
    """Train ``cfg`` into the new run directory ``run_dir`` (``dualsparse train --out``),
    recording the data source; an existing run there is refused before anything is
    written. Under torchrun only rank 0 writes the source record."""
    corpus = resolve_corpus(data, dataset, cache_dir)
    launch = torchrun_launch()
    if launch is not None and launch.rank != 0:
        return train(cfg, corpus, run_dir, max_minutes=max_minutes, progress=progress)
    with run_lock(run_dir):  # before the check and source.json, which would clobber a run
        check_new_run_dir(run_dir)
        write_source(run_dir, data, dataset, cache_dir)
        return train(cfg, corpus, run_dir, max_minutes=max_minutes, progress=progress)


def resume_run(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    data: str | None = None,
    dataset: str | None = None,
    cache_dir: str | None = None,
    *,
    max_minutes: float | None = None,
    progress: bool = True,
    other_data: bool = False,
) -> TrainSummary:
    """Continue a run from its latest checkpoint (``dualsparse train --resume``) on the
    data it recorded; other data (the vocabulary must match) only with ``other_data``,
    and it is then recorded as the run's data."""
    if not Path(run_dir).is_dir():  # the lock would create it
        raise DualsparseError(
            f"run directory {run_dir} does not exist; give the --out of a train run"
        )
    launch = torchrun_launch()
    lock = run_lock(run_dir) if launch is None or launch.rank == 0 else nullcontext()
    with lock:  # before the run's state is read: a second resume is refused, not doubled
        point = open_for_resume(run_dir, overrides)
        check_same_data(run_dir, point.source, data, dataset, other_data)
        corpus = run_corpus(run_dir, point.vocab, data, dataset, cache_dir)
        if other_data and (data or dataset) and (launch is None or launch.rank == 0):
            write_source(run_dir, data, dataset, cache_dir)  # what it trains on from now on
        return train(
            point.config, corpus, run_dir, resume=True, max_minutes=max_minutes, progress=progress
        )


def format_train_summary(summary: TrainSummary) -> str:
    """How a training (new or resumed) ended, in one line."""
    return (
        f"run {summary.run_dir}: {summary.stopped} after {summary.epochs_done} epoch(s), "
        f"best valid ppl {summary.best_valid_ppl:.2f}, {summary.elapsed_seconds:.0f} s"
    )


def prune_trained_run(
    run_dir: str | Path,
    out_dir: str | Path,
    data: str | None = None,
    dataset: str | None = None,
    cache_dir: str | None = None,
    *,
    other_data: bool = False,
    **prune_options: Any,
) -> dict[str, Any]:
    """``dualsparse prune``: prune a run's best checkpoint into ``out_dir`` on its own
    corpus (other data only with ``other_data``, then recorded as the pruned run's);
    ``prune_options`` are those of ``sparsity.prune.prune_run`` (target, steps,
    finetune_epochs, lr, overrides, progress). Returns the pruning record."""
    from dualsparse.sparsity.prune import check_target, prune_run

    check_target(prune_options["target"])
    run = load_run(run_dir, "best")
    check_same_data(run_dir, read_source(run_dir), data, dataset, other_data)
    corpus = run_corpus(run_dir, run.vocab, data, dataset, cache_dir)
    with run_lock(out_dir, "pruning"):
        record = prune_run(run_dir, out_dir, corpus, **prune_options)
        if other_data and (data or dataset):
            write_source(out_dir, data, dataset, cache_dir)
        return record
