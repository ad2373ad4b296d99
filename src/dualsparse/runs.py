"""Runs as the commands see them: open one for evaluation (``load_run``) or to continue
it (``open_for_resume``), where its data came from (``source.json``), and the train,
resume and prune commands as functions (the CLI only parses their arguments)."""

from __future__ import annotations

import json
from collections.abc import Sequence
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
from dualsparse.training.loop import TrainSummary, check_new_run_dir, train


@dataclass
class LoadedRun:
    model: LanguageModel
    vocab: Vocabulary
    config: RunConfig
    state: dict[str, Any]
    checkpoint: Path
    masks: dict[str, torch.Tensor]


def load_run(run_dir: str | Path, which: str = "best", device: str = "cpu") -> LoadedRun:
    """The model of a run (``best`` validation checkpoint by default), ready for eval."""
    path = ckpt.checkpoint_dir(run_dir, which)
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
    """The corpus a run was trained on (or the one given), encoded with ``vocab``."""
    return resolve_corpus(*data_choice(read_source(run_dir), data, dataset, cache_dir), vocab=vocab)


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
    if launch is None or launch.rank == 0:
        check_new_run_dir(run_dir)  # before source.json, which would clobber the old run's
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
) -> TrainSummary:
    """Continue a run from its latest checkpoint (``dualsparse train --resume``) on the
    data it recorded unless other data is given (the vocabulary must match)."""
    point = open_for_resume(run_dir, overrides)
    corpus = run_corpus(run_dir, point.vocab, data, dataset, cache_dir)
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
    **prune_options: Any,
) -> dict[str, Any]:
    """``dualsparse prune``: prune a run's best checkpoint into ``out_dir`` on its own
    corpus; ``prune_options`` are those of ``sparsity.prune.prune_run`` (target, steps,
    finetune_epochs, lr, overrides, progress). Returns the pruning record."""
    from dualsparse.sparsity.prune import check_target, prune_run

    check_target(prune_options["target"])
    run = load_run(run_dir, "best")
    corpus = run_corpus(run_dir, run.vocab, data, dataset, cache_dir)
    return prune_run(run_dir, out_dir, corpus, **prune_options)
