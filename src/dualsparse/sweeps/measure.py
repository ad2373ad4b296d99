"""Measure one finished run for a sweep: validation and test perplexity, exact event
MACs, activity (Fig. 4/5 data), weight sparsity → one results JSON.

The sweep runs it as a step of its own (``steps.MeasureStep``) after the run's
training or pruning.
"""

from __future__ import annotations

import time
from pathlib import Path


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
    from dualsparse.evaluation import DEFAULT_BPTT, evaluate
    from dualsparse.runs import load_run
    from dualsparse.sparsity.activity import analyze_activity, write_activity_outputs
    from dualsparse.sparsity.macs import measure_macs
    from dualsparse.sparsity.masks import sparsity_report

    run_dir = Path(run_dir)
    run = load_run(run_dir, "best")
    corpus = resolve_corpus(data, dataset, cache_dir, vocab=run.vocab)
    model, cfg = run.model, run.config
    started = time.time()
    valid = evaluate(model, corpus.valid, cfg.train.eval_batch_size, DEFAULT_BPTT, split="valid")
    test = evaluate(model, corpus.test, test_batch_size, DEFAULT_BPTT, split="test")
    macs = measure_macs(model, corpus.test, macs_batch_size, DEFAULT_BPTT)
    activity = analyze_activity(
        model, corpus.valid, activity_batch_size, DEFAULT_BPTT, split="valid", config=cfg
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
