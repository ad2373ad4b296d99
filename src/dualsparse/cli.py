"""Command line: parse → call the library → print. The only place that turns a
DualsparseError into ``error: …`` on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dualsparse import __version__
from dualsparse.errors import DualsparseError


def _add_data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    g = p.add_argument_group("data (one of)")
    g.add_argument(
        "--data",
        metavar="DIR",
        help="directory with train/valid/test splits (train.txt…, ptb.*.txt, wiki.*.tokens)",
    )
    g.add_argument(
        "--dataset",
        choices=["ptb", "wikitext2"],
        help="download the standard files (md5-verified) into the cache",
    )
    g.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="dataset cache (default $DUALSPARSE_CACHE or ~/.cache/dualsparse)",
    )


def _add_run_split_args(p: argparse.ArgumentParser, run_required: bool = True) -> None:
    """RUN, --split, --batch-size, --bptt, --checkpoint and the data options."""
    p.add_argument("run", metavar="RUN", nargs=None if run_required else "?", help="run directory")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument(
        "--batch-size",
        type=int,
        help="batch size (default: train.test_batch_size for test, "
        "train.eval_batch_size for valid)",
    )
    p.add_argument("--bptt", type=int, default=70, help="window length (state is carried)")
    p.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    _add_data_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dualsparse",
        description="Recurrent language models with sparse activity (EGRU) and sparse weights.",
    )
    parser.add_argument("--version", action="version", version=f"dualsparse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train an EGRU/LSTM/GRU language model",
        description="Train a language model into a run directory, or resume one.",
    )
    p.add_argument("--preset", help="a shipped preset (see `dualsparse presets`)")
    p.add_argument("--config", metavar="FILE", help="a YAML/JSON config with model: and train:")
    _add_data_args(p)
    p.add_argument("--out", metavar="RUN_DIR", help="run directory to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="stop (with a checkpoint) after M minutes of training",
    )
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--device", help="cpu or cuda (override train.device)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=0.002 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "evaluate",
        help="perplexity and per-layer activity of a run",
        description="Evaluate a trained run on a split.",
    )
    _add_run_split_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--progress", action="store_true", help="show a progress bar")

    p = sub.add_parser(
        "activity",
        help="per-layer and per-neuron activity, ĉ − θ (Fig. 4/5)",
        description="Measure the activity of a trained run on a split: per layer, "
        "per neuron (never/always active units) and, for EGRU, the "
        "distribution of ĉ − θ; writes activity.json, activity.npz "
        "and the figures.",
    )
    _add_run_split_args(p)
    p.add_argument("--out", metavar="DIR", help="output directory (default RUN/activity-SPLIT)")
    p.add_argument("--no-plots", action="store_true", help="write only activity.json and .npz")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--progress", action="store_true", help="show a progress bar")

    p = sub.add_parser(
        "demo",
        help="offline demo on a synthetic source with known entropy",
        description="Generate a corpus from a seeded source whose true perplexity "
        "is exact, train a small EGRU and LSTM, compare.",
    )
    p.add_argument("--out", metavar="DIR", default="runs/demo", help="where to put corpus and runs")
    p.add_argument(
        "--minutes-per-model",
        type=float,
        default=None,
        help="training budget per model (default: the demo's own)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "prune",
        help="iterative global magnitude pruning with fine-tuning",
        description="Prune the RNN weights of a trained run to a target sparsity "
        "in K steps (K=1: one-shot), fine-tuning after each step.",
    )
    p.add_argument("run", metavar="RUN", help="trained run directory (its best checkpoint)")
    p.add_argument(
        "--target",
        type=float,
        required=True,
        help="fraction of RNN weights to prune, in [0, 1), e.g. 0.85",
    )
    p.add_argument("--steps", type=int, default=1, help="pruning steps (default 1)")
    p.add_argument("--finetune-epochs", type=int, default=1, help="epochs after each step")
    p.add_argument(
        "--lr",
        type=float,
        help="fine-tuning learning rate (default 0.1x the run's for targets < 0.7, 1x from 0.7 on)",
    )
    p.add_argument("--out", metavar="NEW_RUN", required=True, help="directory of the pruned run")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a fine-tuning config key (repeatable)",
    )
    _add_data_args(p)
    p.add_argument("--json", action="store_true", help="print the pruning record as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "macs",
        help="exact event-driven MACs per token of a run (or dense MACs)",
        description="Count multiply-accumulates per token of a trained run on a "
        "split: dense, weight-sparse, the paper's activity x density "
        "estimate and the exact event-driven count; or the dense MACs "
        "of a described model (--model/--emb/--hidden instead of RUN).",
    )
    _add_run_split_args(p, run_required=False)
    g = p.add_argument_group("a described dense model (instead of RUN)")
    g.add_argument("--model", metavar="TYPE", help="egru, lstm or gru")
    g.add_argument("--emb", metavar="E", help="embedding size, e.g. 400")
    g.add_argument("--hidden", metavar="H1,H2,...", help="hidden sizes, e.g. 1150,1150,400")
    g.add_argument(
        "--vocab", metavar="V", help="vocabulary size: also count projection and decoder"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--progress", action="store_true", help="show a progress bar")

    p = sub.add_parser(
        "export",
        help="write a run as a sparse deployment model for the engine",
        description="Export a trained (possibly pruned) run: weights as compressed "
        "sparse columns in safetensors, a JSON header with shapes and "
        "the vocabulary (docs/engine.md).",
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument(
        "out", metavar="OUT_DIR", help="directory to write model.json and model.safetensors into"
    )
    p.add_argument("--checkpoint", choices=["best", "latest"], default="best")

    p = sub.add_parser(
        "generate",
        help="sample text from an exported model on the engine",
        description="Feed a prompt to the event-driven engine and sample words.",
    )
    p.add_argument("model", metavar="MODEL", help="directory written by `dualsparse export`")
    p.add_argument("--prompt", default="", help="words to start from (default: a new sentence)")
    p.add_argument("--max-tokens", type=int, default=30, help="words to sample (default 30)")
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="softmax temperature; 0 = always the most likely word (default 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "score",
        help="per-token log-probabilities and perplexity on the engine",
        description="Score a text file (one sentence per line, as the corpora) "
        "with the event-driven engine, state carried from the first "
        "word to the last.",
    )
    p.add_argument("model", metavar="MODEL", help="directory written by `dualsparse export`")
    p.add_argument("file", metavar="FILE", help="text file to score")
    p.add_argument(
        "--per-token",
        action="store_true",
        help="also print one line per token: position, word, log-probability",
    )
    p.add_argument(
        "--float64",
        action="store_true",
        help="compute in double precision (a reference; slower; docs/engine.md, exactness)",
    )
    p.add_argument("--json", action="store_true", help="print JSON (with per-token log-probs)")

    p = sub.add_parser(
        "bench",
        help="per-token latency: engine vs the fastest dense path",
        description="Time batch-1 streaming inference of an exported model on the "
        "engine against dense AWD-LSTM and dense models of its size "
        "(fused addmv per step), 1 and 2 threads, with realized "
        "speedups next to the MAC ratios.",
    )
    p.add_argument("model", metavar="MODEL", help="directory written by `dualsparse export`")
    p.add_argument("--tokens", type=int, default=200, help="timed tokens per row (default 200)")
    p.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    p.add_argument(
        "--no-table", action="store_true", help="do not precompute the first layer's W_ih·E table"
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser(
        "presets", help="list the shipped presets", description="List the shipped presets."
    )
    return parser


def cmd_train(args) -> int:
    from dualsparse.config import RunConfig, apply_overrides, resolve_config
    from dualsparse.data.download import resolve_corpus
    from dualsparse.training.loop import check_new_run_dir, train

    if args.resume:
        from dualsparse.training.checkpoint import checkpoint_dir, read_state

        if args.out or args.preset or args.config:
            raise DualsparseError(
                "--resume RUN takes the run's own config; drop --out/--preset/--config"
            )
        run_dir = Path(args.resume)
        latest = checkpoint_dir(run_dir, "latest")
        state = read_state(latest)
        if "config" not in state:
            raise DualsparseError(f"{latest}/state.json has no config; the checkpoint is damaged")
        cfg = RunConfig.from_dict(state["config"], source=f"{run_dir}")
        source = _read_source(run_dir)
    else:
        if not args.out:
            raise DualsparseError("give --out RUN_DIR for the new run (or --resume RUN_DIR)")
        run_dir = Path(args.out)
        cfg = resolve_config(args.preset, args.config, [])
        source = {}
    overrides = list(args.overrides)
    for key, value in (("epochs", args.epochs), ("seed", args.seed), ("device", args.device)):
        if value is not None:
            overrides.append(f"train.{key}={value}")
    cfg = apply_overrides(cfg, overrides)
    data = args.data or (None if args.dataset else source.get("data"))
    dataset = args.dataset or (None if args.data else source.get("dataset"))
    cache_dir = args.cache_dir or source.get("cache_dir")
    vocab = None
    if args.resume:
        from dualsparse.data.corpus import Vocabulary
        from dualsparse.training.checkpoint import checkpoint_dir

        vocab = Vocabulary.load(checkpoint_dir(run_dir, "latest") / "vocab.json")
    corpus = resolve_corpus(data, dataset, cache_dir, vocab=vocab)
    if not args.resume:
        check_new_run_dir(run_dir)  # before source.json, which would clobber the old run's
        _write_source(run_dir, data, dataset, cache_dir)
    summary = train(
        cfg,
        corpus,
        run_dir,
        resume=bool(args.resume),
        max_minutes=args.max_minutes,
        progress=not args.no_progress,
    )
    print(
        f"run {summary.run_dir}: {summary.stopped} after {summary.epochs_done} epoch(s), "
        f"best valid ppl {summary.best_valid_ppl:.2f}, {summary.elapsed_seconds:.0f} s"
    )
    if summary.stopped in ("interrupted", "time-budget"):
        print(f"continue with: dualsparse train --resume {summary.run_dir}")
    return 0


def _write_source(run_dir: Path, data, dataset, cache_dir) -> None:
    from dualsparse.fileio import atomic_write_text

    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "data": str(Path(data).resolve()) if data else None,
        "dataset": dataset,
        "cache_dir": cache_dir,
    }
    atomic_write_text(run_dir / "source.json", json.dumps(record, indent=1))


def _read_source(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def cmd_evaluate(args) -> int:
    from dualsparse.evaluation import evaluate, format_eval_table

    run, data, batch = _run_split(args)
    result = evaluate(run.model, data, batch, args.bptt, split=args.split, progress=args.progress)
    if args.json:
        print(
            json.dumps(
                {
                    "run": str(args.run),
                    "checkpoint": str(run.checkpoint),
                    "model": run.config.model.type,
                    **result.to_dict(),
                },
                indent=1,
            )
        )
    else:
        print(
            format_eval_table(
                result, f"{args.run} ({run.config.model.type}, checkpoint {run.checkpoint.name})"
            )
        )
    return 0


def cmd_activity(args) -> int:
    from dualsparse.sparsity.activity import (
        analyze_activity,
        format_activity_table,
        write_activity_outputs,
    )

    run, data, batch = _run_split(args)
    report = analyze_activity(
        run.model,
        data,
        batch,
        args.bptt,
        progress=args.progress,
        split=args.split,
        config=run.config,
    )
    out_dir = Path(args.out) if args.out else Path(args.run) / f"activity-{args.split}"
    paths = write_activity_outputs(report, out_dir, plots=not args.no_plots)
    if args.json:
        print(
            json.dumps(
                {
                    "run": str(args.run),
                    "checkpoint": str(run.checkpoint),
                    "outputs": {k: str(v) for k, v in paths.items()},
                    **report.to_dict(),
                },
                indent=1,
            )
        )
    else:
        print(format_activity_table(report, f"{args.run} (checkpoint {run.checkpoint.name})"))
        print(f"\nwritten to {out_dir}: {', '.join(sorted(path.name for path in paths.values()))}")
    return 0


def cmd_demo(args) -> int:
    from dualsparse.demo import format_demo, run_demo

    report = run_demo(
        Path(args.out),
        seed=args.seed,
        minutes_per_model=args.minutes_per_model,
        progress=not args.no_progress,
    )
    print(json.dumps(report, indent=1) if args.json else format_demo(report))
    return 0


def _run_corpus(args, run_dir: Path, vocab):
    """The corpus a run was trained on (or the one given), encoded with the run's vocabulary."""
    from dualsparse.data.download import resolve_corpus

    source = _read_source(run_dir)
    data = args.data or (None if args.dataset else source.get("data"))
    dataset = args.dataset or (None if args.data else source.get("dataset"))
    return resolve_corpus(data, dataset, args.cache_dir or source.get("cache_dir"), vocab=vocab)


