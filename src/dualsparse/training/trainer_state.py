"""A trainer's whole state in a checkpoint, and back: what ``resume`` needs to lose nothing.

Beside the model's weights and masks (``checkpoint.py``) a training checkpoint holds the
optimizer's moments, both random streams (dropout and the batch order, also as it was at
the epoch's start), the carried hidden state of every batch column when the run stopped
mid-epoch, and the position (epoch, window, best validation, early-stopping count).
Under torchrun every rank calls both functions; rank 0 alone writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dualsparse.errors import DualsparseError
from dualsparse.sparsity.masks import apply_masks
from dualsparse.training import checkpoint as ckpt
from dualsparse.training import distributed
from dualsparse.training.metrics import keep_metrics_until

if TYPE_CHECKING:
    from dualsparse.training.loop import Trainer

# the batch-walk settings a run stopped mid-epoch must keep to finish that epoch
WINDOW_SETTINGS = ("batch_size", "bptt", "variable_bptt")


def window_position(state: dict[str, Any], n_windows: int) -> float:
    """Epochs done plus the fraction of the epoch's windows done (a metrics record's
    ``epoch``); computed the same way when the record is written and when a resume cuts
    the metrics back to its checkpoint."""
    return state["epoch"] + state["window"] / max(n_windows, 1)


def save_trainer_state(trainer: Trainer, pointers: tuple[str, ...]) -> None:
    """Called on every rank: the carried state of all columns is gathered for rank 0."""
    tensors = {"rng.torch": torch.get_rng_state(), "rng.batches": trainer.batch_rng.get_state()}
    if trainer.epoch_rng_state is not None:
        tensors["rng.batches_epoch_start"] = trainer.epoch_rng_state
    if trainer.hidden is not None:
        for i, layer_state in enumerate(trainer.hidden):
            for k, tensor in enumerate(layer_state):
                tensors[f"hidden.{i}.{k}"] = distributed.gather_columns(tensor)
    if not trainer.is_main:
        return
    opt_tensors, groups = ckpt.flatten_optimizer(trainer.optimizer.state_dict())
    tensors.update(opt_tensors)
    state = {
        **trainer.state,
        "config": trainer.cfg.to_dict(),
        "optimizer_groups": groups,
        "vocab_size": len(trainer.corpus.vocab),
        "corpus": trainer.corpus.name,
    }
    ckpt.save_checkpoint(
        trainer.run_dir,
        trainer.model,
        trainer.corpus.vocab,
        state,
        tensors,
        pointers=pointers,
        masks=trainer.masks,
    )


def restore_trainer_state(trainer: Trainer) -> None:
    """Load the run's latest checkpoint into ``trainer``, with a clear error for a checkpoint
    that does not fit the configuration or data given now."""
    path = ckpt.checkpoint_dir(trainer.run_dir, "latest")
    state = ckpt.read_state(path)
    if state.get("window"):  # stopped mid-epoch: the rest of it needs the same windows
        saved = (state.get("config") or {}).get("train") or {}
        changed = [
            k for k in WINDOW_SETTINGS if k in saved and saved[k] != getattr(trainer.cfg.train, k)
        ]
        if changed:
            raise DualsparseError(
                f"{path} stopped in the middle of an epoch, which can only be finished with "
                f"the same {', '.join(f'train.{k}={saved[k]}' for k in changed)}; resume "
                "without changing it (change it at an epoch boundary, or start a new run)"
            )
    saved_vocab = type(trainer.corpus.vocab).load(path / "vocab.json")
    if saved_vocab != trainer.corpus.vocab:
        raise DualsparseError(
            f"{path} was trained with a different vocabulary than the data given now; "
            "resume with the same --data/--dataset as the original run"
        )
    ckpt.load_model_weights(trainer.model, path / "model.safetensors")
    trainer.masks = ckpt.load_masks(path, trainer.model)
    apply_masks(trainer.model, trainer.masks)
    tensors = ckpt.read_tensors(path / "training.safetensors")
    try:
        trainer.optimizer.load_state_dict(
            ckpt.unflatten_optimizer(tensors, state["optimizer_groups"])
        )
        torch.set_rng_state(tensors["rng.torch"])
        trainer.batch_rng.set_state(tensors["rng.batches"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise DualsparseError(
            f"{path} has an incompatible training state ({str(exc).splitlines()[0]}); "
            "resume needs the checkpoint of this same configuration"
        ) from None
    trainer.epoch_rng_state = tensors.get("rng.batches_epoch_start")
    if "hidden.0.0" in tensors:  # stopped mid-epoch: the carried state, per layer
        per_layer = [len(layer_state) for layer_state in trainer.model.init_state(1)]
        try:
            trainer.hidden = [
                tuple(_own_columns(trainer, tensors[f"hidden.{i}.{k}"]) for k in range(n))
                for i, n in enumerate(per_layer)
            ]
        except KeyError as exc:
            raise DualsparseError(
                f"{path} lacks the carried hidden state {exc}; the checkpoint is damaged"
            ) from None
    for key in trainer.state:
        if key in state:
            trainer.state[key] = state[key]
    if trainer.is_main:  # records a killed process wrote after this checkpoint would repeat
        keep_metrics_until(trainer.run_dir, _checkpoint_position(trainer))


def _checkpoint_position(trainer: Trainer) -> float:
    """Where the restored state stands: epochs done, plus the fraction of the current
    epoch's windows when it stopped mid-epoch (the ``epoch`` of its metrics record)."""
    if not trainer.state["window"] or trainer.epoch_rng_state is None:
        return trainer.state["epoch"]
    generator = torch.Generator()
    generator.set_state(trainer.epoch_rng_state)
    return window_position(trainer.state, len(trainer.epoch_windows(generator)))


def _own_columns(trainer: Trainer, state: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a carried state saved for the whole batch."""
    return distributed.column_shard(state, trainer.rank, trainer.world_size, dim=0).to(
        trainer.device
    )
