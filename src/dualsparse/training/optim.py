"""Optimizer and learning-rate schedule.

The schedule is a pure function of the (fractional) epoch, so a resumed run
needs no scheduler state: cosine annealing (CosineAnnealingLR semantics, eta_min
``min_lr``) that starts after ``scheduler_start`` epochs, or a constant rate,
both with an optional linear warm-up over the first ``warmup_epochs``.
"""

from __future__ import annotations

import math

import torch

from dualsparse.config import TrainConfig
from dualsparse.models.lm import parameter_groups


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    groups = parameter_groups(
        model,
        cfg.weight_decay,
        cfg.bias_decay,
        cfg.threshold_lr_scale,
        cfg.lr,
        decay_thresholds=cfg.decay_thresholds,
    )
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def lr_at(cfg: TrainConfig, epoch_progress: float, total_epochs: int) -> float:
    """Learning rate at ``epoch_progress`` (0 = start of training, 1.5 = mid second epoch)."""
    lr = cfg.lr
    if cfg.schedule == "cosine":
        span = max(total_epochs - cfg.scheduler_start, 1)
        done = min(max(math.floor(epoch_progress) - cfg.scheduler_start, 0), span)
        lr = cfg.min_lr + (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * done / span)) / 2
    if cfg.warmup_epochs > 0 and epoch_progress < cfg.warmup_epochs:
        lr *= (epoch_progress + 1e-3) / cfg.warmup_epochs
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
