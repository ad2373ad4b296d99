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

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dualsparse.config import apply_overrides, resolve_config
from dualsparse.errors import DualsparseError
from dualsparse.sweeps.job import Job
from dualsparse.sweeps.pruning_grid import prune_jobs, prune_settings
from dualsparse.sweeps.values import fmt, number, numbers, unknown_keys

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


def parse_spec(data: Any, source: str, base: Path | None) -> SweepSpec:
    if not isinstance(data, dict):
        raise DualsparseError(f"{source}: expected a mapping with name: and groups:")
    unknown_keys(data, TOP_KEYS, source)
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
    unknown_keys(given, set(MEASURE_DEFAULTS), f"{source}: measure")
    for key, value in given.items():
        measure[key] = number(value, f"{source}: measure.{key}", int)
        if measure[key] < 1:
            raise DualsparseError(f"{source}: measure.{key} must be >= 1")
    threads = number(data.get("threads", 1), f"{source}: threads", int)
    jobs = number(data.get("jobs", 1), f"{source}: jobs", int)
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


def _expand_group(group: Any, where: str, base: Path | None, threads: int) -> list[Job]:
    if not isinstance(group, dict):
        raise DualsparseError(f"{where}: expected a mapping (name:, preset:, seeds: …)")
    unknown_keys(group, GROUP_KEYS, where)
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
    seeds = numbers(group.get("seeds"), f"{where}: seeds", int)
    wds = numbers(
        group.get("weight_decay"), f"{where}: weight_decay", float, [cfg.train.weight_decay]
    )
    bds = numbers(group.get("bias_decay"), f"{where}: bias_decay", float, [cfg.train.bias_decay])
    if min(wds) < 0 or min(bds) < 0:
        raise DualsparseError(f"{where}: weight_decay and bias_decay must be >= 0")
    targets = numbers(group.get("sparsity"), f"{where}: sparsity", float, [0.0])
    if any(not 0.0 <= t < 1.0 for t in targets):
        raise DualsparseError(f"{where}: sparsity targets must be in [0, 1), e.g. [0.6, 0.8, 0.9]")
    targets = sorted(t for t in targets if t > 0)
    plans, chains = prune_settings(group, targets, where)
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
                jobs.extend(prune_jobs(dense, targets, plans, chains, threads))
    return jobs
