"""Iterative global magnitude pruning with fine-tuning (paper sec. 3.2, appendix B).

Start from a trained run, then for k = 1..K: prune to the intermediate target
s_k, fine-tune for E epochs with the masks held fixed, keep the best
validation checkpoint, go on from it. K = 1 is one-shot pruning.

Schedule of intermediate targets: every step removes the same fraction of the
weights still alive, i.e. density_k = density_0 · (density_K / density_0)^(k/K)
(the classic iterative-magnitude-pruning schedule); density_0 is the density of
the starting run (1 for a dense run).

Fine-tuning learning rate: the paper used 0.1× the training rate for low
targets and 1× for high ones; our default is 0.1× for targets below 0.7 and 1×
from 0.7 on, and ``lr`` overrides it.

Each step is an ordinary run directory ``OUT/step-k`` (resumable), and OUT itself
holds the final model as a run (so ``evaluate``, ``macs`` and ``activity`` take it)
plus ``prune.json`` with the per-step record.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from dualsparse.config import RunConfig, apply_overrides, config_to_json
from dualsparse.data.corpus import Corpus
from dualsparse.errors import DualsparseError
from dualsparse.evaluation import evaluate
from dualsparse.fileio import atomic_write_text, fsync_directory, sync_directory
from dualsparse.runs import LoadedRun, load_run
from dualsparse.sparsity.masks import apply_masks, global_magnitude_masks, sparsity_report
from dualsparse.training import checkpoint as ckpt
from dualsparse.training.guards import has_checkpoint, run_lock
from dualsparse.training.loop import Trainer


def target_schedule(target: float, steps: int, start_sparsity: float = 0.0) -> list[float]:
    """Intermediate sparsity targets s_1..s_K (s_K = target), geometric in density."""
    check_target(target)
    if steps < 1:
        raise DualsparseError(f"--steps {steps} must be at least 1 (1 = one-shot pruning)")
    d0, dk = 1.0 - start_sparsity, 1.0 - target
    if dk > d0:
        raise DualsparseError(
            f"the run is already {start_sparsity:.1%} sparse, more than the target {target:.1%}; "
            "give a higher --target"
        )
    return [1.0 - d0 * (dk / d0) ** (k / steps) for k in range(1, steps + 1)]


def check_target(target: float) -> None:
    if not (isinstance(target, (int, float)) and 0.0 <= target < 1.0) or math.isnan(target):
        raise DualsparseError(
            f"--target {target} is outside [0, 1): give the fraction of RNN weights to prune, "
            "e.g. 0.85"
        )


def default_finetune_lr(train_lr: float, target: float) -> float:
    return train_lr * (0.1 if target < 0.7 else 1.0)


def prune_weights(run: LoadedRun, sparsity: float) -> dict:
    """Prune ``run.model`` in place to ``sparsity`` over its RNN weights; returns the masks."""
    names = run.model.rnn_weight_names()
    params = dict(run.model.named_parameters())
    masks = global_magnitude_masks({n: params[n] for n in names}, sparsity)
    apply_masks(run.model, masks)
    return masks


def prune_run(
    run_dir: str | Path,
    out_dir: str | Path,
    corpus: Corpus,
    *,
    target: float,
    steps: int = 1,
    finetune_epochs: int = 1,
    lr: float | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Prune a trained run to ``target`` in ``steps`` steps; returns the record (prune.json)."""
    check_target(target)
    if finetune_epochs < 0:
        raise DualsparseError(f"--finetune-epochs {finetune_epochs} must be >= 0")
    out_dir = Path(out_dir)
    if Path(run_dir).resolve() == out_dir.resolve():
        raise DualsparseError("--out must differ from the run being pruned")
    with run_lock(out_dir, "pruning"):  # before anything in it is read or written
        check_prune_out_dir(out_dir)
        return _prune_locked(
            run_dir, out_dir, corpus, target, steps, finetune_epochs, lr, overrides, progress
        )


def check_prune_out_dir(out_dir: Path) -> None:
    """A pruning goes into a new directory or continues (or repeats) its own pruning
    there, which has step directories; a trained run there is never replaced."""
    is_pruning = (out_dir / "prune.json").exists() or (out_dir / "step-1").is_dir()
    if has_checkpoint(out_dir) and not is_pruning:
        raise DualsparseError(
            f"{out_dir} already holds a run, which pruning would replace; choose a new --out"
        )


