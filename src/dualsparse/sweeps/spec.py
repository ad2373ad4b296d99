"""Sweep specifications: a YAML grid expanded into named jobs.

A spec has a few top-level settings and a list of ``groups``; each group is a
grid over seeds × weight decay × bias decay, trained from one preset (or config
file) with ``--set`` overrides, and optionally pruned to a list of sparsity
targets, in a grid over the number of pruning steps × the fine-tuning learning
rate, chained or not. Every grid point is one job with a deterministic name; jobs
of different groups with the same name must be the same job (so a weight-decay
group may share its default point with a pruning group).

    name: cpu-brown
    dataset: null              # ptb | wikitext2, or data: PATH; --data/--dataset override
    threads: 1                 # torch threads per run
    jobs: 2                    # runs at a time (local executor)
    measure: {test_batch_size: 1, macs_batch_size: 1, activity_batch_size: 10}
    figures: [pruning-steps]   # optional: what the report should draw (FIGURES)
    groups:
      - name: egru
        preset: cpu-small-egru
        set: [train.epochs=2]
        seeds: [1, 2]
        weight_decay: [0.01]
        bias_decay: [0.0]
        sparsity: [0.6, 0.8, 0.9]
        prune:
          steps: [1, 2]        # a number or a list: the grid (paper Fig. 3)
          lr: [null, 0.0005]   # null: prune's default (0.1x the run's below 0.7, 1x above)
          finetune_epochs: 1
          chain: [true, false] # both series side by side
          targets: {0.9: {steps: [1, 2, 4]}}   # per target: steps, lr, finetune_epochs

With ``chain: true`` each target is pruned from the previous target's run (the
paper's train → prune → fine-tune → prune … procedure, every level kept as a
run), one chain per (steps, lr) combination; with ``chain: false`` each target
is pruned from the dense run. A chain needs every target to have the same
(steps, lr) grid, or one combination per target; anything else is refused.

A pruned run is named ``DENSE-pNN``, plus ``-kK`` for K steps other than 1,
``-lrLR`` for a fine-tuning rate other than prune's default, and ``-u`` when it is
pruned from the dense run outside a chain; the defaults add nothing, so a
chained spec without grids names its runs as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dualsparse.config import apply_overrides, resolve_config
from dualsparse.errors import DualsparseError

TOP_KEYS = {
    "name",
    "description",
    "dataset",
    "data",
    "threads",
    "jobs",
    "measure",
    "figures",
    "groups",
}
GROUP_KEYS = {
    "name",
    "preset",
    "config",
    "set",
    "seeds",
    "weight_decay",
    "bias_decay",
    "sparsity",
    "prune",
}
PRUNE_KEYS = {"steps", "finetune_epochs", "chain", "lr", "targets"}
TARGET_KEYS = {"steps", "finetune_epochs", "lr"}  # what prune.targets may set per target
# What ``dualsparse report`` can draw; a spec's ``figures:`` names some of them.
FIGURES = (
    "activity-vs-sparsity",
    "decay-distributions",
    "pruning-steps",
    "decay-tradeoff",
    "learning-curves",
)
MEASURE_DEFAULTS = {"test_batch_size": 1, "macs_batch_size": 1, "activity_batch_size": 10}


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


@dataclass
class SweepSpec:
    name: str
    description: str
    data: str | None
    dataset: str | None
    threads: int
    jobs: int
    measure: dict[str, int]
    job_list: list[Job]
    raw: dict[str, Any]
    figures: tuple[str, ...] | None = None  # what the report should draw; None: what it can

    def job(self, name: str) -> Job:
        return next(j for j in self.job_list if j.name == name)


def study_names() -> list[str]:
    files = resources.files("dualsparse") / "sweeps" / "studies"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def load_spec(spec: str | Path) -> SweepSpec:
    """A spec from a YAML file, or a shipped study by name (see ``study_names``)."""
    path = Path(spec)
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            reason = str(exc).splitlines()[0]
            raise DualsparseError(
                f"sweep spec {path} is not valid YAML ({reason}); fix it"
            ) from None
        base = path.resolve().parent
        return parse_spec(data, str(path), base)
    if str(spec) in study_names():
        text = (resources.files("dualsparse") / "sweeps" / "studies" / f"{spec}.yaml").read_text()
        return parse_spec(yaml.safe_load(text), f"study {spec}", None)
    raise DualsparseError(
        f"sweep spec {spec} is neither a file nor a shipped study; "
        f"shipped studies: {', '.join(study_names())}"
    )


def _number(value: Any, where: str, kind=float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DualsparseError(f"{where}: expected a number, got {value!r}")
    if kind is int and (not float(value).is_integer()):
        raise DualsparseError(f"{where}: expected an integer, got {value!r}")
    if not math.isfinite(value):
        raise DualsparseError(f"{where}: {value!r} is not finite")
    return kind(value)


def _numbers(value: Any, where: str, kind=float, default=None) -> list:
    if value is None:
        if default is None:
            raise DualsparseError(f"{where} is missing; give a list, e.g. [1, 2]")
        return default
    values = value if isinstance(value, list) else [value]
    if not values:
        raise DualsparseError(f"{where} is empty; give at least one value")
    out = [_number(v, f"{where}[{i}]", kind) for i, v in enumerate(values)]
    if len(set(out)) != len(out):
        raise DualsparseError(f"{where} repeats a value: {values}")
    return out


def _unknown(mapping: dict, allowed: set[str], where: str) -> None:
    extra = set(mapping) - allowed
    if extra:
        raise DualsparseError(
            f"{where}: unknown key(s) {sorted(extra)}; allowed: {', '.join(sorted(allowed))}"
        )


def fmt(value: float) -> str:
    """A number as it appears in run names: 0.01 → '0.01', 0.0 → '0', 1e-4 → '0.0001'.

    Values that six decimals do not hold keep all their digits (1.2e-6 → '1.2e-06'):
    otherwise AWD-LSTM's weight decay 1.2e-6 would be named like 1e-6, and 1e-7 like 0."""
    text = f"{value:.6f}".rstrip("0").rstrip(".") or "0"
    if abs(float(text) - value) > 1e-9 * max(1.0, abs(value)):
        return repr(value)
    return text


