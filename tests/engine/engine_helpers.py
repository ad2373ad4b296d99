"""Random tiny language models, pruned and exported, for the engine tests (a plain module:
a second conftest.py would shadow the root one for ``from conftest import``)."""

from pathlib import Path

import torch

from dualsparse.config import ModelConfig
from dualsparse.engine.export import export_model
from dualsparse.models.lm import LanguageModel
from dualsparse.sparsity.masks import apply_masks, global_magnitude_masks

VOCAB = 30
WORDS = ["<eos>", "<unk>", *[f"w{i}" for i in range(VOCAB - 2)]]


def random_model(
    model_type: str,
    weight_sparsity: float,
    *,
    hidden_sizes=(10, 6),
    threshold: float | None = 0.05,
    seed: int = 0,
    tie_weights: bool = True,
) -> LanguageModel:
    """A random LM (emb 8, so a tied last layer of width 6 needs a projection), pruned
    globally."""
    torch.manual_seed(seed)
    model = LanguageModel(
        ModelConfig(
            type=model_type, emb_size=8, hidden_sizes=list(hidden_sizes), tie_weights=tie_weights
        ),
        VOCAB,
    ).eval()
    if model_type == "egru" and threshold is not None:
        for layer in model.layers:
            layer.threshold.data.fill_(threshold)
    params = dict(model.named_parameters())
    names = model.rnn_weight_names()
    apply_masks(model, global_magnitude_masks({n: params[n] for n in names}, weight_sparsity))
    return model


def export_fixture(tmp_path: Path):
    """export_dir(model) -> a directory written by export_model (use as a fixture body)."""

    def write(model: LanguageModel, name: str = "export") -> Path:
        return export_model(model, WORDS, tmp_path / name)

    return write
