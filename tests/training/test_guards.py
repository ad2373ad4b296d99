"""One writer per directory, for real: many processes racing for one lock, a holder killed
with SIGKILL, and the commands (train, resume, prune, sweep) refused before they read or
write anything while another process holds the directory."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from conftest import error_message, file_contents, tiny_run_config, write_tiny_corpus
from dualsparse.errors import DualsparseError
from dualsparse.runs import new_run, prune_trained_run, resume_run
from dualsparse.training.guards import run_lock

SRC = Path(__file__).resolve().parents[2] / "src"
HOLD = """
import sys, time
from dualsparse.training.guards import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


@contextmanager
def held_by_another_process(directory: Path):
    """A real second process that holds ``directory``'s lock until the block ends."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _race(lock_dir, rounds, barrier, inside, most_inside, wins, stale):
    """One contender: every round all contenders try the lock at the same moment; a
    holder counts itself in ``inside`` for a while. Contender 0 leaves a dead process's
    pid (or an empty file) in the lock file before each round when ``stale``."""
    me = os.getpid()
    for r in range(rounds):
        if stale and barrier.wait() == 0:
            (Path(lock_dir) / ".lock").write_text("" if r % 2 else "999999999")
        barrier.wait()
        try:
            with run_lock(lock_dir):
                with inside.get_lock():
                    inside.value += 1
                    most_inside.value = max(most_inside.value, inside.value)
                time.sleep(0.02)
                with inside.get_lock():
                    inside.value -= 1
                with wins.get_lock():
                    wins.value += 1
        except DualsparseError as exc:
            assert "in use by another dualsparse process" in str(exc), exc
            assert "pid 0" not in str(exc) and f"pid {me}" not in str(exc)
        barrier.wait()


@pytest.mark.parametrize("stale", [False, True], ids=["clean", "stale-lock-file"])
def test_simultaneous_lock_attempts_admit_one_holder_at_a_time(tmp_path, stale):
    contenders, rounds = 6, 100
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(contenders)
    inside, most_inside, wins = (context.Value("i", 0) for _ in range(3))
    procs = [
        context.Process(
            target=_race, args=(tmp_path, rounds, barrier, inside, most_inside, wins, stale)
        )
        for _ in range(contenders)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    assert [proc.exitcode for proc in procs] == [0] * contenders
    assert most_inside.value == 1  # never two holders
    assert wins.value >= rounds  # and every round someone got it (stale files included)
    assert not (tmp_path / ".lock").exists()  # the last holder cleaned up


def test_the_lock_of_a_killed_holder_is_free_and_an_empty_lock_file_names_no_pid(tmp_path):
    with held_by_another_process(tmp_path) as holder:
        message = error_message(run_lock(tmp_path).__enter__)
        assert f"pid {holder.pid}" in message
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock(tmp_path):  # the kernel released it with the process
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
        with run_lock(tmp_path):  # the same process again (train inside its Trainer)
            pass
        assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()
    # a holder whose pid is not (yet) in the file: refused without a made-up pid
    (tmp_path / ".lock").write_text("")
    code = "import fcntl,sys,time; f=open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); "
    code += "print('held', flush=True); time.sleep(60)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        message = error_message(run_lock(tmp_path).__enter__)
        assert "in use by another dualsparse process;" in message and "pid" not in message
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.fixture
def trained(tmp_path):
    """A finished one-epoch run with its data record, and a second corpus."""
    data = write_tiny_corpus(tmp_path / "tiny")
    run_dir = tmp_path / "run"
    new_run(run_dir, tiny_run_config(), str(data), progress=False)
    other = write_tiny_corpus(tmp_path / "other")
    return run_dir, data, other


def test_commands_on_a_run_held_by_another_process_are_refused_untouched(trained, tmp_path):
    run_dir, data, other = trained
    before = file_contents(run_dir)
    with held_by_another_process(run_dir):
        lstm = tiny_run_config(model={"type": "lstm"}, seed=2)
        for call, args in (
            (new_run, (run_dir, lstm, str(other))),  # issue 15, point 1
            (resume_run, (run_dir, ["train.epochs=2"])),  # point 2: before reading its state
        ):
            assert "in use by another dualsparse process" in error_message(call, *args)
        pruned = tmp_path / "pruned"
        pruned.mkdir()
        with held_by_another_process(pruned):
            message = error_message(
                lambda: prune_trained_run(run_dir, pruned, target=0.5, progress=False)
            )
            assert "in use" in message and "another directory" in message
            assert [p.name for p in pruned.iterdir()] == [".lock"]  # the holder's only
    after = file_contents(run_dir)
    assert after.pop(run_dir / ".lock")  # left by the killed holder, who wrote its pid
    assert after == before  # not one byte of config.json or source.json rewritten


def test_a_second_sweep_on_one_out_is_refused_and_deletes_nothing(tmp_path):
    from dualsparse.sweeps.runner import run_sweep
    from dualsparse.sweeps.spec import load_spec

    write_tiny_corpus(tmp_path / "tiny")
    (tmp_path / "egru.yaml").write_text(yaml.safe_dump(tiny_run_config().to_dict()))
    spec = {
        "name": "tiny",
        "data": "tiny",
        "groups": [{"name": "egru", "config": "egru.yaml", "seeds": [1], "weight_decay": [0.01]}],
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    started = out / "runs" / "egru-wd0.01-bd0-s1"  # the first sweep's run, before its checkpoint
    started.mkdir(parents=True)
    (started / "config.json").write_text("{}")
    with held_by_another_process(out):
        message = error_message(lambda: run_sweep(load_spec(tmp_path / "spec.yaml"), out))
    assert "in use by another dualsparse process" in message
    assert (started / "config.json").read_text() == "{}"
    assert not (out / "sweep.json").exists()


def test_a_resumed_run_reads_its_state_after_taking_the_lock(trained, monkeypatch):
    """The order itself: the state is read by a process that holds the lock."""
    from dualsparse.training import checkpoint as ckpt

    run_dir, _, _ = trained
    real_read_state, held = ckpt.read_state, []

    def read_state(path):
        held.append((run_dir / ".lock").read_text() == str(os.getpid()))
        return real_read_state(path)

    monkeypatch.setattr(ckpt, "read_state", read_state)
    assert resume_run(run_dir, ["train.epochs=2"], progress=False).epochs_done == 2
    assert held and all(held)


KILLED_IN_FIRST_CHECKPOINT = """
import os, sys, time
from dualsparse.training import checkpoint as ckpt
from dualsparse.cli import main

