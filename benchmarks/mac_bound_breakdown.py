"""What the engine's distance to the MAC bound is made of, at batch 1, in one run.

The MAC bound is the speedup the MAC count promises: dense MACs per token of the AWD-LSTM
over the engine's event-driven MACs per token (21.5x at the paper's EGRU size, 85% pruned,
15% active). The engine reaches it only if it spends per MAC what the dense stepper spends
per dense MAC. Its RNN time per token is split by two extra models of the same type and
depth, timed in the same rounds as the model itself (interleaved, order alternating):

- a *silent* model, the same model with every EGRU threshold at +inf: no unit ever fires,
  so the kernels do everything but the products (table row, cells, active lists) and
  Python does the same dispatch. Its time is the per-token *fixed cost*;
- a model *one unit wide*: Python dispatch and kernel entry alone (part of the fixed cost).

What the model takes beyond the silent one, over the nonzeros its scatters read beyond the
silent one's, is the time per nonzero MAC (the first-layer table's MACs are counted by the
engine but never done, so they are not among them). The decoder's share is what the
engine's end-to-end step takes beyond its RNN step. The dense stepper
(``engine.dense_baselines``, fused addmv, no table) gives the time per dense MAC.

    python benchmarks/mac_bound_breakdown.py                 # paper-size EGRU, 85%, 15%
    python benchmarks/mac_bound_breakdown.py --threads 1 --json

The machine should be otherwise idle: an L3 cache shared with another process moves the
engine's weights (21 MB at the paper's size) out to memory, and the dense stepper's
(80 MB) are there anyway.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import numpy as np

from dualsparse.architecture import Architecture
from dualsparse.engine.bench import (
    calibrate_thresholds,
    model_summary,
    set_threads,
    synthetic_model,
    time_per_token,
)
from dualsparse.engine.dense_baselines import AWD_LSTM, DenseStepper
from dualsparse.engine.format import ExportedModel
from dualsparse.engine.kernels import MACS_INPUT
from dualsparse.engine.runtime import Engine


def silent_copy(model: ExportedModel) -> ExportedModel:
    """The model with every EGRU threshold at +inf (no unit fires, ĉ > θ never holds)."""
    dense = {
        name: np.full_like(value, np.inf) if name.endswith(".threshold") else value
        for name, value in model.dense.items()
    }
    return dataclasses.replace(model, dense=dense)


def _nonzeros_read(engine: Engine) -> float:
    """Stored nonzeros the RNN kernels read per token: the event MACs minus the first-layer
    table's, which are counted but looked up."""
    counts = engine.counts()
    table = int(engine.table_counts[MACS_INPUT]) if engine.table is not None else 0
    return counts["event_macs_per_token"]["rnn"] - table / max(counts["tokens"], 1)


