"""``dualsparse demo``: the whole pipeline offline, against a known answer.

A corpus is generated from the seeded synthetic source of
:mod:`dualsparse.data.synthetic`, whose true per-token cross-entropy on the test
text is exact. A small EGRU and a small LSTM are trained on it through the
ordinary reader, trainer and evaluator, and their test perplexity is printed
next to the source's. The gap says how much of the learnable structure a model
found; the EGRU's activity says how sparse it was while doing so.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import torch

from dualsparse.config import ModelConfig, RunConfig, TrainConfig, config_to_json, validate
from dualsparse.data.corpus import read_corpus
from dualsparse.data.synthetic import SourceSpec, write_corpus
from dualsparse.errors import DualsparseError
from dualsparse.evaluation import evaluate
from dualsparse.fileio import atomic_write_text
from dualsparse.runs import load_run
from dualsparse.training import checkpoint as ckpt
from dualsparse.training.guards import has_checkpoint, run_lock
from dualsparse.training.loop import TrainSummary, train

# Corpus sizes in tokens, and the per-model budget that keeps the demo ≤ 5 minutes on 2 cores.
CORPUS_TOKENS = {"train": 150_000, "valid": 15_000, "test": 15_000}
MINUTES_PER_MODEL = 2.0


def demo_config(model_type: str, seed: int, epochs: int = 8) -> RunConfig:
    """The small models of the demo: embedding 64, two layers of 256 and 128 units.

    For the EGRU, thresholds start at 0 (and are trained) and the pseudo-derivative is
    the gentler γ = 0.3, ε = 0.5: on this source, in 8 epochs, that reached a
    validation perplexity of 46 where the paper's γ = 3.6, ε = 1/3.6 with θ ≈ 0.01
    was still above 70 (hidden 256/128 and 128/64, 80k training tokens).
    """
    model = ModelConfig(
        type=model_type,
        emb_size=64,
        hidden_sizes=[256, 128],
        dropout_words=0.0,
        dropout_emb=0.1,
        dropout_forward=0.1,
        dropout_output=0.1,
        dropout_connect=0.1,
        threshold_init_mean=0.0,
        surrogate_dampening=0.3,
        surrogate_width=0.5,
    )
    train_cfg = TrainConfig(
        batch_size=32,
        eval_batch_size=10,
        test_batch_size=10,
        bptt=35,
        epochs=epochs,
        lr=0.004,
        betas=[0.9, 0.999],
        weight_decay=0.01,
        bias_decay=0.0,
        clip=0.5,
        seed=seed,
        log_interval=20,
    )
    cfg = RunConfig(model=model, train=train_cfg)
    validate(cfg)
    return cfg


def run_demo(
    out_dir: Path,
    *,
    seed: int = 0,
    minutes_per_model: float | None = None,
    corpus_tokens: dict[str, int] | None = None,
    epochs: int = 8,
    progress: bool = True,
) -> dict:
    """Generate the corpus, train EGRU and LSTM, evaluate both on test; returns the report."""
    out_dir = Path(out_dir)
    minutes = MINUTES_PER_MODEL if minutes_per_model is None else minutes_per_model
    if minutes <= 0:
        raise DualsparseError("--minutes-per-model must be > 0")
    sizes = corpus_tokens or CORPUS_TOKENS
    with run_lock(out_dir, "demo"):  # a second demo in the same folder at the same time
        return _run_demo_locked(out_dir, seed, minutes, sizes, epochs, progress)


def _run_demo_locked(
    out_dir: Path, seed: int, minutes: float, sizes: dict[str, int], epochs: int, progress: bool
) -> dict:
    corpus_dir = out_dir / "corpus"
    before = _corpus_bytes(corpus_dir)
    spec = SourceSpec(seed=seed)
    truth = write_corpus(corpus_dir, spec, sizes["train"], sizes["valid"], sizes["test"])
    corpus_unchanged = before is not None and before == _corpus_bytes(corpus_dir)
    corpus = read_corpus(corpus_dir)
    report = {
        "corpus": str(corpus_dir),
        "source": {
            k: truth[k]
            for k in ("entropy_rate_perplexity", "unigram_perplexity", "bigram_perplexity")
        },
        "true_test_perplexity": truth["test"]["perplexity"],
        "test_tokens": truth["test"]["tokens"],
        "minutes_per_model": minutes,
        "models": {},
    }
    for model_type in ("egru", "lstm"):
        run_dir = out_dir / f"{model_type}-seed{seed}"
        cfg = demo_config(model_type, seed, epochs)
        start = _earlier_run(run_dir, cfg, corpus_unchanged)
        if start == "reused":
            summary = _finished_summary(run_dir)
        else:
            if start == "started over":
                shutil.rmtree(run_dir)
            resume = start == "continued"
            summary = train(
                cfg, corpus, run_dir, resume=resume, max_minutes=minutes, progress=progress
            )
        run = load_run(run_dir, "best")
        result = evaluate(
            run.model, corpus.test, cfg.train.test_batch_size, cfg.train.bptt, split="test"
        )
        report["models"][model_type] = {
            "run": str(run_dir),
            "test_perplexity": result.perplexity,
            "ratio_to_true": result.perplexity / report["true_test_perplexity"],
            "best_valid_perplexity": summary.best_valid_ppl,
            "epochs": summary.epochs_done,
            "stopped": summary.stopped,
            "train_seconds": summary.elapsed_seconds,
            "start": start,
            "layer_sizes": result.layer_sizes,
            "layer_activity": result.layer_activity,
            "parameters": sum(p.numel() for p in run.model.parameters()),
        }
    report["threads"] = torch.get_num_threads()
    report["model_config"] = {
        t: dataclasses.asdict(demo_config(t, seed, epochs).model) for t in ("egru", "lstm")
    }
    atomic_write_text(out_dir / "demo.json", json.dumps(report, indent=1))
    return report


def _corpus_bytes(corpus_dir: Path) -> dict[str, bytes] | None:
    """The corpus files of an earlier demo (None if there was none)."""
    files = [corpus_dir / f"{split}.txt" for split in ("train", "valid", "test")]
    if not all(f.is_file() for f in files):
        return None
    return {f.name: f.read_bytes() for f in files}


def _earlier_run(run_dir: Path, cfg: RunConfig, corpus_unchanged: bool) -> str:
    """What a demo run again does with a model's earlier run: ``reused`` if it ended
    (its epochs, early stopping or its time budget) with the same settings on the same
    corpus, ``continued`` if it was stopped before that (Ctrl-C, kill), ``started over``
    if the settings or the corpus changed, ``new`` if there is none (or only a start
    killed before its first checkpoint, which ``train`` clears)."""
    if not has_checkpoint(run_dir):
        return "new"
    config = run_dir / "config.json"
    same = config.is_file() and config.read_text(encoding="utf-8") == config_to_json(cfg)
    if not (same and corpus_unchanged):
        return "started over"
    state = ckpt.read_state(ckpt.checkpoint_dir(run_dir, "latest"))
    ended = state.get("finished") or state.get("epoch", 0) >= cfg.train.epochs
    return "reused" if ended or _last_event(run_dir) == "time-budget" else "continued"


def _last_event(run_dir: Path) -> str | None:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    try:
        return json.loads(lines[-1]).get("event") if lines else None
    except ValueError:
        return None


def _finished_summary(run_dir: Path) -> TrainSummary:
    """The summary of a run that ended earlier, from its checkpoint and metrics."""
    state = ckpt.read_state(ckpt.checkpoint_dir(run_dir, "latest"))
    event = _last_event(run_dir)
    stopped = "time-budget" if event == "time-budget" else "completed"
    if state.get("finished") and event != "time-budget":
        stopped = "early-stopping"
    best = state.get("best_valid_loss")
    return TrainSummary(
        str(run_dir),
        state.get("epoch", 0),
        stopped,
        best,
        math.exp(best) if best is not None else float("nan"),
        None,
        state.get("elapsed_seconds", 0.0),
    )


def format_demo(report: dict) -> str:
    src = report["source"]
    lines = [
        f"synthetic corpus in {report['corpus']} ({report['test_tokens']:,} test tokens)",
        f"  true test perplexity (exact, under the source): {report['true_test_perplexity']:.2f}",
        f"  entropy rate of the source:                     {src['entropy_rate_perplexity']:.2f}",
        f"  best bigram model / unigram model:              {src['bigram_perplexity']:.2f} / "
        f"{src['unigram_perplexity']:.2f}",
        "",
        f"{'model':<6} {'test ppl':>9} {'/ true':>7} {'epochs':>7} {'seconds':>8}"
        "  activity per layer",
    ]
    earlier = {
        "reused": "reused the finished run in {} (same settings, same corpus)",
        "continued": "continued the stopped run in {}",
        "started over": "started {} over (its settings or corpus differ from this demo's)",
    }
    said = [
        f"{name}: " + earlier[m["start"]].format(m["run"])
        for name, m in report["models"].items()
        if m.get("start") in earlier
    ]
    lines[:0] = [*said, ""] if said else []
    for name, m in report["models"].items():
        activity = "  ".join(f"{a:.3f}" for a in m["layer_activity"])
        lines.append(
            f"{name:<6} {m['test_perplexity']:>9.2f} {m['ratio_to_true']:>7.3f} "
            f"{m['epochs']:>7} {m['train_seconds']:>8.0f}  {activity}"
        )
    lines.append("")
    lines.append("activity = fraction of nonzero layer outputs (EGRU events; LSTM is dense).")
    return "\n".join(lines)
