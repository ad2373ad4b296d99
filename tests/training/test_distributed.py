"""Data-parallel training: real gloo processes, compared with one process on the whole batch.

Dropouts are 0 so that one process and several take exactly the same steps; what
is left is float rounding (sums taken in another order).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from conftest import NO_DROPOUT, error_message, tiny_run_config, write_run_config, write_tiny_corpus
from dualsparse.cli import main
from dualsparse.data.corpus import read_corpus
from dualsparse.models.lm import LanguageModel
from dualsparse.training import checkpoint as ckpt
from dualsparse.training import distributed
from dualsparse.training.loop import train

# AR and TAR on, so that the averaging of the regularisation term is checked too
GRADIENT_MODEL = {**NO_DROPOUT, "ar_alpha": 2.0, "tar_beta": 1.0}
VOCAB, STEPS, BATCH = 23, 9, 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tokens() -> torch.Tensor:
    """A [STEPS + 1, BATCH] token stream: inputs are rows 0..STEPS-1, targets rows 1..STEPS."""
    return torch.randint(0, VOCAB, (STEPS + 1, BATCH), generator=torch.Generator().manual_seed(3))


def window_gradients(model: torch.nn.Module, net: torch.nn.Module, data: torch.Tensor) -> dict:
    """One training window as the Trainer runs it: cross-entropy + AR/TAR, backward."""
    out = net(data[:-1], model.init_state(data.shape[1]))
    loss = F.cross_entropy(out.logits.reshape(-1, VOCAB), data[1:].reshape(-1))
    (loss + out.regularization).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def tiny_model() -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(tiny_run_config(GRADIENT_MODEL).model, VOCAB)


def shard_gradients_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One rank of a torchrun-like job: its column shard through DDP, gradients to a file."""
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    with distributed.process_group("cpu"):
        model = tiny_model()
        net = distributed.wrap(model, torch.device("cpu"))
        assert isinstance(net, torch.nn.parallel.DistributedDataParallel)
        shard = distributed.column_shard(tokens(), rank, world_size)
        grads = window_gradients(model, net, shard)
        del net
    save_file(grads, str(Path(out_dir) / f"rank{rank}.safetensors"))


def test_column_shards_are_the_batch_columns_in_rank_order():
    data = torch.arange(24).view(4, 6)
    shards = [distributed.column_shard(data, rank, 3) for rank in range(3)]
    assert [tuple(s.shape) for s in shards] == [(4, 2)] * 3
    assert torch.equal(torch.cat(shards, dim=1), data)
    hidden = torch.arange(12.0).view(6, 2)  # a carried state [batch, H] splits by rows
    assert torch.equal(distributed.column_shard(hidden, 2, 3, dim=0), hidden[4:])


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    message = error_message(distributed.column_shard, torch.zeros(5, 6), 0, 4)
    assert "train.batch_size 6" in message and "4 processes" in message
    assert "--set train.batch_size=4" in message and "--nproc_per_node" in message


def test_without_torchrun_there_is_no_group_and_no_ddp():
    assert distributed.torchrun_launch() is None
    with distributed.process_group("cpu"):
        assert distributed.rank_and_world() == (0, 1)
        model = tiny_model()
        assert distributed.wrap(model, torch.device("cpu")) is model


def test_ddp_gradients_of_column_shards_are_the_full_batch_gradients(tmp_path):
    world_size = 2
    mp.spawn(
        shard_gradients_worker,
        args=(world_size, free_port(), str(tmp_path)),
        nprocs=world_size,
        join=True,
    )
    model = tiny_model()
    full_batch = window_gradients(model, model, tokens())
    for rank in range(world_size):
        averaged = load_file(tmp_path / f"rank{rank}.safetensors")
        assert averaged.keys() == full_batch.keys()
        for name, grad in full_batch.items():
            assert grad.abs().max() > 0, name  # every parameter takes part
            torch.testing.assert_close(averaged[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def dualsparse_on_two_processes(cwd: Path, *args: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "dualsparse", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def two_process_setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(corpus dir, config file, the same run trained by one process in one go)."""
    corpus_dir = write_tiny_corpus(tmp_path / "tiny")
    config = write_run_config(tmp_path / "tiny.yaml", NO_DROPOUT, threads=1)
    single = tmp_path / "single"
    train(tiny_run_config(NO_DROPOUT), read_corpus(corpus_dir), single, progress=False)
    return corpus_dir, config, single


def assert_same_weights(run_dir: Path, reference: Path) -> None:
    ours = load_file(ckpt.checkpoint_dir(run_dir) / "model.safetensors")
    theirs = load_file(ckpt.checkpoint_dir(reference) / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-5, msg=name)


def metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_torchrun_trains_one_run_that_evaluate_reads(two_process_setup, tmp_path, capsys):
    corpus_dir, config, single = two_process_setup
    run = tmp_path / "run"
    dualsparse_on_two_processes(
        tmp_path, "train", "--config", str(config), "--data", str(corpus_dir), "--out", str(run)
    )
    assert [p.name for p in (run / "checkpoints").iterdir() if p.is_dir()] == [
        "epoch0001-step00000007"
    ]
    assert not (run / ".lock").exists()
    records = metrics(run)
    assert [r["event"] for r in records] == ["epoch"]  # rank 1 wrote no second line
    assert records[0]["valid_loss"] == pytest.approx(metrics(single)[0]["valid_loss"], abs=1e-5)
    assert records[0]["train_loss"] == pytest.approx(metrics(single)[0]["train_loss"], abs=1e-5)
    assert_same_weights(run, single)
    assert main(["evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["tokens"] > 0


def test_torchrun_run_stopped_mid_epoch_resumes_like_one_process(two_process_setup, tmp_path):
    """The carried hidden state of both ranks' columns goes into the checkpoint and back."""
    corpus_dir, config, single = two_process_setup
    run = tmp_path / "run"
    dualsparse_on_two_processes(
        tmp_path,
        *("train", "--config", str(config), "--data", str(corpus_dir), "--out", str(run)),
        *("--max-minutes", "1e-7", "--no-progress"),
    )
    assert [r["event"] for r in metrics(run)] == ["time-budget"]
    saved = load_file(ckpt.checkpoint_dir(run) / "training.safetensors")
    assert saved["hidden.0.0"].shape[0] == 4  # the whole batch, not one rank's half
    dualsparse_on_two_processes(tmp_path, "train", "--resume", str(run), "--no-progress")
    assert [r["event"] for r in metrics(run)] == ["time-budget", "epoch"]
    assert_same_weights(run, single)
