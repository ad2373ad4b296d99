"""AWD-LSTM-style language model around EGRU, LSTM or GRU layers.

embedding → N recurrent layers → (projection if the last layer's size differs
from the embedding) → decoder tied to the embedding. Sequences are [T, B].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from dualsparse.config import ModelConfig
from dualsparse.models.baselines import GRULayer, LSTMLayer
from dualsparse.models.egru import EGRULayer
from dualsparse.models.regularizers import drop_connect, embedding_dropout, locked_dropout

State = list[tuple[Tensor, ...]]


@dataclass
class LMOutput:
    logits: Tensor  # [T, B, V]
    state: State
    layer_outputs: list[Tensor]  # each layer's output before dropout, [T, B, H_l]
    pre_reset_states: list[Tensor | None]  # EGRU: ĉ per layer (for c − θ analyses)
    regularization: Tensor  # AR + TAR term to add to the loss (0 if unused)


def make_layer(cfg: ModelConfig, input_size: int, hidden_size: int) -> nn.Module:
    if cfg.type == "egru":
        return EGRULayer(
            input_size,
            hidden_size,
            threshold_init_mean=cfg.threshold_init_mean,
            surrogate_width=cfg.surrogate_width,
            surrogate_dampening=cfg.surrogate_dampening,
        )
    if cfg.type == "lstm":
        return LSTMLayer(input_size, hidden_size)
    return GRULayer(input_size, hidden_size)


class LanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.encoder = nn.Embedding(vocab_size, cfg.emb_size)
        sizes = [cfg.emb_size, *cfg.hidden_sizes]
        self.layers = nn.ModuleList(
            make_layer(cfg, sizes[i], sizes[i + 1]) for i in range(len(cfg.hidden_sizes))
        )
        last = cfg.hidden_sizes[-1]
        out_size = cfg.emb_size if cfg.tie_weights else last
        self.projection = nn.Linear(last, out_size, bias=False) if last != out_size else None
        self.decoder = nn.Linear(out_size, vocab_size)
        if cfg.tie_weights:
            self.decoder.weight = self.encoder.weight
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def init_state(self, batch_size: int) -> State:
        return [layer.init_state(batch_size) for layer in self.layers]

    def forward(self, tokens: Tensor, state: State | None = None) -> LMOutput:
        cfg, training = self.cfg, self.training
        if state is None:
            state = self.init_state(tokens.shape[1])
        emb_weight = embedding_dropout(self.encoder.weight, cfg.dropout_words, training)
        x = locked_dropout(F.embedding(tokens, emb_weight), cfg.dropout_emb, training)
        new_state, outputs, pre_reset = [], [], []
        for i, layer in enumerate(self.layers):
            w_hh = drop_connect(layer.weight_hh, cfg.dropout_connect, training)
            out, layer_state, c_pre = layer(x, state[i], weight_hh=w_hh)
            new_state.append(layer_state)
            outputs.append(out)
            pre_reset.append(c_pre)
            last = i == len(self.layers) - 1
            x = locked_dropout(out, cfg.dropout_output if last else cfg.dropout_forward, training)
        reg = x.new_zeros(())
        if training and cfg.ar_alpha > 0:
            reg = reg + cfg.ar_alpha * x.pow(2).mean()
        if training and cfg.tar_beta > 0:
            raw = outputs[-1]
            reg = reg + cfg.tar_beta * (raw[1:] - raw[:-1]).pow(2).mean()
        if self.projection is not None:
            x = self.projection(x)
        return LMOutput(self.decoder(x), new_state, outputs, pre_reset, reg)

    def constrain_(self) -> None:
        """Parameter constraints applied after each optimizer step."""
        for layer in self.layers:
            if hasattr(layer, "constrain_"):
                layer.constrain_()

    def rnn_weight_names(self) -> list[str]:
        """Names of the weight matrices that pruning and MAC accounting cover."""
        names = [
            n
            for n, _ in self.named_parameters()
            if n.startswith("layers.") and (n.endswith("weight_ih") or n.endswith("weight_hh"))
        ]
        if self.projection is not None:
            names.append("projection.weight")
        return names


def detach_state(state: State) -> State:
    """Cut the graph between BPTT windows (AWD-LSTM's ``repackage_hidden``)."""
    return [tuple(t.detach() for t in layer_state) for layer_state in state]


def parameter_groups(
    model: nn.Module, weight_decay: float, bias_decay: float, threshold_lr_scale: float, lr: float
) -> list[dict]:
    """AdamW groups: weight matrices, biases (and embedding bias), thresholds.

    The paper's activity knob is weight decay (sec. 4.2); biases and thresholds
    get their own decay (``bias_decay``); thresholds get ``lr × threshold_lr_scale``.
    """
    weights, biases, thresholds = [], [], []
    for name, param in model.named_parameters():  # tied weights are yielded once
        if name.endswith("threshold"):
            thresholds.append(param)
        elif param.ndim >= 2:
            weights.append(param)
        else:
            biases.append(param)
    groups = [
        {"name": "weights", "params": weights, "weight_decay": weight_decay, "lr": lr},
        {"name": "biases", "params": biases, "weight_decay": bias_decay, "lr": lr},
    ]
    if thresholds:
        groups.append(
            {
                "name": "thresholds",
                "params": thresholds,
                "weight_decay": bias_decay,
                "lr": lr * threshold_lr_scale,
                "lr_scale": threshold_lr_scale,
            }
        )
    return groups