def parse_spec(data: Any, source: str, base: Path | None) -> SweepSpec:
    if not isinstance(data, dict):
        raise DualsparseError(f"{source}: expected a mapping with name: and groups:")
    _unknown(data, TOP_KEYS, source)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DualsparseError(f"{source}: give the sweep a name: (a short word)")
    if data.get("data") is not None and data.get("dataset") is not None:
        raise DualsparseError(f"{source}: give data: or dataset:, not both")
    data_path = data.get("data")
    if data_path is not None and base is not None and not Path(data_path).is_absolute():
        data_path = str(base / data_path)
    measure = dict(MEASURE_DEFAULTS)
    given = data.get("measure") or {}
    if not isinstance(given, dict):
        raise DualsparseError(f"{source}: measure: must be a mapping")
    _unknown(given, set(MEASURE_DEFAULTS), f"{source}: measure")
    for key, value in given.items():
        measure[key] = _number(value, f"{source}: measure.{key}", int)
        if measure[key] < 1:
            raise DualsparseError(f"{source}: measure.{key} must be >= 1")
    threads = _number(data.get("threads", 1), f"{source}: threads", int)
    jobs = _number(data.get("jobs", 1), f"{source}: jobs", int)
    if threads < 1 or jobs < 1:
        raise DualsparseError(f"{source}: threads and jobs must be >= 1")
    groups = data.get("groups")
    if not isinstance(groups, list) or not groups:
        raise DualsparseError(f"{source}: groups: must be a non-empty list of grids")
    jobs_by_name: dict[str, Job] = {}
    for index, group in enumerate(groups):
        for job in _expand_group(group, f"{source}: groups[{index}]", base, threads):
            known = jobs_by_name.get(job.name)
            if known is not None and known.definition() != job.definition():
                raise DualsparseError(
                    f"{source}: two groups define the run {job.name} differently; "
                    "give the groups different names"
                )
            jobs_by_name.setdefault(job.name, job)
    return SweepSpec(
        name=name.strip(),
        description=str(data.get("description") or ""),
        data=data_path,
        dataset=data.get("dataset"),
        threads=threads,
        jobs=jobs,
        measure=measure,
        job_list=list(jobs_by_name.values()),
        raw=data,
        figures=_figures(data.get("figures"), source),
    )


def _figures(value: Any, source: str) -> tuple[str, ...] | None:
    """The spec's ``figures:``: names from FIGURES, or None when it names none."""
    if value is None:
        return None
    names = value if isinstance(value, list) else [value]
    unknown = [n for n in names if n not in FIGURES]
    if unknown or not names or len(set(names)) != len(names):
        problem = f"unknown figure(s) {unknown}" if unknown else "give each figure once"
        raise DualsparseError(
            f"{source}: figures: {problem}; valid: {', '.join(FIGURES)} "
            "(or leave figures: out to draw what the runs allow)"
        )
    return tuple(names)