def cmd_prune(args) -> int:
    from dualsparse.runs import load_run
    from dualsparse.sparsity.prune import check_target, prune_run

    check_target(args.target)
    run = load_run(args.run, "best")
    corpus = _run_corpus(args, Path(args.run), run.vocab)
    record = prune_run(
        args.run,
        args.out,
        corpus,
        target=args.target,
        steps=args.steps,
        finetune_epochs=args.finetune_epochs,
        lr=args.lr,
        overrides=args.overrides,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(record, indent=1))
        return 0
    print(
        f"pruned {args.run} -> {args.out} in {args.steps} step(s), "
        f"fine-tuning lr {record['finetune_lr']:g}"
    )
    print(f"{'step':>4} {'target':>7} {'sparsity':>9} {'valid ppl':>10}")
    for h in record["history"]:
        print(
            f"{h['step']:>4} {h['target']:>7.3f} {h['weight_sparsity']:>9.3f} "
            f"{h['valid_ppl']:>10.2f}"
        )
    print()
    print(f"{'matrix':<22} {'shape':>12} {'nonzero':>9} {'sparsity':>9}")
    for m in record["sparsity"]["matrices"]:
        shape = "x".join(map(str, m["shape"]))
        print(f"{m['name']:<22} {shape:>12} {m['nonzero']:>9,} {m['weight_sparsity']:>9.3f}")
    total = record["sparsity"]
    print(
        f"{'all RNN weights':<22} {'':>12} {total['weights'] - total['zeros']:>9,} "
        f"{total['weight_sparsity']:>9.3f}"
    )
    return 0


