"""Per-token latency at batch 1: the event-driven engine against its contenders, in one run.

Runs ``dualsparse.engine.bench.run_benchmark`` on an exported model, or on a random
model of the paper's EGRU size (emb 750, hidden 1350,1350,750, vocabulary 10,000)
pruned to ``--sparsity`` at random positions, with per-layer thresholds calibrated
to ``--activity`` (the paper's trained models show 10-25%):

    python benchmarks/inference_latency.py                       # paper-size EGRU, 85%, 15%
    python benchmarks/inference_latency.py --sparsity 0.9 --activity 0.1
    python benchmarks/inference_latency.py --model EXPORT_DIR    # a real exported model

Contenders: dense PyTorch steppers (with and without the first-layer table), and the peer
runtimes that are installed (``pip install 'dualsparse[peers]'``: ONNX Runtime, OpenVINO;
torch sparse CSR always), each checked against the model's log-probabilities before it is
timed. Prints median and p90 ms/token (1 and 2 threads), the headline (the engine over the
fastest contender per thread count) and speedups next to the MAC ratios; ``--json`` for
scripts (one row per contender and thread count: ``name``, ``threads``,
``ms_per_token_rnn_median``, ``ms_per_token_full_median``, ...). The machine should be
otherwise idle.
"""

from __future__ import annotations

import argparse
import json

from dualsparse.engine.bench import (
    calibrate_thresholds,
    peer_selection,
    run_benchmark,
    synthetic_model,
)
from dualsparse.engine.bench_table import format_bench_table
from dualsparse.engine.export import load_export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an export directory (default: a paper-size random EGRU)")
    parser.add_argument(
        "--sparsity", type=float, default=0.85, help="random model: pruned fraction"
    )
    parser.add_argument(
        "--activity", type=float, default=0.15, help="random model: target activity"
    )
    parser.add_argument("--tokens", type=int, default=200, help="timed tokens per row")
    parser.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    parser.add_argument("--no-table", action="store_true", help="no first-layer W_ih·E table")
    parser.add_argument(
        "--peers",
        default="all",
        help="peer runtimes to run: all (every installed one), none, or a comma list of "
        "'ONNX Runtime', 'OpenVINO', 'torch CSR'",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.model:
        model = load_export(args.model)
    else:
        model = synthetic_model("egru", 750, [1350, 1350, 750], 10_000, args.sparsity)
        calibrate_thresholds(model, args.activity)
    threads = tuple(int(t) for t in args.threads.split(","))
    peers = peer_selection(args.peers)
    result = run_benchmark(
        model, tokens=args.tokens, threads=threads, input_table=not args.no_table, peers=peers
    )
    print(json.dumps(result, indent=1) if args.json else format_bench_table(result))


if __name__ == "__main__":
    main()
