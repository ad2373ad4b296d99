"""A sweep group's pruning grid: per sparsity target, the number of pruning steps ×
the fine-tuning learning rate (paper Fig. 3), chained from the previous target's run
or pruned straight from the dense run (the spec's ``prune:`` section, see
``sweeps.spec``), and the pruned jobs it expands to."""

from __future__ import annotations

from typing import Any

from dualsparse.errors import DualsparseError
from dualsparse.sweeps.job import Job
from dualsparse.sweeps.values import fmt, number, numbers, unknown_keys

PRUNE_KEYS = {"steps", "finetune_epochs", "chain", "lr", "targets"}
TARGET_KEYS = {"steps", "finetune_epochs", "lr"}  # what prune.targets may set per target


def _steps_grid(value: Any, where: str) -> list[int]:
    steps = numbers(value, where, int, [1])
    if min(steps) < 1:
        raise DualsparseError(f"{where}: pruning steps must be >= 1 (1 = one-shot), got {steps}")
    return steps


def _lr_grid(value: Any, where: str) -> list[float | None]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise DualsparseError(f"{where} is empty; give null (prune's default) or a rate")
    rates = [None if v is None else number(v, f"{where}[{i}]") for i, v in enumerate(values)]
    if any(r is not None and r <= 0 for r in rates):
        raise DualsparseError(
            f"{where}: fine-tuning rates must be > 0 (or null for prune's default), got {values}"
        )
    if len(set(rates)) != len(rates):
        raise DualsparseError(f"{where} repeats a value: {values}")
    return rates


def _grid(settings: dict, inherited: dict, where: str) -> list[dict[str, Any]]:
    """The (steps × lr) combinations of one target, each a PruneStep's options."""
    settings = {**inherited, **settings}
    epochs = number(settings.get("finetune_epochs", 1), f"{where}.finetune_epochs", int)
    if epochs < 0:
        raise DualsparseError(f"{where}.finetune_epochs must be >= 0")
    return [
        {"steps": steps, "finetune_epochs": epochs, "lr": lr}
        for steps in _steps_grid(settings.get("steps"), f"{where}.steps")
        for lr in _lr_grid(settings.get("lr"), f"{where}.lr")
    ]


def prune_settings(
    group: dict, targets: list[float], where: str
) -> tuple[dict[float, list[dict[str, Any]]], list[bool]]:
    """A group's ``prune:`` section: per target, the (steps × lr) grid of prune options,
    and the series to build: chained (each target pruned from the previous target's run
    of the same combination) and/or unchained (each from the dense run)."""
    prune = dict(group.get("prune") or {})
    unknown_keys(prune, PRUNE_KEYS, f"{where}: prune")
    chains = prune.get("chain", True)
    chains = chains if isinstance(chains, list) else [chains]
    flags = bool(chains) and all(isinstance(c, bool) for c in chains)
    if not flags or len(set(chains)) != len(chains):
        raise DualsparseError(f"{where}: prune.chain must be true, false or [true, false]")
    per_target = prune.pop("targets", None) or {}
    if not isinstance(per_target, dict):
        raise DualsparseError(f"{where}: prune.targets must map a target to its settings")
    plans = {}
    for target in targets:
        given = per_target.get(target) or {}
        if not isinstance(given, dict):
            raise DualsparseError(f"{where}: prune.targets.{fmt(target)} must be a mapping")
        label = f"{where}: prune.targets.{fmt(target)}" if given else f"{where}: prune"
        unknown_keys(given, TARGET_KEYS, label)
        plans[target] = _grid(given, prune, label)
    stray = [t for t in per_target if t not in plans]
    if stray:
        raise DualsparseError(
            f"{where}: prune.targets names {stray}, which are not among sparsity: {targets}; "
            "add them there"
        )
    if True in chains and targets:
        first = [(o["steps"], o["lr"]) for o in plans[targets[0]]]
        grids = [[(o["steps"], o["lr"]) for o in plans[t]] for t in targets]
        if not all(g == first for g in grids) and {len(g) for g in grids} != {1}:
            raise DualsparseError(
                f"{where}: a chain runs one (steps, lr) combination through every target, "
                "but prune.targets gives the targets different grids; give every target the "
                "same grid, or one combination each, or use chain: false"
            )
    return plans, chains


def prune_jobs(
    dense: Job, targets: list[float], plans: dict, chains: list[bool], threads: int
) -> list[Job]:
    """The pruned runs of one dense run: per chain flag, one chain per combination
    (chained) or every (target, combination) from the dense run (unchained)."""
    jobs = []
    for chained in chains:
        if chained:
            width = len(plans[targets[0]]) if targets else 0
            series = [[(t, plans[t][i]) for t in targets] for i in range(width)]
        else:
            series = [[(t, opts)] for t in targets for opts in plans[t]]
        for line in series:
            previous = dense
            for target, opts in line:
                name = f"{dense.name}-p{fmt(100 * target)}"
                name += f"-k{opts['steps']}" if opts["steps"] != 1 else ""
                name += f"-lr{fmt(opts['lr'])}" if opts["lr"] is not None else ""
                job = Job(
                    name=name + ("" if chained else "-u"),
                    kind="prune",
                    group=dense.group,
                    model=dense.model,
                    seed=dense.seed,
                    weight_decay=dense.weight_decay,
                    bias_decay=dense.bias_decay,
                    sparsity=target,
                    source=previous.name,
                    prune=dict(opts),
                    overrides=[f"train.threads={threads}"],
                    chained=chained,
                )
                jobs.append(job)
                previous = job
    return jobs
