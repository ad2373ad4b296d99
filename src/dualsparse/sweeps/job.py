"""One run of a sweep, as the spec expands it and the runner executes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """One run of the sweep: train a dense model, or prune ``source`` to ``sparsity``."""

    name: str
    kind: str  # "train" | "prune"
    group: str
    model: str  # egru | lstm | gru
    seed: int
    weight_decay: float
    bias_decay: float
    sparsity: float  # target; 0 for a dense run
    preset: str | None = None
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    source: str | None = None  # the job this one prunes
    prune: dict[str, Any] = field(default_factory=dict)  # steps, finetune_epochs, lr
    chained: bool = False  # pruned from the previous target's run (not the dense run)

    def meta(self) -> dict[str, Any]:
        """What the report groups by."""
        return {
            "name": self.name,
            "kind": self.kind,
            "group": self.group,
            "model": self.model,
            "seed": self.seed,
            "weight_decay": self.weight_decay,
            "bias_decay": self.bias_decay,
            "target_sparsity": self.sparsity,
            "source": self.source,
            "prune_steps": self.prune.get("steps", 0),
            "finetune_lr": self.prune.get("lr"),  # None: prune's default for the target
            "chained": self.chained,
        }

    def definition(self) -> tuple:
        return (
            self.kind,
            self.preset,
            self.config,
            tuple(self.overrides),
            self.source,
            tuple(sorted(self.prune.items())),
        )
