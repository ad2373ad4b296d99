"""Measure one finished run for a sweep: validation and test perplexity, exact event
MACs, activity (Fig. 4/5 data), weight sparsity → one results JSON.

Run as ``python -m dualsparse.sweeps.measure RUN --out FILE.json [--data …]`` (the
sweep's executors start it as a subprocess after the run's training or pruning).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dualsparse.errors import DualsparseError

BPTT = 70


def measure_run(
    run_dir: str | Path,
    data: str | None,
    dataset: str | None,
    cache_dir: str | None = None,
    *,
    test_batch_size: int = 1,
    macs_batch_size: int = 1,
    activity_batch_size: int = 10,
    meta: dict | None = None,
) -> dict:
    """The results record of a run (its best checkpoint) on its corpus, read with the run's
    vocabulary."""
    from dualsparse.data.download import resolve_corpus
    from dualsparse.evaluation import evaluate
    from dualsparse.runs import load_run
    from dualsparse.sparsity.activity import analyze_activity, write_activity_outputs
    from dualsparse.sparsity.macs import measure_macs
    from dualsparse.sparsity.masks import sparsity_report

    run_dir = Path(run_dir)
    run = load_run(run_dir, "best")
    corpus = resolve_corpus(data, dataset, cache_dir, vocab=run.vocab)
    model, cfg = run.model, run.config
    started = time.time()
    valid = evaluate(model, corpus.valid, cfg.train.eval_batch_size, BPTT, split="valid")
    test = evaluate(model, corpus.test, test_batch_size, BPTT, split="test")
    macs = measure_macs(model, corpus.test, macs_batch_size, BPTT)
    activity = analyze_activity(
        model, corpus.valid, activity_batch_size, BPTT, split="valid", config=cfg
    )
    write_activity_outputs(activity, run_dir / "activity-valid", plots=False)
    weights = sparsity_report(model, model.rnn_weight_names())
    return {
        **(meta or {}),
        "run": str(run_dir),
        "model": cfg.model.type,
        "emb_size": cfg.model.emb_size,
        "hidden_sizes": list(cfg.model.hidden_sizes),
        "weight_decay": cfg.train.weight_decay,
        "bias_decay": cfg.train.bias_decay,
        "weight_sparsity": weights["weight_sparsity"],
        "epochs": run.state.get("epoch"),
        "valid": valid.to_dict(),
        "test": test.to_dict(),
        "macs": {
            "tokens": macs.tokens,
            "batch_size": macs_batch_size,
            "rnn": macs.totals("rnn"),
            "full": macs.totals("full"),
        },
        "activity": {
            "split": "valid",
            "overall": activity.overall_activity,
            "layers": [layer.activity for layer in activity.layers],
            "dead_units": [layer.dead_units for layer in activity.layers],
            "file": str(run_dir / "activity-valid" / "activity.json"),
        },
        "measure_seconds": time.time() - started,
    }


def main(argv: list[str] | None = None) -> int:
    from dualsparse.fileio import atomic_write_text

    p = argparse.ArgumentParser(prog="python -m dualsparse.sweeps.measure")
    p.add_argument("run")
    p.add_argument("--out", required=True)
    p.add_argument("--data")
    p.add_argument("--dataset")
    p.add_argument("--cache-dir")
    p.add_argument("--meta", default="{}", help="JSON object merged into the record")
    p.add_argument("--test-batch-size", type=int, default=1)
    p.add_argument("--macs-batch-size", type=int, default=1)
    p.add_argument("--activity-batch-size", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        record = measure_run(
            args.run,
            args.data,
            args.dataset,
            args.cache_dir,
            test_batch_size=args.test_batch_size,
            macs_batch_size=args.macs_batch_size,
            activity_batch_size=args.activity_batch_size,
            meta=json.loads(args.meta),
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), json.dumps(record, indent=1))
    except DualsparseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