def _run_split(args):
    """The run, the token stream of ``--split`` and the batch size (evaluate's defaults)."""
    from dualsparse.runs import load_run

    run = load_run(args.run, args.checkpoint)
    corpus = _run_corpus(args, Path(args.run), run.vocab)
    t = run.config.train
    batch = args.batch_size or (t.test_batch_size if args.split == "test" else t.eval_batch_size)
    if batch <= 0 or args.bptt <= 0:
        raise DualsparseError("--batch-size and --bptt must be positive integers")
    return run, getattr(corpus, args.split), batch


def _positive_ints(text: str, flag: str, *, several: bool = False) -> list[int]:
    """'1150,1150,400' (several) or '400' → the integers; a DualsparseError for anything else."""
    try:
        values = [int(part) for part in (text.split(",") if several else [text])]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        what = (
            "positive integers separated by commas, e.g. 1150,1150,400"
            if several
            else "one positive integer"
        )
        raise DualsparseError(f"{flag} takes {what}; got {text!r}")
    return values


def cmd_macs(args) -> int:
    from dualsparse.sparsity.macs import dense_macs_per_token, format_mac_table, measure_macs

    described = [args.model, args.emb, args.hidden, args.vocab]
    if args.run and any(v is not None for v in described):
        raise DualsparseError(
            "give either RUN (measure a trained run) or --model/--emb/--hidden "
            "(a described dense model), not both"
        )
    if not args.run:
        if args.model is None or args.emb is None or args.hidden is None:
            raise DualsparseError(
                "give RUN to measure a trained run, or --model egru|lstm|gru "
                "--emb E --hidden H1,H2,... for the dense MACs of a model"
            )
        vocab = _positive_ints(args.vocab, "--vocab")[0] if args.vocab is not None else None
        report = dense_macs_per_token(
            args.model,
            _positive_ints(args.emb, "--emb")[0],
            _positive_ints(args.hidden, "--hidden", several=True),
            vocab,
        )
        print(json.dumps(report.to_dict(), indent=1) if args.json else format_mac_table(report))
        return 0
    run, data, batch = _run_split(args)
    report = measure_macs(run.model, data, batch, args.bptt, progress=args.progress)
    if args.json:
        print(
            json.dumps(
                {
                    "run": str(args.run),
                    "checkpoint": str(run.checkpoint),
                    "split": args.split,
                    "batch_size": batch,
                    "bptt": args.bptt,
                    **report.to_dict(),
                },
                indent=1,
            )
        )
    else:
        print(
            format_mac_table(
                report,
                f"{args.run} ({run.config.model.type}, checkpoint "
                f"{run.checkpoint.name}), {args.split} split, "
                f"batch size {batch}",
            )
        )
    return 0


