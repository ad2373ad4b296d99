"""Opening a trained run: config, vocabulary and weights from a checkpoint directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dualsparse.config import RunConfig
from dualsparse.data.corpus import Vocabulary
from dualsparse.errors import DualsparseError
from dualsparse.models.lm import LanguageModel
from dualsparse.sparsity.masks import apply_masks
from dualsparse.training import checkpoint as ckpt


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
