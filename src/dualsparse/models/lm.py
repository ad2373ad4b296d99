"""AWD-LSTM-style language model around EGRU, LSTM or GRU layers.

embedding → N recurrent layers → (projection if the last layer's size differs
from the embedding) → decoder tied to the embedding. Sequences are [T, B].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
            reset_after=cfg.reset_after,
            layer_grad_clip=cfg.layer_grad_clip,
            weight_init=cfg.weight_init,
        )
    if cfg.type == "lstm":
        return LSTMLayer(input_size, hidden_size, weight_init=cfg.weight_init)
    return GRULayer(input_size, hidden_size, weight_init=cfg.weight_init)


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

    def window_start_state(self, state: State) -> State:
        """The state a window starts from, given the one carried from the last window.

        With ``carry_local_state`` False the EGRU's local state c restarts at 0 and only y
        is carried, as in the EvNN reference: its kernel starts every call with c = 0
        (frameworks/pytorch/egru.cc lines 268-277) and its model carries only the last y
        (benchmarks/lm/models.py lines 172 and 207).
        """
        if self.cfg.type != "egru" or self.cfg.carry_local_state:
            return state
        return [(torch.zeros_like(c), y) for c, y in state]

    def forward(self, tokens: Tensor, state: State | None = None) -> LMOutput:
        cfg, training = self.cfg, self.training
        if state is None:
            state = self.init_state(tokens.shape[1])
        state = self.window_start_state(state)
        layout = cfg.dropout_mask_shared_over
        emb_weight = embedding_dropout(self.encoder.weight, cfg.dropout_words, training)
        x = locked_dropout(F.embedding(tokens, emb_weight), cfg.dropout_emb, training, layout)
        new_state, outputs, pre_reset = [], [], []
        for i, layer in enumerate(self.layers):
            w_hh = drop_connect(layer.weight_hh, cfg.dropout_connect, training)
            out, layer_state, c_pre = layer(x, state[i], weight_hh=w_hh)
            new_state.append(layer_state)
            outputs.append(out)
            pre_reset.append(c_pre)
            last = i == len(self.layers) - 1
            p = cfg.dropout_output if last else cfg.dropout_forward
            x = locked_dropout(out, p, training, layout)
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
    model: nn.Module,
    weight_decay: float,
    bias_decay: float,
    threshold_lr_scale: float,
    lr: float,
    decay_thresholds: bool = True,
) -> list[dict]:
    """AdamW groups: weight matrices, biases (and embedding bias), thresholds.

    The paper's activity knob is weight decay (sec. 4.2); biases get their own decay
    (``bias_decay``), and so do thresholds unless ``decay_thresholds`` is False (the EvNN
    reference gives them none, benchmarks/lm/train.py lines 162-165); thresholds get
    ``lr × threshold_lr_scale``.
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
                "weight_decay": bias_decay if decay_thresholds else 0.0,
                "lr": lr * threshold_lr_scale,
                "lr_scale": threshold_lr_scale,
            }
        )
    return groups
