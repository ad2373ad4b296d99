"""The steps of a sweep job, as records: train (or resume), prune, measure.

A job is a list of steps (``runner.job_steps``); each step runs in a subprocess of its
own, ``python -m dualsparse sweep-step STEP_JSON`` (a subcommand the CLI does not
list), so that a crash, a kill or a stuck run costs one step, and the step calls the
same library functions as ``dualsparse train``, ``prune`` and ``evaluate``/``macs``.
``to_json``/``step_from_json`` are that interface: the record, a ``"step"`` field
naming its kind, nothing else. The job's log shows each step's command line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from dualsparse.errors import DualsparseError


@dataclass(frozen=True, kw_only=True)
class Step:
    """Where the data comes from (exactly what ``--data``/``--dataset``/``--cache-dir``
    would give) and the run directory the step works on."""

    kind: ClassVar[str]
    run: str
    data: str | None = None
    dataset: str | None = None
    cache_dir: str | None = None

    def to_json(self) -> str:
        return json.dumps({"step": self.kind, **asdict(self)})

    def run_step(self) -> str:
        """Do the step; returns one line for the job's log."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class TrainStep(Step):
    """Train a new run from a preset or config file, or resume ``run`` (``resume``)."""

    kind: ClassVar[str] = "train"
    preset: str | None = None
    config: str | None = None
    overrides: tuple[str, ...] = ()
    resume: bool = False

    def run_step(self) -> str:
        from dualsparse.runs import format_train_summary, new_run, resume_run

        source = (self.data, self.dataset, self.cache_dir)
        if self.resume:
            summary = resume_run(self.run, self.overrides, *source, progress=False)
        else:
            from dualsparse.config import resolve_config

            cfg = resolve_config(self.preset, self.config, list(self.overrides))
            summary = new_run(self.run, cfg, *source, progress=False)
        return format_train_summary(summary)


@dataclass(frozen=True, kw_only=True)
class PruneStep(Step):
    """Prune the best checkpoint of ``source`` into ``run`` (``dualsparse prune``)."""

    kind: ClassVar[str] = "prune"
    source: str
    target: float
    steps: int = 1
    finetune_epochs: int = 1
    lr: float | None = None
    overrides: tuple[str, ...] = ()

    def run_step(self) -> str:
        from dualsparse.runs import prune_trained_run

        record = prune_trained_run(
            self.source,
            self.run,
            self.data,
            self.dataset,
            self.cache_dir,
            target=self.target,
            steps=self.steps,
            finetune_epochs=self.finetune_epochs,
            lr=self.lr,
            overrides=list(self.overrides),
            progress=False,
        )
        return (
            f"pruned {self.source} -> {self.run}: weight sparsity "
            f"{record['sparsity']['weight_sparsity']:.3f}"
        )


@dataclass(frozen=True, kw_only=True)
class MeasureStep(Step):
    """Measure ``run`` (``sweeps.measure.measure_run``) into the results file ``out``;
    ``meta`` (the job's name, group, …) is merged into the record."""

    kind: ClassVar[str] = "measure"
    out: str
    meta: dict[str, Any]
    test_batch_size: int = 1
    macs_batch_size: int = 1
    activity_batch_size: int = 10
    threads: int = 0

    def run_step(self) -> str:
        import torch

        from dualsparse.fileio import atomic_write_text
        from dualsparse.sweeps.measure import measure_run

        if self.threads:
            torch.set_num_threads(self.threads)
        record = measure_run(
            self.run,
            self.data,
            self.dataset,
            self.cache_dir,
            test_batch_size=self.test_batch_size,
            macs_batch_size=self.macs_batch_size,
            activity_batch_size=self.activity_batch_size,
            meta=self.meta,
        )
        Path(self.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out, json.dumps(record, indent=1))
        return f"measured {self.run} -> {self.out}"


STEP_TYPES: dict[str, type[Step]] = {s.kind: s for s in (TrainStep, PruneStep, MeasureStep)}


def step_from_json(text: str) -> Step:
    """The step a ``to_json`` record describes; a DualsparseError for anything else."""
    try:
        record = json.loads(text)
        step_type = STEP_TYPES[record.pop("step")]
        names = {f.name for f in fields(step_type)}
        if not set(record) <= names:
            raise TypeError(f"unknown fields {sorted(set(record) - names)}")
        for key in ("overrides",):  # JSON has lists only; the records hold tuples
            if key in record:
                record[key] = tuple(record[key])
        return step_type(**record)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DualsparseError(
            f"not a sweep step record ({exc}); sweep-step takes what the sweep writes "
            f"(one of {', '.join(STEP_TYPES)})"
        ) from None