def sync_then_hang(directory):  # the checkpoint's files are written, not yet renamed in
    print("writing", flush=True)
    time.sleep(60)

ckpt.sync_directory = sync_then_hang
main(["train", "--config", sys.argv[1], "--data", sys.argv[2], "--out", sys.argv[3],
      "--no-progress"])
"""


def test_a_run_killed_during_its_first_checkpoint_restarts_with_the_command_named(tmp_path, capsys):
    """Issue 15, point 4: `train --out R` said R held a run, `--resume R` said it had none."""
    from dualsparse.cli import main

    data, run_dir = write_tiny_corpus(tmp_path / "tiny"), tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_run_config().to_dict()))
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_IN_FIRST_CHECKPOINT, str(config), str(data), str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert any(p.name.startswith(".incoming-") for p in (run_dir / "checkpoints").iterdir())
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    command = err.split("start it over with: ")[1].split()
    assert command[:2] == ["dualsparse", "train"]
    assert main([*command[1:], "--no-progress"]) == 0  # the command the error names works
    capsys.readouterr()
    assert (
        main(["train", "--resume", str(run_dir), "--set", "train.epochs=2", "--no-progress"]) == 0
    )
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").open()]
    assert epochs == [1, 2]  # the lost epoch's leftovers were cleared, not kept
    assert not any(p.name.startswith(".incoming-") for p in (run_dir / "checkpoints").iterdir())


def test_continuing_a_run_on_other_data_needs_other_data(trained, tmp_path):
    """Issue 15, point 5: resume and prune trained on OTHER and exit 0 (the check compared
    the saved vocabulary with itself); source.json kept the old path."""
    run_dir, data, other = trained
    before = file_contents(run_dir)
    for call in (
        lambda: resume_run(run_dir, ["train.epochs=2"], str(other), progress=False),
        lambda: prune_trained_run(run_dir, tmp_path / "p", str(other), target=0.5, progress=False),
    ):
        message = error_message(call)
        assert f"trained on --data {data.resolve()}" in message and "--other-data" in message
    assert file_contents(run_dir) == before and not (tmp_path / "p").exists()
    # its own data, named again, is no change; other data on purpose is recorded
    resume_run(run_dir, ["train.epochs=2"], str(data), progress=False)
    from dualsparse.cli import main

    args = ["prune", str(run_dir), "--out", str(tmp_path / "p"), "--data", str(other)]
    assert main([*args, "--target", "0.5", "--other-data", "--no-progress"]) == 0
    assert json.loads((tmp_path / "p" / "source.json").read_text())["data"] == str(other.resolve())
    resume_run(run_dir, ["train.epochs=3"], str(other), other_data=True, progress=False)
    assert json.loads((run_dir / "source.json").read_text())["data"] == str(other.resolve())


def test_a_cache_named_only_by_source_json_is_never_created(trained, tmp_path, capsys):
    """Issue 15, point 8: evaluate created the cache a source.json named and downloaded."""
    from dualsparse.cli import main

    run_dir, _, _ = trained
    elsewhere = tmp_path / "elsewhere"
    record = {"data": None, "dataset": "ptb", "cache_dir": str(elsewhere)}
    (run_dir / "source.json").write_text(json.dumps(record))
    assert main(["evaluate", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--cache-dir DIR" in err and err.count("\n") == 1
    assert not elsewhere.exists()


def test_taking_the_lock_removes_temporaries_a_killed_writer_left(tmp_path):
    """Issue 15, point 11: `.latest.json.*.tmp` files left by kills were never cleaned."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    stale = [run_dir / ".metrics.jsonl.x1.tmp", run_dir / "checkpoints" / ".latest.json.ab.tmp"]
    kept = [run_dir / "config.json", run_dir / "checkpoints" / "notes.tmp"]
    for path in stale + kept:
        path.write_text("{}")
    with run_lock(run_dir):
        assert [p.exists() for p in stale] == [False, False]
        assert [p.exists() for p in kept] == [True, True]