def measure(
    model: ExportedModel,
    *,
    threads: tuple[int, ...] = (1, 2),
    tokens: int = 200,
    warmup: int = 20,
    rounds: int = 4,
    input_table: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Per thread count: ms per token (medians over all rounds) of the model, its silent
    copy and the one-unit-wide model (RNN only; the model end to end too) and of the dense
    AWD-LSTM stepper; then the breakdown (``breakdown``)."""
    import torch

    engine = Engine(model, input_table=input_table)
    silent = Engine(silent_copy(model), input_table=input_table)
    tiny = Engine(synthetic_model(model.model_type, 1, [1] * len(model.hidden_sizes), 2, 0.0))
    dense = DenseStepper(*AWD_LSTM, model.vocab_size, seed)
    stream = engine.generate([], tokens + warmup, 1.0, seed)
    tiny_stream = [t % 2 for t in stream]
    timed = {
        "engine_rnn": (engine, "step_rnn", stream),
        "engine_full": (engine, "step", stream),
        "silent_rnn": (silent, "step_rnn", stream),
        "dispatch_rnn": (tiny, "step_rnn", tiny_stream),
        "dense_rnn": (dense, "step_rnn", stream),
    }
    previous = torch.get_num_threads()
    result: dict[str, Any] = {}
    try:
        for n in threads:
            set_threads(n)
            for runner in (engine, silent, tiny):
                runner.set_threads(n)
            samples: dict[str, list[np.ndarray]] = {name: [] for name in timed}
            for round_index in range(rounds):
                # alternate the order, so drifting load from other processes falls on all
                order = list(timed.items()) if round_index % 2 == 0 else list(timed.items())[::-1]
                for name, (runner, method, tokens_) in order:
                    runner.reset()
                    with torch.no_grad():
                        samples[name].append(
                            time_per_token(getattr(runner, method), tokens_, warmup)
                        )
            ms = {name: float(np.median(np.concatenate(s))) for name, s in samples.items()}
            engine.reset()
            silent.reset()
            for token in stream:  # the nonzeros each reads over the same tokens
                engine.step_rnn(token)
                silent.step_rnn(token)
            result[str(n)] = breakdown(
                ms,
                event_macs=engine.counts()["event_macs_per_token"]["rnn"],
                nonzeros=_nonzeros_read(engine),
                silent_nonzeros=_nonzeros_read(silent),
                dense_macs=Architecture(*AWD_LSTM, model.vocab_size).dense_macs_per_token("rnn"),
            )
    finally:
        torch.set_num_threads(previous)
    engine.reset()
    for token in stream:
        engine.step_rnn(token)
    return {
        "model": model_summary(model, engine),
        "input_table": input_table,
        "tokens": tokens,
        "warmup": warmup,
        "rounds": rounds,
        "threads": result,
    }


def breakdown(
    ms: dict[str, float],
    *,
    event_macs: float,
    nonzeros: float,
    silent_nonzeros: float,
    dense_macs: float,
) -> dict[str, Any]:
    """The engine's RNN time against the MAC bound, in parts that add up to it.

    With d the dense stepper's ns per MAC and n the engine's ns per nonzero read, the bound
    is event_macs · d and the engine's RNN time is nonzeros · n + fixed; so
    engine − bound = fixed + nonzeros · (n − d) − (event_macs − nonzeros) · d, the last term
    being the MACs the engine never does (the first-layer table's), a credit."""
    ns_dense = ms["dense_rnn"] * 1e6 / dense_macs
    extra = nonzeros - silent_nonzeros
    ns_nonzero = (ms["engine_rnn"] - ms["silent_rnn"]) * 1e6 / extra if extra > 0 else float("nan")
    fixed = ms["engine_rnn"] - nonzeros * ns_nonzero * 1e-6
    bound = event_macs * ns_dense * 1e-6
    parts = {
        "fixed_ms": fixed,
        "excess_per_nonzero_ms": nonzeros * (ns_nonzero - ns_dense) * 1e-6,
        "macs_not_done_ms": -(event_macs - nonzeros) * ns_dense * 1e-6,
    }
    return {
        "ms_per_token": ms,
        "mac_bound": dense_macs / event_macs,
        "speedup_rnn": ms["dense_rnn"] / ms["engine_rnn"],
        "fraction_of_bound": bound / ms["engine_rnn"],
        "fraction_of_bound_without_fixed": bound / (ms["engine_rnn"] - fixed),
        "bound_ms": bound,
        "ns_per_dense_mac": ns_dense,
        "ns_per_nonzero": ns_nonzero,
        "nonzero_over_dense_mac": ns_nonzero / ns_dense,
        "event_macs_per_token": event_macs,
        "nonzeros_read_per_token": nonzeros,
        "fixed_ms": fixed,
        "dispatch_ms": ms["dispatch_rnn"],
        "cells_and_rest_ms": fixed - ms["dispatch_rnn"],
        "decoder_ms": ms["engine_full"] - ms["engine_rnn"],
        "decoder_share_end_to_end": 1.0 - ms["engine_rnn"] / ms["engine_full"],
        "distance_parts": parts,
    }


def format_breakdown(result: dict[str, Any]) -> str:
    m = result["model"]
    activity = ", ".join(f"{a:.3f}" for a in m["layer_activity"])
    lines = [
        f"{m['type']} emb {m['emb_size']} hidden {','.join(map(str, m['hidden_sizes']))} "
        f"vocab {m['vocab_size']}, weight sparsity {m['weight_sparsity']:.3f}, "
        f"activity {activity}; table {'on' if result['input_table'] else 'off'}; "
        f"{result['rounds']} interleaved rounds of {result['tokens']} tokens"
    ]
    for threads, b in result["threads"].items():
        ms, parts = b["ms_per_token"], b["distance_parts"]
        lines += [
            "",
            f"{threads} thread(s): engine RNN {ms['engine_rnn']:.3f} ms, dense AWD-LSTM "
            f"{ms['dense_rnn']:.3f} ms: speedup {b['speedup_rnn']:.1f}x of a {b['mac_bound']:.1f}x "
            f"MAC bound = {b['fraction_of_bound']:.0%} of it "
            f"({b['fraction_of_bound_without_fixed']:.0%} without the fixed cost)",
            f"  per MAC: {b['ns_per_nonzero']:.3f} ns per nonzero read "
            f"({b['nonzeros_read_per_token'] / 1e3:.0f}k per token) vs "
            f"{b['ns_per_dense_mac']:.3f} ns per dense MAC: {b['nonzero_over_dense_mac']:.2f}x",
            f"  fixed per token: {b['fixed_ms'] * 1e3:.1f} us = dispatch "
            f"{b['dispatch_ms'] * 1e3:.1f} us + cells, table row, lists "
            f"{b['cells_and_rest_ms'] * 1e3:.1f} us "
            f"({b['fixed_ms'] / ms['engine_rnn']:.0%} of RNN)",
            f"  decoder: {b['decoder_ms'] * 1e3:.1f} us, {b['decoder_share_end_to_end']:.0%} of "
            f"end to end ({ms['engine_full']:.3f} ms)",
            f"  engine RNN {ms['engine_rnn'] * 1e3:.1f} us = bound {b['bound_ms'] * 1e3:.1f} "
            f"+ fixed {parts['fixed_ms'] * 1e3:.1f} + excess per nonzero "
            f"{parts['excess_per_nonzero_ms'] * 1e3:.1f} + table MACs not done "
            f"{parts['macs_not_done_ms'] * 1e3:.1f}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.85, help="pruned fraction")
    parser.add_argument("--activity", type=float, default=0.15, help="target activity")
    parser.add_argument("--emb", type=int, default=750)
    parser.add_argument("--hidden", default="1350,1350,750")
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--tokens", type=int, default=200, help="timed tokens per round")
    parser.add_argument("--warmup", type=int, default=20, help="untimed tokens per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    parser.add_argument("--no-table", action="store_true", help="no first-layer W_ih·E table")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    hidden = [int(h) for h in args.hidden.split(",")]
    model = synthetic_model("egru", args.emb, hidden, args.vocab, args.sparsity)
    calibrate_thresholds(model, args.activity)
    result = measure(
        model,
        threads=tuple(int(t) for t in args.threads.split(",")),
        tokens=args.tokens,
        warmup=args.warmup,
        rounds=args.rounds,
        input_table=not args.no_table,
    )
    print(json.dumps(result, indent=1) if args.json else format_breakdown(result))


if __name__ == "__main__":
    main()
