"""Commands of the event-driven inference engine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dualsparse.cli.common import positive_ints
from dualsparse.errors import DualsparseError


def register(sub) -> None:
    """Add this module's subcommands (parsers) to ``sub``; HANDLERS maps them to functions."""
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
    p.add_argument(
        "--compare",
        metavar="RUN",
        help="also run the PyTorch model of RUN (float64 and float32) and report the "
        "per-token agreement",
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
    p.add_argument(
        "--peers",
        default="all",
        help="peer runtimes to time beside the engine: all (every installed one, the default), "
        "none, or a comma list of 'ONNX Runtime', 'OpenVINO', 'torch CSR'",
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_export(args) -> int:
    from dualsparse.engine.export import export_run, load_export, weight_sparsity

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise DualsparseError(
            f"{args.out} is a file; export writes a directory (model.json, model.safetensors): "
            "give a new or existing directory as OUT_DIR"
        )
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
    from dualsparse.engine.score import write_score_file

    # streamed: a line of the text at a time, the report written as it goes
    write_score_file(
        args.model,
        args.file,
        sys.stdout,
        float64=args.float64,
        compare_with=args.compare,
        as_json=args.json,
        per_token=args.per_token,
    )
    return 0


def cmd_bench(args) -> int:
    from dualsparse.engine.bench import peer_selection, run_benchmark
    from dualsparse.engine.bench_table import format_bench_table
    from dualsparse.engine.export import load_export

    threads = tuple(positive_ints(args.threads, "--threads", several=True))
    if args.tokens < 10:
        raise DualsparseError(f"--tokens {args.tokens} is too few for a p90; give at least 10")
    model = load_export(args.model)
    result = run_benchmark(
        model,
        tokens=args.tokens,
        threads=threads,
        input_table=not args.no_table,
        peers=peer_selection(args.peers),
    )
    print(json.dumps(result, indent=1) if args.json else format_bench_table(result))
    return 0


HANDLERS = {"export": cmd_export, "generate": cmd_generate, "score": cmd_score, "bench": cmd_bench}