def _steps_grid(value: Any, where: str) -> list[int]:
    steps = _numbers(value, where, int, [1])
    if min(steps) < 1:
        raise DualsparseError(f"{where}: pruning steps must be >= 1 (1 = one-shot), got {steps}")
    return steps


def _lr_grid(value: Any, where: str) -> list[float | None]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise DualsparseError(f"{where} is empty; give null (prune's default) or a rate")
    rates = [None if v is None else _number(v, f"{where}[{i}]") for i, v in enumerate(values)]
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
    epochs = _number(settings.get("finetune_epochs", 1), f"{where}.finetune_epochs", int)
    if epochs < 0:
        raise DualsparseError(f"{where}.finetune_epochs must be >= 0")
    return [
        {"steps": steps, "finetune_epochs": epochs, "lr": lr}
        for steps in _steps_grid(settings.get("steps"), f"{where}.steps")
        for lr in _lr_grid(settings.get("lr"), f"{where}.lr")
    ]


def _prune_settings(
    group: dict, targets: list[float], where: str
) -> tuple[dict[float, list[dict[str, Any]]], list[bool]]:
    """A group's ``prune:`` section: per target, the (steps × lr) grid of prune options,
    and the series to build: chained (each target pruned from the previous target's run
    of the same combination) and/or unchained (each from the dense run)."""
    prune = dict(group.get("prune") or {})
    _unknown(prune, PRUNE_KEYS, f"{where}: prune")
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
        _unknown(given, TARGET_KEYS, label)
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


def _prune_jobs(
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


def _expand_group(group: Any, where: str, base: Path | None, threads: int) -> list[Job]:
    if not isinstance(group, dict):
        raise DualsparseError(f"{where}: expected a mapping (name:, preset:, seeds: …)")
    _unknown(group, GROUP_KEYS, where)
    gname = group.get("name")
    if not isinstance(gname, str) or not gname.replace("-", "").replace("_", "").isalnum():
        raise DualsparseError(f"{where}: name: must be a word like egru or lstm-awd")
    config = group.get("config")
    if config is not None and base is not None and not Path(config).is_absolute():
        config = str(base / config)
    overrides = group.get("set") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise DualsparseError(f"{where}: set: must be a list of KEY=VALUE strings")
    try:
        cfg = resolve_config(group.get("preset"), config, overrides)
    except DualsparseError as exc:
        raise DualsparseError(f"{where}: {exc}") from None
    seeds = _numbers(group.get("seeds"), f"{where}: seeds", int)
    wds = _numbers(
        group.get("weight_decay"), f"{where}: weight_decay", float, [cfg.train.weight_decay]
    )
    bds = _numbers(group.get("bias_decay"), f"{where}: bias_decay", float, [cfg.train.bias_decay])
    if min(wds) < 0 or min(bds) < 0:
        raise DualsparseError(f"{where}: weight_decay and bias_decay must be >= 0")
    targets = _numbers(group.get("sparsity"), f"{where}: sparsity", float, [0.0])
    if any(not 0.0 <= t < 1.0 for t in targets):
        raise DualsparseError(f"{where}: sparsity targets must be in [0, 1), e.g. [0.6, 0.8, 0.9]")
    targets = sorted(t for t in targets if t > 0)
    plans, chains = _prune_settings(group, targets, where)
    jobs = []
    for wd in wds:
        for bd in bds:
            for seed in seeds:
                full = [
                    *overrides,
                    f"train.weight_decay={wd!r}",
                    f"train.bias_decay={bd!r}",
                    f"train.threads={threads}",
                    f"train.seed={seed}",
                ]
                try:
                    apply_overrides(cfg, full[len(overrides) :])
                except DualsparseError as exc:
                    raise DualsparseError(f"{where}: {exc}") from None
                dense = Job(
                    name=f"{gname}-wd{fmt(wd)}-bd{fmt(bd)}-s{seed}",
                    kind="train",
                    group=gname,
                    model=cfg.model.type,
                    seed=seed,
                    weight_decay=wd,
                    bias_decay=bd,
                    sparsity=0.0,
                    preset=group.get("preset"),
                    config=config,
                    overrides=full,
                )
                jobs.append(dense)
                jobs.extend(_prune_jobs(dense, targets, plans, chains, threads))
    return jobs