def cmd_export(args) -> int:
    from dualsparse.engine.export import export_run, load_export, weight_sparsity

    out = export_run(args.run, args.out, args.checkpoint)
    model = load_export(out)  # what the engine will read, validated
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(
        f"exported {args.run} ({model.model_type}, emb {model.emb_size}, hidden "
        f"{','.join(map(str, model.hidden_sizes))}, vocab {model.vocab_size}) -> {out}"
    )
    print(f"RNN weight sparsity {weight_sparsity(model):.3f}, {size / 2**20:.2f} MiB on disk")
    return 0


def cmd_generate(args) -> int:
    from dualsparse.engine.runtime import Engine

    if args.max_tokens < 0:
        raise DualsparseError(f"--max-tokens {args.max_tokens} must be >= 0")
    engine = Engine.load(args.model)
    prompt, unknown = engine.encode(args.prompt.split())
    sampled = engine.generate(prompt, args.max_tokens, args.temperature, args.seed)
    words = [engine.itos[i] for i in sampled]
    if args.json:
        print(
            json.dumps(
                {
                    "prompt": args.prompt,
                    "unknown_prompt_words": unknown,
                    "words": words,
                    "seed": args.seed,
                    "temperature": args.temperature,
                },
                indent=1,
            )
        )
    else:
        text = " ".join([*args.prompt.split(), *words, ""])
        print(text.replace(" <eos> ", "\n").replace("<eos> ", "\n").rstrip())
    return 0


