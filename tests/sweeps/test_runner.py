"""Running sweeps for real: tiny runs on the tiny corpus, each job the same
train / prune / measure step subprocesses (``dualsparse sweep-step``) a user's sweep
starts.

Every subprocess pays Python + PyTorch start-up (seconds on a busy machine), so the
sweeps here are as small as each behaviour allows, and the end-to-end sweep is made
once per module and copied for the resume test.
"""

import json
import math
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import write_run_config, write_tiny_corpus
from dualsparse.cli import main
from dualsparse.sweeps.runner import run_sweep
from dualsparse.sweeps.spec import load_spec

SRC = Path(__file__).resolve().parents[2] / "src"

EGRU, LSTM = "egru-wd0.01-bd0-s1", "lstm-wd0.01-bd0-s1"
EGRU_P50 = f"{EGRU}-p50"


@pytest.fixture(autouse=True, scope="module")
def _runs_use_this_checkout():
    """The sweep's subprocesses import dualsparse from this source tree, one thread each."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(SRC))
        patch.setenv("OMP_NUM_THREADS", "1")
        yield


def tiny_group(name: str, config: str | None = None, **keys) -> dict:
    return {"name": name, "config": config or f"{name}.yaml", "seeds": [1], **keys}


def make_sweep(root: Path, *groups: dict, **top) -> Path:
    """A spec file in ``root`` beside the tiny corpus (``data: tiny``) and the tiny
    run configs egru.yaml and lstm.yaml; every group has weight decay 0.01."""
    write_tiny_corpus(root / "tiny")
    write_run_config(root / "egru.yaml")
    write_run_config(root / "lstm.yaml", model={"type": "lstm"})
    spec = {
        "name": "tiny",
        "data": "tiny",
        "jobs": 2,
        "measure": {"activity_batch_size": 2},
        **top,
        "groups": [{"weight_decay": [0.01], **group} for group in groups],
    }
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def sweep_state(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text(encoding="utf-8"))["jobs"]


def statuses(out: Path) -> dict[str, str]:
    return {name: record["status"] for name, record in sweep_state(out).items()}


def result(out: Path, name: str) -> dict:
    return json.loads((out / "results" / f"{name}.json").read_text(encoding="utf-8"))


def checkpoint_times(out: Path, name: str) -> dict[Path, int]:
    checkpoints = out / "runs" / name / "checkpoints"
    return {p: p.stat().st_mtime_ns for p in sorted(checkpoints.rglob("*"))}


def finished_work(out: Path, name: str) -> tuple:
    """What redoing a job would change: its checkpoints, its log, its attempts."""
    log = (out / "logs" / f"{name}.log").read_bytes()
    return checkpoint_times(out, name), log, sweep_state(out)[name]["attempts"]


def steps_in_log(out: Path, name: str, step: str, **fields) -> int:
    """How many ``step`` records (with ``fields``) the job's log shows as started."""
    log = (out / "logs" / f"{name}.log").read_text(encoding="utf-8")
    prefix = "$ python -m dualsparse sweep-step "
    records = [
        json.loads(shlex.split(line)[-1]) for line in log.splitlines() if line.startswith(prefix)
    ]
    return sum(r["step"] == step and all(r.get(k) == v for k, v in fields.items()) for r in records)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> tuple[int, Path, Path]:
    """EGRU dense and pruned to 50%, and a dense LSTM, two at a time, through the CLI."""
    root = tmp_path_factory.mktemp("sweep")
    spec = make_sweep(root, tiny_group("egru", sparsity=[0.5]), tiny_group("lstm"))
    out = root / "out"
    code = main(["sweep", str(spec), "--out", str(out), "--jobs", "2", "--no-progress"])
    return code, spec, out