def _prune_locked(
    run_dir, out_dir, corpus, target, steps, finetune_epochs, lr, overrides, progress
) -> dict:
    source = load_run(run_dir, "best")
    if source.vocab != corpus.vocab:
        raise DualsparseError(f"{run_dir} was trained on other data; give its own --data/--dataset")
    start = sparsity_report(source.model, source.model.rnn_weight_names())["weight_sparsity"]
    targets = target_schedule(target, steps, start)
    cfg = source.config
    ft_lr = lr if lr is not None else default_finetune_lr(cfg.train.lr, target)
    if ft_lr <= 0:
        raise DualsparseError(f"--lr {ft_lr} must be > 0")
    cfg = apply_overrides(
        cfg,
        [
            f"train.lr={ft_lr}",
            f"train.epochs={max(finetune_epochs, 1)}",
            "train.patience=0",
            "train.warmup_epochs=0",
            "train.scheduler_start=0",
            *(overrides or []),
        ],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "source_run": str(run_dir),
        "target": target,
        "steps": steps,
        "finetune_epochs": finetune_epochs,
        "finetune_lr": ft_lr,
        "start_sparsity": start,
        "schedule": targets,
        "history": [],
    }
    current = source
    for k, step_target in enumerate(targets, start=1):
        step_dir = out_dir / f"step-{k}"
        current = _prune_step(
            current, step_dir, corpus, cfg, step_target, finetune_epochs, progress
        )
        valid = evaluate(
            current.model, corpus.valid, cfg.train.eval_batch_size, cfg.train.bptt, split="valid"
        )
        report = sparsity_report(current.model, current.model.rnn_weight_names())
        record["history"].append(
            {
                "step": k,
                "target": step_target,
                "weight_sparsity": report["weight_sparsity"],
                "valid_loss": valid.loss,
                "valid_ppl": valid.perplexity,
                "valid_activity": valid.layer_activity,
            }
        )
    record["sparsity"] = sparsity_report(current.model, current.model.rnn_weight_names())
    _publish_final(out_dir, current, run_dir)
    atomic_write_text(out_dir / "prune.json", json.dumps(record, indent=1))
    return record


def _prune_step(
    previous: LoadedRun,
    step_dir: Path,
    corpus: Corpus,
    cfg: RunConfig,
    step_target: float,
    finetune_epochs: int,
    progress: bool,
) -> LoadedRun:
    """One prune + fine-tune step in its own run directory; a finished step is reused."""
    if (step_dir / "step-done.json").exists():
        return load_run(step_dir, "best")
    resuming = (step_dir / "checkpoints" / "latest.json").exists()
    if not resuming:
        masks = prune_weights(previous, step_target)
        step_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(step_dir / "config.json", config_to_json(cfg))  # as train writes it
    trainer = Trainer(
        cfg,
        corpus,
        step_dir,
        progress=progress,
        initial_model=None if resuming else previous.model,
        masks=None if resuming else masks,
    )
    if resuming:
        trainer.restore()
    if finetune_epochs == 0:
        valid = evaluate(trainer.model, corpus.valid, cfg.train.eval_batch_size, cfg.train.bptt)
        trainer.state.update(best_valid_loss=valid.loss, finished=True)
        trainer.save(("latest", "best"))
    else:
        summary = trainer.run()
        if summary.stopped not in ("completed", "early-stopping"):
            raise DualsparseError(
                f"pruning stopped during fine-tuning ({summary.stopped}); run the same "
                "prune command again to resume"
            )
    atomic_write_text(step_dir / "step-done.json", json.dumps({"target": step_target}))
    return load_run(step_dir, "best")


def _publish_final(out_dir: Path, final: LoadedRun, source_run: str | Path) -> None:
    """Make OUT itself a run: its checkpoints point at a copy of the last step's best."""
    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tag = f"pruned-{final.checkpoint.parent.parent.name}"
    tmp = root / f".incoming-{tag}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(final.checkpoint, tmp)
    sync_directory(tmp)  # on disk before it is named, as save_checkpoint leaves its own
    shutil.rmtree(root / tag, ignore_errors=True)
    tmp.rename(root / tag)
    fsync_directory(root)
    ckpt.point_to(out_dir, tag, ("latest", "best"))
    source_json = Path(source_run) / "source.json"
    if source_json.exists():
        atomic_write_text(out_dir / "source.json", source_json.read_text(encoding="utf-8"))