def cmd_score(args) -> int:
    import math

    import numpy as np

    from dualsparse.engine.runtime import Engine, encode_text_lines

    engine = Engine.load(args.model, dtype=np.float64 if args.float64 else np.float32)
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DualsparseError(f"cannot read {args.file} ({exc}); give a UTF-8 text file") from None
    words = encode_text_lines(text)
    if len(words) < 2:
        raise DualsparseError(f"{args.file} has fewer than two tokens; nothing to score")
    ids, unknown = engine.encode(words)
    log_probs = engine.score(ids)
    nll = -float(log_probs.mean())
    counts = engine.counts()
    summary = {
        "model": args.model,
        "file": args.file,
        "tokens_scored": len(log_probs),
        "unknown_words": unknown,
        "loss": nll,
        "perplexity": math.exp(nll),
        "layer_activity": counts["layer_activity"],
        "event_macs_per_token": counts["event_macs_per_token"],
    }
    if args.json:
        print(json.dumps({**summary, "log_probs": log_probs.tolist()}, indent=1))
        return 0
    if args.per_token:
        for t, lp in enumerate(log_probs, start=1):
            print(f"{t}\t{words[t]}\t{lp:.6f}")
    print(
        f"{args.file}: {len(log_probs):,} tokens scored ({unknown:,} unknown words as <unk>), "
        f"perplexity {math.exp(nll):.2f}"
    )
    print("activity per layer: " + ", ".join(f"{a:.3f}" for a in counts["layer_activity"]))
    macs = counts["event_macs_per_token"]
    print(
        f"event-driven MACs per token: RNN {macs['rnn'] / 1e6:.4f}M, "
        f"with decoder {macs['full'] / 1e6:.4f}M"
    )
    return 0


def cmd_bench(args) -> int:
    from dualsparse.engine.bench import format_bench_table, run_benchmark
    from dualsparse.engine.export import load_export

    threads = tuple(_positive_ints(args.threads, "--threads", several=True))
    if args.tokens < 10:
        raise DualsparseError(f"--tokens {args.tokens} is too few for a p90; give at least 10")
    model = load_export(args.model)
    result = run_benchmark(
        model, tokens=args.tokens, threads=threads, input_table=not args.no_table
    )
    print(json.dumps(result, indent=1) if args.json else format_bench_table(result))
    return 0


def cmd_presets(args) -> int:
    from dualsparse.config import load_preset, preset_names

    for name in preset_names():
        m = load_preset(name).model
        print(
            f"{name:<16} {m.type:<5} emb {m.emb_size:<5} "
            f"hidden {','.join(map(str, m.hidden_sizes))}"
        )
    return 0


COMMANDS = {
    "prune": cmd_prune,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "demo": cmd_demo,
    "activity": cmd_activity,
    "macs": cmd_macs,
    "presets": cmd_presets,
    "export": cmd_export,
    "generate": cmd_generate,
    "score": cmd_score,
    "bench": cmd_bench,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except DualsparseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