def test_sweep_end_to_end(tiny_sweep):
    code, _, out = tiny_sweep
    assert code == 0
    assert statuses(out) == dict.fromkeys([EGRU, EGRU_P50, LSTM], "done")
    dense, pruned = result(out, EGRU), result(out, EGRU_P50)
    assert dense["weight_sparsity"] < 0.01 and result(out, LSTM)["weight_sparsity"] < 0.01
    assert pruned["weight_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert (pruned["kind"], pruned["source"], result(out, LSTM)["model"]) == ("prune", EGRU, "lstm")
    for name in (EGRU, EGRU_P50, LSTM):
        assert math.isfinite(result(out, name)["test"]["perplexity"])
    event_macs = [r["macs"]["rnn"]["event_macs_per_token"] for r in (dense, pruned)]
    assert 0 < event_macs[1] < event_macs[0]


def test_resume_redoes_only_what_is_missing(tiny_sweep, tmp_path):
    _, spec, original = tiny_sweep
    out = Path(shutil.copytree(original, tmp_path / "out"))
    (out / "results" / f"{LSTM}.json").unlink()  # killed while measuring
    (out / "results" / f"{EGRU_P50}.json").unlink()  # killed before its prune finished
    shutil.rmtree(out / "runs" / EGRU_P50)
    egru_before = finished_work(out, EGRU)
    lstm_checkpoints = checkpoint_times(out, LSTM)

    run_sweep(load_spec(spec), out, jobs=2, progress=False)

    assert set(statuses(out).values()) == {"done"}
    assert finished_work(out, EGRU) == egru_before
    assert sweep_state(out)[LSTM]["attempts"] == 2
    assert checkpoint_times(out, LSTM) == lstm_checkpoints  # finished: resumed, not retrained
    assert steps_in_log(out, LSTM, "train", resume=True) == 1
    assert steps_in_log(out, LSTM, "measure") == 2
    assert sweep_state(out)[EGRU_P50]["attempts"] == 2
    assert steps_in_log(out, EGRU_P50, "prune") == 2
    assert result(out, EGRU_P50)["weight_sparsity"] == pytest.approx(0.5, abs=1e-3)


def wait_for(condition, process: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"sweep ended or hung before the interrupt: {process.communicate()[0]}")
        time.sleep(0.05)


def test_interrupted_sweep_continues_where_it_stopped(tmp_path):
    """SIGTERM (what a scheduler sends) while a long run trains beside a finished one."""
    quick, slow = "quick-wd0.01-bd0-s1", "slow-wd0.01-bd0-s1"
    spec = make_sweep(
        tmp_path,
        tiny_group("quick", "egru.yaml"),
        tiny_group("slow", "egru.yaml", set=["train.epochs=50"]),  # seconds of training
    )
    out = tmp_path / "out"
    argv = ["sweep", str(spec), "--out", str(out), "--no-progress"]
    process = subprocess.Popen(
        [sys.executable, "-m", "dualsparse", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    slow_checkpoint = out / "runs" / slow / "checkpoints" / "latest.json"
    wait_for(
        lambda: (out / "results" / f"{quick}.json").exists() and slow_checkpoint.exists(),
        process,
    )
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130, output
    assert "Traceback" not in output and "continue with the same command" in output
    assert statuses(out) == {quick: "done", slow: "pending"}
    quick_before = finished_work(out, quick)

    run_sweep(load_spec(spec), out, progress=False)

    assert statuses(out) == {quick: "done", slow: "done"}
    assert finished_work(out, quick) == quick_before
    assert sweep_state(out)[slow]["attempts"] == 2
    assert steps_in_log(out, slow, "train", resume=True) == 1
    assert any((out / "runs" / slow / "checkpoints").glob("epoch0050-*"))  # trained to the end


def test_failed_run_is_recorded_and_the_rest_goes_on(capsys, tmp_path):
    """A batch larger than the corpus passes the spec but fails when the run starts."""
    write_run_config(tmp_path / "bad.yaml", batch_size=1000)
    spec = make_sweep(tmp_path, tiny_group("egru"), tiny_group("bad", sparsity=[0.5]))
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 1
    bad, bad_pruned = "bad-wd0.01-bd0-s1", "bad-wd0.01-bd0-s1-p50"
    assert statuses(out) == {EGRU: "done", bad: "failed", bad_pruned: "skipped"}
    records = sweep_state(out)
    assert records[bad]["returncode"] == 2
    assert "batch size 1000 is larger than the data" in records[bad]["error"]
    assert records[bad_pruned]["error"] == f"{bad} did not finish"
    assert records[bad_pruned]["attempts"] == 0
    summary = capsys.readouterr().out
    assert f"failed: {bad}" in summary and f"skipped: {bad_pruned}" in summary


def test_ray_executor(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="the Ray executor needs ray (pip install ray)")
    spec = make_sweep(tmp_path, tiny_group("egru"), tiny_group("lstm"))
    monkeypatch.chdir(tmp_path)  # a relative --out, as users type it
    try:
        run_sweep(load_spec(spec), "out", jobs=2, executor="ray", progress=False)
    finally:
        ray.shutdown()
    out = tmp_path / "out"
    assert statuses(out) == {EGRU: "done", LSTM: "done"}
    assert math.isfinite(result(out, LSTM)["test"]["perplexity"])
