"""Running a sweep: every job is an ordinary run directory under ``OUT/runs``, made by
the same library functions as ``dualsparse train`` / ``dualsparse prune``, then measured
into ``OUT/results/NAME.json``. A job is a list of step records (``steps.py``), each run
in a subprocess of its own (``python -m dualsparse sweep-step STEP_JSON``).

The file system is the truth: a job whose results file exists is finished and is
skipped when the sweep starts again; an unfinished run is resumed from its last
checkpoint (``train --resume``; ``prune`` reuses its finished steps). ``OUT/sweep.json``
records each job's status, attempts, time and, for failures, the error and log, beside
the spec and the figures it asks the report for (``figures``, None: all it can); a
failed job does not stop the sweep, only the jobs that build on it are skipped.

How the jobs run (local subprocesses or Ray tasks) is ``executors.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dualsparse.errors import DualsparseError
from dualsparse.fileio import atomic_write_text, read_json
from dualsparse.sweeps.executors import LocalExecutor, RayExecutor
from dualsparse.sweeps.job import Job
from dualsparse.sweeps.spec import SweepSpec
from dualsparse.sweeps.steps import MeasureStep, PruneStep, Step, TrainStep
from dualsparse.training.guards import run_lock

# ---------------------------------------------------------------- one job


def job_steps(spec: SweepSpec, job: Job, out: Path, source: dict[str, Any]) -> list[Step]:
    """The steps that bring ``job`` from where it stands to done; ``source`` is the data
    (``data``, ``dataset``, ``cache_dir``, as ``resolve_data`` gives it)."""
    run = out / "runs" / job.name
    steps: list[Step] = []
    if job.kind == "train":
        if (run / "checkpoints" / "latest.json").exists():  # on the data it recorded
            steps.append(TrainStep(run=str(run), resume=True))
        else:  # new, or killed before its first checkpoint: new_run starts it over
            steps.append(
                TrainStep(
                    run=str(run),
                    preset=job.preset,
                    config=None if job.preset else str(job.config),
                    overrides=tuple(job.overrides),
                    **source,
                )
            )
    elif not (run / "prune.json").exists():
        steps.append(
            PruneStep(
                run=str(run),
                source=str(out / "runs" / job.source),
                target=job.sparsity,
                steps=job.prune["steps"],
                finetune_epochs=job.prune["finetune_epochs"],
                lr=job.prune.get("lr"),
                overrides=tuple(job.overrides),
                **source,
            )
        )
    steps.append(
        MeasureStep(
            run=str(run),
            out=str(results_path(out, job.name)),
            meta=job.meta(),
            threads=spec.threads,
            **spec.measure,
            **source,
        )
    )
    return steps


def results_path(out: Path, name: str) -> Path:
    return out / "results" / f"{name}.json"


# ---------------------------------------------------------------- the sweep


def resolve_data(
    data: str | None, dataset: str | None, cache_dir: str | None
) -> dict[str, str | None]:
    """The sweep's corpus as the steps take it (``data``, ``dataset``, ``cache_dir``),
    checked once here; a directory becomes an absolute path."""
    if data and dataset:
        raise DualsparseError("give --data or --dataset, not both")
    if data:
        if not Path(data).exists():
            raise DualsparseError(f"--data {data} does not exist; give the corpus directory")
        return {"data": str(Path(data).resolve()), "dataset": None, "cache_dir": None}
    if dataset:
        return {"data": None, "dataset": dataset, "cache_dir": cache_dir}
    raise DualsparseError(
        "this sweep names no data: give --data DIR (PTB-format train/valid/test files) "
        "or --dataset ptb|wikitext2"
    )


def data_arguments(source: dict[str, str | None]) -> list[str]:
    """The corpus as command-line options (``data_args`` of sweep.json, shown in reports)."""
    if source["data"]:
        return ["--data", source["data"]]
    cache = ["--cache-dir", source["cache_dir"]] if source["cache_dir"] else []
    return ["--dataset", str(source["dataset"]), *cache]


def _load_state(out: Path, spec: SweepSpec) -> dict[str, Any]:
    path = out / "sweep.json"
    if path.exists():
        state = read_json(path, "the sweep state is damaged: move it away to restart")
        if state.get("name") != spec.name:
            raise DualsparseError(
                f"{out} holds the sweep {state.get('name')!r}, not {spec.name!r}; "
                "give another --out"
            )
        return state
    return {"name": spec.name, "jobs": {}}


class Ledger:
    """Every job's status, in memory and in ``OUT/sweep.json`` (``state``), and which
    jobs may start now."""

    def __init__(self, spec: SweepSpec, out: Path, state: dict[str, Any]):
        self.spec, self.out, self.state = spec, out, state
        names = {job.name for job in spec.job_list}
        self.records = state["jobs"] = {n: r for n, r in state["jobs"].items() if n in names}
        self.status: dict[str, str] = {}
        for job in spec.job_list:
            rec = self.records.setdefault(job.name, {"attempts": 0})
            rec.update(meta=job.meta(), log=str(out / "logs" / f"{job.name}.log"))
            self.set(job.name, "done" if results_path(out, job.name).exists() else "pending")
        self.depth = dependants_depth(spec)

    def set(self, name: str, status: str) -> None:
        self.status[name] = self.records[name]["status"] = status

    def save(self) -> None:
        atomic_write_text(self.out / "sweep.json", json.dumps(self.state, indent=1))

    def named(self, status: str) -> list[str]:
        return [name for name, s in self.status.items() if s == status]

    def skip_dependants_of_failures(self) -> None:
        """A failed or skipped source skips the jobs that prune it."""
        for job in self.spec.job_list:
            if self.status[job.name] == "pending" and job.source in self.status:
                if self.status[job.source] in ("failed", "skipped"):
                    self.set(job.name, "skipped")
                    self.records[job.name]["error"] = f"{job.source} did not finish"

    def ready(self) -> list[Job]:
        """Pending jobs whose source is done, the longest chain of dependants first."""
        jobs_now = [
            job
            for job in self.spec.job_list
            if self.status[job.name] == "pending"
            and (job.source is None or self.status[job.source] == "done")
        ]
        return sorted(jobs_now, key=lambda job: -self.depth[job.name])

    def start(self, name: str) -> None:
        self.set(name, "running")
        self.records[name]["attempts"] += 1
        self.save()

    def finish(self, result: dict[str, Any]) -> str:
        """Record a worker's result; returns the job's new status."""
        name, rec = result["name"], self.records[result["name"]]
        # The results file is written last: a job that has one is done, even if the sweep
        # was interrupted between its measurement's end and the worker's report.
        self.set(name, "done" if results_path(self.out, name).exists() else result["status"])
        for key in ("seconds", "returncode", "error"):
            if key in result:
                rec[key] = result[key]
        if rec["status"] == "done":
            rec.pop("error", None)
        self.save()
        return rec["status"]

    def requeue_unfinished(self) -> None:
        """After an interrupt: what was running starts again next time."""
        for name in self.named("running") + self.named("interrupted"):
            self.records[name]["status"] = "pending"
        self.save()


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    data: str | None = None,
    dataset: str | None = None,
    cache_dir: str | None = None,
    jobs: int | None = None,
    executor: str = "local",
    address: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or continue) ``spec`` in ``out``; returns the final state (sweep.json)."""
    out = Path(out)
    source = resolve_data(
        data or (None if dataset else spec.data),
        dataset or (None if data else spec.dataset),
        cache_dir,
    )
    jobs = jobs or spec.jobs
    if jobs < 1:
        raise DualsparseError(f"--jobs {jobs} must be at least 1")
    with run_lock(out, "sweep"):  # a second sweep on OUT is refused before it reads it
        return _run_locked(spec, out, source, jobs, executor, address, progress)


