"""Running a sweep: every job is an ordinary run directory under ``OUT/runs``, made by
the same ``dualsparse train`` / ``dualsparse prune`` commands a user would type, then
measured into ``OUT/results/NAME.json``.

The file system is the truth: a job whose results file exists is finished and is
skipped when the sweep starts again; an unfinished run is resumed from its last
checkpoint (``train --resume``; ``prune`` reuses its finished steps). ``OUT/sweep.json``
records each job's status, attempts, time and, for failures, the error and log; a
failed job does not stop the sweep, only the jobs that build on it are skipped.

Executors: ``local`` (default) runs up to ``jobs`` runs at a time as subprocesses;
``ray`` submits each run as a Ray task that declares ``num_cpus = threads`` (all
nodes must see ``OUT`` and the data at the same paths).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dualsparse.errors import DualsparseError
from dualsparse.fileio import atomic_write_text, read_json
from dualsparse.sweeps.spec import Job, SweepSpec

LOG_TAIL = 15


# ---------------------------------------------------------------- one job


def job_commands(spec: SweepSpec, job: Job, out: Path, data_args: list[str]) -> list[list[str]]:
    """The argv lists (after ``python -m``) that bring ``job`` from where it stands to done."""
    run = out / "runs" / job.name
    commands = []
    if job.kind == "train":
        if (run / "checkpoints" / "latest.json").exists():
            commands.append(["dualsparse", "train", "--resume", str(run), "--no-progress"])
        else:
            if run.exists():  # started but killed before its first checkpoint: start over
                shutil.rmtree(run)
            argv = ["dualsparse", "train"]
            argv += ["--preset", job.preset] if job.preset else ["--config", str(job.config)]
            for item in job.overrides:
                argv += ["--set", item]
            commands.append([*argv, "--out", str(run), "--no-progress", *data_args])
    elif not (run / "prune.json").exists():
        argv = ["dualsparse", "prune", str(out / "runs" / job.source), "--out", str(run)]
        argv += ["--target", repr(job.sparsity), "--steps", str(job.prune["steps"])]
        argv += ["--finetune-epochs", str(job.prune["finetune_epochs"])]
        if job.prune.get("lr") is not None:
            argv += ["--lr", repr(job.prune["lr"])]
        for item in job.overrides:
            argv += ["--set", item]
        commands.append([*argv, "--no-progress", *data_args])
    m = spec.measure
    commands.append(
        [
            "dualsparse.sweeps.measure",
            str(run),
            "--out",
            str(results_path(out, job.name)),
            "--meta",
            json.dumps(job.meta()),
            "--test-batch-size",
            str(m["test_batch_size"]),
            "--macs-batch-size",
            str(m["macs_batch_size"]),
            "--activity-batch-size",
            str(m["activity_batch_size"]),
            "--threads",
            str(spec.threads),
            *data_args,
        ]
    )
    return commands


def results_path(out: Path, name: str) -> Path:
    return out / "results" / f"{name}.json"


def execute(payload: dict[str, Any]) -> dict[str, Any]:
    """Run a job's commands one after the other as subprocesses (the body of a local
    worker and of a Ray task). On KeyboardInterrupt the running command gets SIGINT,
    checkpoints and stops; the job is then reported as interrupted."""
    log = Path(payload["log"])
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(payload["threads"]), PYTHONUNBUFFERED="1")
    env.pop("DUALSPARSE_NO_TORCH", None)
    started = time.time()
    stop = payload.get("stop")
    with log.open("a", encoding="utf-8") as handle:
        for argv in payload["commands"]:
            if stop is not None and stop.is_set():
                return {"name": payload["name"], "status": "interrupted"}
            handle.write(f"$ python -m {' '.join(argv)}\n")
            handle.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", *argv],
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a terminal's Ctrl-C reaches the sweep, which forwards it
            )
            payload.get("register", lambda p: None)(proc)
            try:
                rc = proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)
                proc.wait()
                return {"name": payload["name"], "status": "interrupted"}
            if stop is not None and stop.is_set():  # a run stopped by SIGINT exits 0
                return {"name": payload["name"], "status": "interrupted"}
            if rc != 0:
                return {
                    "name": payload["name"],
                    "status": "interrupted" if rc in (130, -2, -15) else "failed",
                    "returncode": rc,
                    "error": _tail(log),
                    "seconds": time.time() - started,
                }
    return {"name": payload["name"], "status": "done", "seconds": time.time() - started}


def _tail(log: Path) -> str:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-LOG_TAIL:])


# ---------------------------------------------------------------- executors


class LocalExecutor:
    """Up to ``jobs`` subprocesses at a time (threads only wait on them)."""

    def __init__(self, jobs: int):
        self.pool = cf.ThreadPoolExecutor(max_workers=jobs)
        self.futures: dict[cf.Future, str] = {}
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def _register(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs = {p for p in self.procs if p.poll() is None} | {proc}

    def submit(self, payload: dict[str, Any]) -> None:
        payload = dict(payload, register=self._register, stop=self.stop)
        self.futures[self.pool.submit(execute, payload)] = payload["name"]

    def pending(self) -> int:
        return len(self.futures)

    def wait_one(self) -> list[dict[str, Any]]:
        done, _ = cf.wait(list(self.futures), return_when=cf.FIRST_COMPLETED)
        results = []
        for future in done:
            name = self.futures.pop(future)
            try:
                results.append(future.result())
            except Exception as exc:  # noqa: BLE001 - a worker bug is one failed job
                results.append({"name": name, "status": "failed", "error": repr(exc)})
        return results

    def interrupt(self) -> list[dict[str, Any]]:
        self.stop.set()
        with self.lock:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
        results = []
        while self.futures:
            results += self.wait_one()
        self.pool.shutdown()
        return results

    def close(self) -> None:
        self.pool.shutdown()


class RayExecutor:
    """Each job a Ray task with ``num_cpus=threads``; ``address`` joins a running cluster."""

    def __init__(self, address: str | None, threads: int, jobs: int):
        try:
            import ray
        except ImportError:
            raise DualsparseError(
                "--executor ray needs Ray: pip install 'dualsparse[ray]' (or pip install ray)"
            ) from None
        self.ray = ray
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=max(jobs * threads, threads), log_to_driver=False)
        self.task = ray.remote(num_cpus=threads, max_retries=0)(execute)
        self.refs: dict[Any, str] = {}

    def submit(self, payload: dict[str, Any]) -> None:
        self.refs[self.task.remote(payload)] = payload["name"]

    def pending(self) -> int:
        return len(self.refs)

    def wait_one(self) -> list[dict[str, Any]]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        results = []
        for ref in ready:
            name = self.refs.pop(ref)
            try:
                results.append(self.ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - a task that died is one failed job
                results.append({"name": name, "status": "failed", "error": repr(exc)})
        return results

    def interrupt(self) -> list[dict[str, Any]]:
        for ref in self.refs:
            self.ray.cancel(ref)  # KeyboardInterrupt in the task: its run checkpoints
        results = []
        while self.refs:
            results += self.wait_one()
        for result in results:  # ray.get of a cancelled task raises: not a failure
            if result["status"] == "failed":
                result["status"] = "interrupted"
        return results

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- the sweep


def data_arguments(data: str | None, dataset: str | None, cache_dir: str | None) -> list[str]:
    if data and dataset:
        raise DualsparseError("give --data or --dataset, not both")
    if data:
        if not Path(data).exists():
            raise DualsparseError(f"--data {data} does not exist; give the corpus directory")
        return ["--data", str(Path(data).resolve())]
    if dataset:
        return ["--dataset", dataset] + (["--cache-dir", cache_dir] if cache_dir else [])
    raise DualsparseError(
        "this sweep names no data: give --data DIR (PTB-format train/valid/test files) "
        "or --dataset ptb|wikitext2"
    )


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
    from tqdm import tqdm

    out = Path(out)
    data_args = data_arguments(
        data or (None if dataset else spec.data),
        dataset or (None if data else spec.dataset),
        cache_dir,
    )
    jobs = jobs or spec.jobs
    if jobs < 1:
        raise DualsparseError(f"--jobs {jobs} must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    state = _load_state(out, spec)
    state.update(spec=spec.raw, data_args=data_args, executor=executor)
    names = {job.name for job in spec.job_list}
    records = state["jobs"] = {n: r for n, r in state["jobs"].items() if n in names}
    status = {}
    for job in spec.job_list:
        rec = records.setdefault(job.name, {"attempts": 0})
        rec.update(meta=job.meta(), log=str(out / "logs" / f"{job.name}.log"))
        status[job.name] = "done" if results_path(out, job.name).exists() else "pending"
        rec["status"] = status[job.name]

    def save() -> None:
        atomic_write_text(out / "sweep.json", json.dumps(state, indent=1))

    save()
    runner = (
        LocalExecutor(jobs) if executor == "local" else RayExecutor(address, spec.threads, jobs)
    )
    depth = dependants_depth(spec)
    bar = tqdm(
        total=len(spec.job_list),
        initial=sum(s == "done" for s in status.values()),
        desc=f"sweep {spec.name}",
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
    )

    def finish(result: dict[str, Any]) -> None:
        name = result["name"]
        rec = records[name]
        # The results file is written last: a job that has one is done, even if the sweep
        # was interrupted between its measurement's end and the worker's report.
        status[name] = rec["status"] = (
            "done" if results_path(out, name).exists() else result["status"]
        )
        for key in ("seconds", "returncode", "error"):
            if key in result:
                rec[key] = result[key]
        if status[name] == "failed":
            bar.write(f"failed: {name} (log: {rec['log']})")
        if status[name] == "done":
            rec.pop("error", None)
            bar.update(1)
        save()

    def ready() -> list[Job]:
        jobs_now = [
            job
            for job in spec.job_list
            if status[job.name] == "pending"
            and (job.source is None or status[job.source] == "done")
        ]
        return sorted(jobs_now, key=lambda job: -depth[job.name])  # longest chain first

    try:
        while True:
            for job in spec.job_list:  # a failed or skipped source skips its dependants
                if status[job.name] == "pending" and job.source in status:
                    if status[job.source] in ("failed", "skipped"):
                        status[job.name] = records[job.name]["status"] = "skipped"
                        records[job.name]["error"] = f"{job.source} did not finish"
            while runner.pending() < jobs and (candidates := ready()):
                job = candidates[0]
                status[job.name] = records[job.name]["status"] = "running"
                records[job.name]["attempts"] += 1
                save()
                runner.submit(
                    {
                        "name": job.name,
                        "threads": spec.threads,
                        "log": records[job.name]["log"],
                        "commands": job_commands(spec, job, out, data_args),
                    }
                )
            if not runner.pending():
                break
            bar.set_postfix_str(", ".join(n for n, s in status.items() if s == "running")[:60])
            for result in runner.wait_one():
                finish(result)
    except KeyboardInterrupt:
        bar.write("interrupted: stopping the running jobs at their next checkpoint …")
        for result in runner.interrupt():
            finish(result)
        for name, s in status.items():
            if s in ("running", "interrupted"):
                records[name]["status"] = "pending"
        save()
        bar.close()
        raise
    finally:
        runner.close()
    bar.close()
    save()
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
