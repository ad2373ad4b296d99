"""Training throughput (tokens/s, forward + backward) of the recurrent layers, side by side.

Compares, in one run and on the same inputs: torch.nn.GRU (PyTorch's own fused
kernel), dualsparse's EGRU layer, and dualsparse's GRU/LSTM baseline layers, at
the cpu-small sizes of the presets, and prints ratios against torch.nn.GRU.

    python benchmarks/train_throughput.py [--threads 2] [--batch 32] [--bptt 35]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dualsparse.config import load_preset
from dualsparse.models.baselines import GRULayer, LSTMLayer
from dualsparse.models.egru import EGRULayer


def stack(kind: str, sizes: list[int]) -> torch.nn.ModuleList:
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    if kind == "nn.GRU":
        return torch.nn.ModuleList(torch.nn.GRU(i, h) for i, h in pairs)
    cls = {"EGRU": EGRULayer, "GRU": GRULayer, "LSTM": LSTMLayer}[kind]
    return torch.nn.ModuleList(cls(i, h) for i, h in pairs)


def run_stack(layers, x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        out = layer(x)
        x = out[0]
    return x


def step_seconds(layers, x: torch.Tensor) -> float:
    start = time.perf_counter()
    y = run_stack(layers, x)
    y.square().mean().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="cpu-small-egru")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--bptt", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_preset(args.preset)
    batch = args.batch or cfg.train.batch_size
    bptt = args.bptt or cfg.train.bptt
    sizes = [cfg.model.emb_size, *cfg.model.hidden_sizes]
    torch.manual_seed(0)
    x = torch.randn(bptt, batch, sizes[0], requires_grad=True)
    print(f"sizes {sizes}, batch {batch}, bptt {bptt}, threads {args.threads}")
    kinds = ("nn.GRU", "EGRU", "GRU", "LSTM")
    stacks = {}
    for kind in kinds:
        torch.manual_seed(0)
        stacks[kind] = stack(kind, sizes)
        step_seconds(stacks[kind], x)  # warm-up
    # interleaved repeats: a load that comes and goes hits every kind alike
    times = {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for kind in kinds:
            times[kind].append(step_seconds(stacks[kind], x))
    results = {kind: bptt * batch / statistics.median(t) for kind, t in times.items()}
    base = results["nn.GRU"]
    print(f"{'layers':<8} {'tokens/s':>10} {'vs nn.GRU':>10}")
    for kind, tps in results.items():
        print(f"{kind:<8} {tps:>10,.0f} {tps / base:>9.2f}x")


if __name__ == "__main__":
    main()
