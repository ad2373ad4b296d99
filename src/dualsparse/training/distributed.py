"""Data-parallel training of one model on several processes (torchrun + DDP).

``torchrun --nproc_per_node N -m dualsparse train ...`` starts N copies of the
same command with RANK / WORLD_SIZE / LOCAL_RANK in their environment. Each
copy builds the same model from the same seed, trains on its own 1/N of the
batch columns (the AWD ``[T, batch_size]`` stream is cut by columns, so every
rank walks the same windows and carries the hidden state of its own columns),
and DistributedDataParallel averages the gradients. Because every rank's loss
is a mean over equally many tokens, the averaged gradient is the gradient of
the full batch: N processes take the same optimizer steps as one process with
the whole batch (up to float rounding; see tests/training/test_distributed.py).

Backend: gloo on CPU, nccl on CUDA with rank i on ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from dualsparse.errors import DualsparseError

# set once this process has joined a torchrun job (the CLI's exit reads it)
JOINED_A_JOB = False


@dataclass(frozen=True)
class Launch:
    rank: int
    world_size: int
    local_rank: int


def torchrun_launch() -> Launch | None:
    """The rank of this process when torchrun (or another env:// launcher) started it."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise DualsparseError(
            "WORLD_SIZE / RANK / LOCAL_RANK in the environment are not integers; "
            "launch with torchrun or unset them"
        ) from None
    return Launch(rank, world_size, local_rank)


@contextmanager
def process_group(device: str) -> Iterator[None]:
    """Join the torchrun job for the length of the block (nothing when not launched so).

    A group that already exists (a caller's own setup) is used and left alone.
    """
    launch = torchrun_launch()
    if launch is None or launch.world_size < 2 or dist.is_initialized():
        yield
        return
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DualsparseError("--device cuda was asked for but no CUDA GPU is visible; use cpu")
        torch.cuda.set_device(launch.local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", launch.local_rank))
    else:
        dist.init_process_group("gloo")
    global JOINED_A_JOB
    JOINED_A_JOB = True
    try:
        yield
        dist.barrier()  # leave together: rank 0 may still be writing its last checkpoint
    finally:
        # A DDP module sits in a reference cycle: unless it is collected before the group
        # is destroyed, gloo's threads die at interpreter exit ("terminate called without
        # an active exception", SIGABRT in about one run in five on torch 2.13).
        gc.collect()
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun each rank drives its own GPU: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
    launch = torchrun_launch()
    if device.type == "cuda" and device.index is None and launch and rank_and_world()[1] > 1:
        return torch.device("cuda", launch.local_rank)
    return device


def column_shard(data: torch.Tensor, rank: int, world_size: int, dim: int = 1) -> torch.Tensor:
    """This rank's contiguous block of the batch columns (``dim`` 1 of ``[T, batch_size]``;
    ``dim`` 0 of a carried hidden state ``[batch_size, H]``)."""
    batch_size = data.shape[dim]
    if batch_size % world_size:
        raise DualsparseError(
            f"train.batch_size {batch_size} cannot be split evenly over {world_size} "
            f"processes; use a batch size that is a multiple of {world_size} "
            f"(e.g. --set train.batch_size={world_size * max(1, batch_size // world_size)}) "
            "or a --nproc_per_node that divides it"
        )
    width = batch_size // world_size
    return data.narrow(dim, rank * width, width).contiguous()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around ``model`` when there are several ranks, else ``model`` itself.

    DDP finds the tensors inside the ``LMOutput`` dataclass the model returns, and
    every parameter takes part in every forward, so no unused-parameter search is needed.
    """
    if rank_and_world()[1] < 2:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def sum_over_ranks(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (the values themselves on one rank)."""
    if rank_and_world()[1] < 2:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_rank0(values: Sequence[float], device: torch.device) -> list[float]:
    """Rank 0's ``values`` on every rank, so that all ranks take the same decisions."""
    if rank_and_world()[1] < 2:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def gather_columns(tensor: torch.Tensor) -> torch.Tensor:
    """The ``[B/N, ...]`` shards of all ranks, joined to ``[B, ...]`` in rank order."""
    if rank_and_world()[1] < 2:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)
