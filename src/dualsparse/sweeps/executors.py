"""Executors of a sweep's jobs: a job is its list of step records (JSON, ``steps.py``),
run one after the other, each as ``python -m dualsparse sweep-step STEP_JSON`` with
its output appended to the job's log.

``local`` runs up to ``jobs`` jobs at a time (threads wait on the subprocesses);
``ray`` submits each job as a Ray task that declares ``num_cpus = threads`` (all nodes
must see the sweep directory and the data at the same paths).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dualsparse.errors import DualsparseError

LOG_TAIL = 15


def execute(payload: dict[str, Any]) -> dict[str, Any]:
    """Run a job's steps (``payload["steps"]``, JSON records) one after the other, each
    as ``python -m dualsparse sweep-step`` (the body of a local worker and of a Ray task).
    On KeyboardInterrupt the running step gets SIGINT, checkpoints and stops; the job is
    then reported as interrupted."""
    log = Path(payload["log"])
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(payload["threads"]), PYTHONUNBUFFERED="1")
    started = time.time()
    stop = payload.get("stop")
    with log.open("a", encoding="utf-8") as handle:
        for step in payload["steps"]:
            if stop is not None and stop.is_set():
                return {"name": payload["name"], "status": "interrupted"}
            argv = ["-m", "dualsparse", "sweep-step", step]
            handle.write(f"$ {shlex.join(['python', *argv])}\n")
            handle.flush()
            proc = subprocess.Popen(
                [sys.executable, *argv],
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