def _run_locked(spec, out, source, jobs, executor, address, progress) -> dict[str, Any]:
    from tqdm import tqdm

    state = _load_state(out, spec)
    state.update(spec=spec.raw, data_args=data_arguments(source), executor=executor)
    state["figures"] = list(spec.figures) if spec.figures is not None else None  # for the report
    ledger = Ledger(spec, out, state)
    ledger.save()
    runner = (
        LocalExecutor(jobs) if executor == "local" else RayExecutor(address, spec.threads, jobs)
    )
    bar = tqdm(
        total=len(spec.job_list),
        initial=len(ledger.named("done")),
        desc=f"sweep {spec.name}",
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
    )

    def finish(result: dict[str, Any]) -> None:
        status = ledger.finish(result)
        if status == "failed":
            bar.write(f"failed: {result['name']} (log: {ledger.records[result['name']]['log']})")
        elif status == "done":
            bar.update(1)

    try:
        while True:
            ledger.skip_dependants_of_failures()
            while runner.pending() < jobs and (candidates := ledger.ready()):
                job = candidates[0]
                ledger.start(job.name)
                steps = job_steps(spec, job, out, source)
                runner.submit(
                    {
                        "name": job.name,
                        "threads": spec.threads,
                        "log": ledger.records[job.name]["log"],
                        "steps": [step.to_json() for step in steps],
                    }
                )
            if not runner.pending():
                break
            bar.set_postfix_str(", ".join(ledger.named("running"))[:60])
            for result in runner.wait_one():
                finish(result)
    except KeyboardInterrupt:
        bar.write("interrupted: stopping the running jobs at their next checkpoint …")
        for result in runner.interrupt():
            finish(result)
        ledger.requeue_unfinished()
        bar.close()
        raise
    finally:
        runner.close()
    bar.close()
    ledger.save()
    return state


def dependants_depth(spec: SweepSpec) -> dict[str, int]:
    """Per job, the length of the longest chain of jobs that wait for it."""
    children: dict[str, list[str]] = {job.name: [] for job in spec.job_list}
    for job in spec.job_list:
        if job.source:
            children[job.source].append(job.name)
    memo: dict[str, int] = {}

    def depth(name: str) -> int:
        if name not in memo:
            memo[name] = max((1 + depth(c) for c in children[name]), default=0)
        return memo[name]

    return {name: depth(name) for name in children}


def status_counts(state: dict[str, Any]) -> str:
    """'16 done, 2 failed': how many runs of a sweep state are in which status."""
    counts: dict[str, int] = {}
    for rec in state.get("jobs", {}).values():
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def sweep_summary(state: dict[str, Any]) -> str:
    lines = [status_counts(state)]
    for name, rec in state["jobs"].items():
        if rec["status"] in ("failed", "skipped"):
            why = (rec.get("error") or "").strip().splitlines()
            lines.append(f"  {rec['status']}: {name}: {why[-1] if why else ''} (log: {rec['log']})")
    return "\n".join(lines)
