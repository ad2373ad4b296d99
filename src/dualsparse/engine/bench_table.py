"""The benchmark's table: its contenders (what each row runs), the speedups of every row
(over the fastest contender; over the fastest dense model of the benchmarked size and type,
beside the MAC ratio of those two models; over the fastest dense paper-size AWD-LSTM,
measured only), the headline per thread count, and the text table ``dualsparse bench``
prints. Pure functions of the result rows,
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


# a row's ``runs``: the model it runs, as bench._dense_contenders names the dense ones
AWD_LSTM_RUNS = "dense AWD-LSTM"  # the paper-size AWD-LSTM (emb 400, hidden 1150,1150,400)


def same_size_runs(model_type: str) -> str:
    """``runs`` of the rows running the dense model of the benchmarked model's size and type."""
    return f"dense {model_type.upper()} (model size)"


def _with_speedups(rows: list[dict[str, Any]], model_type: str) -> list[dict[str, Any]]:
    """Each row's speedups (``versus``): over the fastest contender at its thread count, over
    the fastest dense model of the benchmarked size and type with the MAC ratio of those two
    models (None for the rows running the AWD-LSTM, a model of another size), and over the
    fastest dense AWD-LSTM (measured only)."""
    for row in rows:
        for part in ("rnn", "full"):
            fastest = fastest_contender(rows, row["threads"], part, row["input_table"])
            row[f"speedup_{part}_vs_fastest"] = (
                fastest[f"ms_per_token_{part}_median"] / row[f"ms_per_token_{part}_median"]
            )
            same = None if row["runs"] == AWD_LSTM_RUNS else same_size_runs(model_type)
            speedup, mac_ratio = versus(rows, row, same, part) if same else (None, None)
            row[f"speedup_{part}_vs_same_size"] = speedup
            row[f"mac_ratio_{part}_vs_same_size"] = mac_ratio
            row[f"speedup_{part}_vs_awd_lstm"] = versus(rows, row, AWD_LSTM_RUNS, part)[0]
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


def fastest_running(
    rows: list[dict[str, Any]], row: dict[str, Any], runs: str, part: str
) -> dict[str, Any] | None:
    """The fastest row at ``row``'s thread count that runs ``runs`` (any runtime, the engine
    on the benchmarked model excepted), for ``part`` ("rnn" or "full"); a row without the
    first-layer table meets only rows without it. None if no row runs ``runs``."""
    rivals = [
        r
        for r in rows
        if r["threads"] == row["threads"]
        and r["runs"] == runs
        and not r["engine"]
        and (row["input_table"] or not r["input_table"])
    ]
    return min(rivals, key=lambda r: r[f"ms_per_token_{part}_median"]) if rivals else None


def versus(
    rows: list[dict[str, Any]], row: dict[str, Any], runs: str, part: str
) -> tuple[float | None, float | None]:
    """``row`` against ``fastest_running``: the speedup, and the MAC ratio of the same two
    rows (that row's MACs over this row's, event-driven for the engine). (None, None) if no
    row runs ``runs``. The ratio means something only between models of one size: a smaller
    model's weights stay in cache, so across sizes time does not follow MACs."""
    fastest = fastest_running(rows, row, runs, part)
    if fastest is None:
        return None, None
    ms, macs = f"ms_per_token_{part}_median", f"macs_per_token_{part}"
    return fastest[ms] / row[ms], fastest[macs] / max(row[macs], 1)


def _times(value: float | None, width: int) -> str:
    return f"{value:>{width - 1}.1f}x" if value is not None else f"{'-':>{width}}"


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
        f"{'e2e ms':>7} {'p90':>6} {'x fastest':>9} {'x fastest':>9}  "
        f"{'x dense, same size+type':^31}  {'x AWD-LSTM (larger)':^19}",
        f"{'':<44} {'':>3} {'RNN':>7} {'median':>7} {'':>6} {'e2e':>7} {'median':>7} "
        f"{'':>6} {'RNN':>9} {'e2e':>9}  {'RNN':>7} {'MACs':>7} {'e2e':>7} {'MACs':>7}  "
        f"{'RNN':>9} {'e2e':>9}",
    ]
    for row in result["rows"]:
        lines.append(
            f"{row['name']:<44} {row['threads']:>3} "
            f"{row['macs_per_token_rnn'] / 1e6:>7.2f} "
            f"{row['ms_per_token_rnn_median']:>7.3f} {row['ms_per_token_rnn_p90']:>6.3f} "
            f"{row['macs_per_token_full'] / 1e6:>7.2f} "
            f"{row['ms_per_token_full_median']:>7.3f} "
            f"{row['ms_per_token_full_p90']:>6.3f} "
            f"{_times(row['speedup_rnn_vs_fastest'], 9)} "
            f"{_times(row['speedup_full_vs_fastest'], 9)}  "
            + " ".join(
                _times(row[f"{key}_{part}_vs_same_size"], 7)
                for part in ("rnn", "full")
                for key in ("speedup", "mac_ratio")
            )
            + "  "
            + " ".join(_times(row[f"speedup_{part}_vs_awd_lstm"], 9) for part in ("rnn", "full"))
        )
    sparse = result["sparse_weight_bytes"]
    lines += [
        "",
        "x fastest = the fastest contender at the same threads (every row but the engine on "
        "this model; rows without the table only against rows without it) / this row;",
        f"x dense, same size+type = the fastest row running the {same_size_runs(m['type'])} "
        "at the same threads / this row, MACs = its MACs / this row's MACs (event-driven for "
        "the engine); - for the rows running the AWD-LSTM;",
        "x AWD-LSTM (larger) = the fastest row running the dense paper-size AWD-LSTM (emb "
        "400, hidden 1150,1150,400), a different, larger model: measured speedup only, as "
        "across model sizes time does not follow MACs (a small model stays in cache)",
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
