"""The benchmark's table: its contenders (what each row runs), the speedups of every row
(over the fastest dense AWD-LSTM, and over the fastest contender), the headline per thread
count, and the text table ``dualsparse bench`` prints. Pure functions of the result rows,
so tests can feed them rows by hand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(eq=False)  # hashed by identity: a row's key
class Contender:
    """A row of the table: what runs (``runtime`` on ``runs``, with or without the
    first-layer table), built per thread count by ``build(threads)`` into a stepper with
    ``step_rnn``, ``step`` and ``reset``; ``reference`` gives the log-probabilities it must
    reproduce on the benchmark's tokens (None: not checked, the dense PyTorch rows and the
    engine are the references and are tested against the model elsewhere)."""

    name: str
    runtime: str
    runs: str
    input_table: bool
    build: Callable[[int], Any]
    macs: Callable[[Any], tuple[float, float]]
    engine: bool = False  # the engine on the benchmarked model (a headline's numerator)
    reference: Callable[[list[int]], list[np.ndarray]] | None = None


def _with_speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        for part in ("rnn", "full"):
            row[f"speedup_{part}"], row[f"speedup_{part}_theory"] = speedups(row, rows, part)
            fastest = fastest_contender(rows, row["threads"], part, row["input_table"])
            row[f"speedup_{part}_vs_fastest"] = (
                fastest[f"ms_per_token_{part}_median"] / row[f"ms_per_token_{part}_median"]
            )
    return rows


def fastest_contender(
    rows: list[dict[str, Any]], threads: int, part: str, input_table: bool
) -> dict[str, Any]:
    """The fastest row at ``threads`` that is not the engine on the benchmarked model, for
    ``part`` ("rnn" or "full"); a row without the table competes only with rows without it
    (the table is open to every contender, so it is either everybody's or nobody's)."""
    rivals = [
        r
        for r in rows
        if r["threads"] == threads and not r["engine"] and (input_table or not r["input_table"])
    ]
    return min(rivals, key=lambda r: r[f"ms_per_token_{part}_median"])


def headline(rows: list[dict[str, Any]], input_table: bool) -> list[dict[str, Any]]:
    """Per thread count and part: the engine on the model (with the table if the run used
    it) against the fastest of all contenders at that thread count."""
    out = []
    for threads in dict.fromkeys(r["threads"] for r in rows):
        engine = next(
            r
            for r in rows
            if r["threads"] == threads and r["engine"] and r["input_table"] == input_table
        )
        entry: dict[str, Any] = {"threads": threads, "engine": engine["name"]}
        for part in ("rnn", "full"):
            fastest = fastest_contender(rows, threads, part, input_table)
            entry[part] = {
                "engine_ms": engine[f"ms_per_token_{part}_median"],
                "fastest": fastest["name"],
                "fastest_ms": fastest[f"ms_per_token_{part}_median"],
                "speedup": fastest[f"ms_per_token_{part}_median"]
                / engine[f"ms_per_token_{part}_median"],
            }
        out.append(entry)
    return out


def speedups(row: dict[str, Any], rows: list[dict[str, Any]], part: str) -> tuple[float, float]:
    """Realized speedup of ``row`` over the fastest row running the dense AWD-LSTM at the
    same thread count (any runtime; with the table only if ``row`` has it too), and the
    theoretical one: the AWD-LSTM's dense MACs over this row's MACs."""
    bases = [
        r
        for r in rows
        if r["threads"] == row["threads"]
        and r["runs"] == "dense AWD-LSTM"
        and (row["input_table"] or not r["input_table"])
    ]
    fastest = min(r[f"ms_per_token_{part}_median"] for r in bases)
    real = fastest / row[f"ms_per_token_{part}_median"]
    dense = next(r for r in bases if r["name"] == "dense AWD-LSTM")
    theory = dense[f"macs_per_token_{part}"] / max(row[f"macs_per_token_{part}"], 1)
    return real, theory


def _speedup_text(row: dict[str, Any], rows: list[dict[str, Any]], part: str) -> str:
    real, theory = speedups(row, rows, part)
    return f"{real:6.1f}x/{theory:6.1f}x"


def format_bench_table(result: dict[str, Any]) -> str:
    m = result["model"]
    table = f"on, {result['input_table_bytes'] / 2**20:.1f} MiB" if result["input_table"] else "off"
    lines = [
        f"{m['type']} emb {m['emb_size']} hidden {','.join(map(str, m['hidden_sizes']))} "
        f"vocab {m['vocab_size']}, RNN weight sparsity {m['weight_sparsity']:.3f}, "
        "activity " + ", ".join(f"{a:.3f}" for a in m["layer_activity"]),
        f"{result['tokens']} timed tokens per row in {result['rounds']} rounds of alternating "
        f"order, each after {result['warmup']} warm-up; engine's first-layer "
        f"W_ih·E table {table}; engine overhead outside kernels "
        f"{result['overhead_ms_per_token'] * 1e3:.1f} us/token",
        "",
        f"{'':<44} {'thr':>3} {'MMACs':>7} {'RNN ms':>7} {'p90':>6} {'MMACs':>7} "
        f"{'e2e ms':>7} {'p90':>6} {'x fastest':>9} {'x fastest':>9} "
        f"{'vs AWD-LSTM RNN':>15} {'vs AWD-LSTM e2e':>15}",
        f"{'':<44} {'':>3} {'RNN':>7} {'median':>7} {'':>6} {'e2e':>7} {'median':>7} "
        f"{'':>6} {'RNN':>9} {'e2e':>9} {'real / theory':>15} {'real / theory':>15}",
    ]
    rows = result["rows"]
    for row in rows:
        lines.append(
            f"{row['name']:<44} {row['threads']:>3} "
            f"{row['macs_per_token_rnn'] / 1e6:>7.2f} "
            f"{row['ms_per_token_rnn_median']:>7.3f} {row['ms_per_token_rnn_p90']:>6.3f} "
            f"{row['macs_per_token_full'] / 1e6:>7.2f} "
            f"{row['ms_per_token_full_median']:>7.3f} "
            f"{row['ms_per_token_full_p90']:>6.3f} "
            f"{row['speedup_rnn_vs_fastest']:>8.1f}x {row['speedup_full_vs_fastest']:>8.1f}x "
            f"{_speedup_text(row, rows, 'rnn'):>15} {_speedup_text(row, rows, 'full'):>15}"
        )
    sparse = result["sparse_weight_bytes"]
    lines += [
        "",
        "x fastest = the fastest contender at the same threads (every row but the engine on "
        "this model; rows without the table only against rows without it) / this row;",
        "vs AWD-LSTM = the fastest row running the dense AWD-LSTM at the same threads / this "
        "row; theory = dense AWD-LSTM MACs / this row's MACs (event-driven for the engine)",
        f"engine sparse weights: {sparse['values'] / 2**20:.1f} MiB values + "
        f"{sparse['indices'] / 2**20:.1f} MiB indices",
        "",
        "headline: "
        + (
            "the engine with the table against every contender, table or not"
            if result["input_table"]
            else "the engine without the table, every contender without it"
        ),
    ]
    for entry in result["headline"]:
        for part, label in (("rnn", "RNN"), ("full", "end to end")):
            h = entry[part]
            lines.append(
                f"  {entry['threads']} thread(s), {label}: {h['speedup']:.1f}x "
                f"({h['engine_ms']:.3f} ms vs {h['fastest_ms']:.3f} ms, {h['fastest']})"
            )
    for name, check in result["peer_checks"].items():
        if not check["passed"]:
            lines.append(
                f"not timed: {name} computes other log-probabilities than the model "
                f"(max difference {check['max_abs_log_prob_diff']:.2e})"
            )
    lines += [f"skipped: {name}: {why}" for name, why in result["peers_skipped"].items()]
    return "\n".join(lines)
