"""Per-token latency at batch 1: the engine against the fastest dense path, in one run.

The dense baselines (``engine.dense_baselines``: one fused ``torch.addmv`` per gate block
per step, random weights) are the AWD-LSTM (emb 400, hidden 1150,1150,400) and an EGRU/GRU
of the engine model's own size. The engine runs the exported model at its own weight
sparsity on a token stream it samples itself, so activity is the model's real activity.

Speedups are printed next to the theoretical ones (dense MACs over the
engine's measured event-driven MACs), RNN-only (the paper's convention) and
end-to-end with projection and decoder. PyTorch is needed here, for the dense
baselines only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dualsparse.architecture import Architecture
from dualsparse.engine import jit
from dualsparse.engine.dense_baselines import AWD_LSTM, DenseStepper
from dualsparse.engine.format import (
    CSCMatrix,
    ExportedModel,
    csc_from_dense,
    weight_sparsity,
)
from dualsparse.engine.runtime import Engine


def synthetic_model(
    model_type: str,
    emb_size: int,
    hidden_sizes: list[int],
    vocab_size: int,
    weight_sparsity: float,
    seed: int = 0,
    threshold: float = 0.1,
) -> ExportedModel:
    """A random model in the export format, each matrix pruned to ``weight_sparsity`` at
    random positions (what global magnitude pruning does to i.i.d. weights)."""
    rng = np.random.default_rng(seed)
    arch = Architecture(model_type, emb_size, hidden_sizes, vocab_size)
    matrices: dict[str, CSCMatrix] = {}
    for product in arch.sparse_products():
        rows, cols = product.rows, product.cols
        bound = cols**-0.5
        weight = rng.uniform(-bound, bound, size=(rows, cols)).astype(np.float32)
        weight[rng.random((rows, cols)) < weight_sparsity] = 0.0
        matrices[product.name] = csc_from_dense(weight)
    dense = {}
    for name, (_, shape) in arch.dense_tensors().items():
        if name.endswith("threshold"):
            dense[name] = np.full(shape, threshold, dtype=np.float32)
        else:
            bound = 0.1 if name == "embedding" else shape[0] ** -0.5
            dense[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    itos = ["<eos>", "<unk>", *(f"w{i}" for i in range(vocab_size - 2))]
    return ExportedModel(
        model_type,
        emb_size,
        list(hidden_sizes),
        vocab_size,
        True,
        arch.projection,
        itos,
        matrices,
        dense,
        {"source": {"synthetic": True}},
    )


def calibrate_thresholds(
    model: ExportedModel, target_activity: float, tokens: int = 60, seed: int = 0
) -> list[float]:
    """Per-layer EGRU thresholds (one value per layer, set in ``model``) that bring a random
    model's activity near ``target_activity``: a multiplicative search, a few rounds."""
    rng = np.random.default_rng(seed)
    stream = rng.integers(0, model.vocab_size, size=tokens)
    for _ in range(8):
        engine = Engine(model)
        for token in stream:
            engine.step_rnn(int(token))
        activity = engine.counts()["layer_activity"]
        for layer, measured in enumerate(activity):
            theta = model.dense[f"layer{layer}.threshold"]
            theta *= float(np.clip((max(measured, 1e-3) / target_activity) ** 0.7, 0.5, 2.0))
    return [float(model.dense[f"layer{i}.threshold"][0]) for i in range(len(model.hidden_sizes))]


def _time_per_token(step, tokens: list[int], warmup: int) -> np.ndarray:
    for token in tokens[:warmup]:
        step(token)
    times = np.empty(len(tokens) - warmup)
    clock = time.perf_counter
    for k, token in enumerate(tokens[warmup:]):
        start = clock()
        step(token)
        times[k] = clock() - start
    return times * 1e3


@dataclass
class BenchRow:
    name: str
    threads: int
    macs_rnn: float  # per token: dense MACs, or the engine's measured event MACs
    macs_full: float
    ms_rnn: np.ndarray = field(repr=False)
    ms_full: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "threads": self.threads,
            "macs_per_token_rnn": self.macs_rnn,
            "macs_per_token_full": self.macs_full,
            "ms_per_token_rnn_median": float(np.median(self.ms_rnn)),
            "ms_per_token_rnn_p90": float(np.percentile(self.ms_rnn, 90)),
            "ms_per_token_full_median": float(np.median(self.ms_full)),
            "ms_per_token_full_p90": float(np.percentile(self.ms_full, 90)),
        }


def _set_threads(threads: int) -> None:
    """numba first: its OpenMP layer shares PyTorch's OpenMP runtime and setting its thread
    count resets PyTorch's (a dense baseline then silently ran its decoder on 2 threads)."""
    import torch

    if jit.numba is not None:
        jit.numba.set_num_threads(min(threads, jit.numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
    if torch.get_num_threads() != threads:
        raise RuntimeError(f"PyTorch runs {torch.get_num_threads()} threads, not {threads}")


def run_benchmark(
    model: ExportedModel,
    *,
    tokens: int = 200,
    warmup: int = 20,
    threads: tuple[int, ...] = (1, 2),
    seed: int = 0,
    input_table: bool = True,
    rounds: int = 2,
) -> dict[str, Any]:
    """Latency rows for the dense AWD-LSTM, the dense model of ``model``'s size and type (GRU
    for EGRU too), the engine on ``model`` (with and without the first-layer table) and on
    the dense AWD-LSTM, at each thread count; plus the engine's per-token overhead outside
    its kernels. Each row is timed in ``rounds`` rounds of ``tokens / rounds`` tokens."""
    engine = Engine(model, input_table=input_table)
    stream = engine.generate([], tokens + warmup, 1.0, seed)
    engine.reset()
    engines = _engines(model, engine, input_table, seed)
    contenders = [
        (name, stepper.step_rnn, stepper.step, lambda: None, lambda m=macs: m)
        for name, stepper, macs in _dense_models(model, seed)
    ] + [
        (name, timed.step_rnn, timed.step, timed.reset, lambda e=timed: _engine_macs(e))
        for name, timed in engines
    ]
    per_round = stream[: warmup + max(tokens // rounds, 1)]
    samples, macs = _time_contenders(contenders, engines, per_round, warmup, threads, rounds)
    rows = [
        BenchRow(name, n, *macs[(name, n)], np.concatenate(rnn), np.concatenate(full))
        for (name, n), (rnn, full) in samples.items()
    ]
    matrices = model.matrices.values()
    return {
        "model": {
            "type": model.model_type,
            "emb_size": model.emb_size,
            "hidden_sizes": model.hidden_sizes,
            "vocab_size": model.vocab_size,
            "weight_sparsity": weight_sparsity(model),
            "layer_activity": engine.counts()["layer_activity"],
        },
        "sparse_weight_bytes": {
            "values": sum(int(m.values.nbytes) for m in matrices),
            "indices": sum(int(m.row_indices.nbytes + m.col_ptr.nbytes) for m in matrices),
        },
        "tokens": rounds * max(tokens // rounds, 1),
        "rounds": rounds,
        "warmup": warmup,
        "input_table": input_table,
        "input_table_bytes": engine.table_bytes,
        "overhead_ms_per_token": float(
            np.median(_overhead_ms(model.model_type, len(model.hidden_sizes)))
        ),
        "rows": _with_speedups([r.to_dict() for r in rows]),
    }


def _dense_models(model: ExportedModel, seed: int) -> list[tuple[str, DenseStepper, tuple]]:
    """(name, stepper, (dense RNN MACs, dense full MACs) per token) of the dense rows."""
    sizes = (model.emb_size, model.hidden_sizes, model.vocab_size)
    described = [("dense AWD-LSTM", (*AWD_LSTM, model.vocab_size))] + [
        (f"dense {kind.upper()} (model size)", (kind, *sizes))
        for kind in dict.fromkeys([model.model_type, "gru"])
    ]
    rows = []
    for name, arguments in described:
        arch = Architecture(*arguments)
        macs = (arch.dense_macs_per_token("rnn"), arch.dense_macs_per_token("full"))
        rows.append((name, DenseStepper(*arguments, seed), macs))
    return rows


def _engines(
    model: ExportedModel, engine: Engine, input_table: bool, seed: int
) -> list[tuple[str, Engine]]:
    kind, pruned = model.model_type.upper(), f"{weight_sparsity(model):.0%} pruned"
    engines = [(f"engine {kind} ({pruned}{', table' if input_table else ''})", engine)]
    if input_table:
        engines.append((f"engine {kind} ({pruned}, no table)", Engine(model)))
    awd = synthetic_model(*AWD_LSTM, model.vocab_size, 0.0, seed)
    engines.append(("engine AWD-LSTM (dense, no table)", Engine(awd)))
    return engines


def _time_contenders(
    contenders: list[tuple],
    engines: list[tuple[str, Engine]],
    per_round: list[int],
    warmup: int,
    threads: tuple[int, ...],
    rounds: int,
) -> tuple[dict[tuple[str, int], list[list[np.ndarray]]], dict[tuple[str, int], tuple]]:
    """Per (row name, threads): the ms-per-token samples (RNN only, end to end) of every
    round, and the row's MACs per token."""
    import torch

    previous_threads = torch.get_num_threads()
    samples: dict[tuple[str, int], list[list[np.ndarray]]] = {}
    macs: dict[tuple[str, int], tuple] = {}
    try:
        for n_threads in threads:
            _set_threads(n_threads)
            for _, timed in engines:
                timed.set_threads(n_threads)
            # alternate the order between rounds, so drifting load from other processes
            # falls on every row alike
            for round_index in range(rounds):
                order = contenders if round_index % 2 == 0 else contenders[::-1]
                for name, step_rnn, step, reset, count in order:
                    with torch.no_grad():
                        ms_rnn = _time_per_token(step_rnn, per_round, warmup)
                        reset()
                        ms_full = _time_per_token(step, per_round, warmup)
                    key = (name, n_threads)
                    samples.setdefault(key, [[], []])
                    samples[key][0].append(ms_rnn)
                    samples[key][1].append(ms_full)
                    macs[key] = count()
    finally:
        torch.set_num_threads(previous_threads)
    return samples, macs


def _with_speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        for part in ("rnn", "full"):
            row[f"speedup_{part}"], row[f"speedup_{part}_theory"] = speedups(row, rows, part)
    return rows


def _engine_macs(engine: Engine) -> tuple[float, float]:
    macs = engine.counts()["event_macs_per_token"]
    return macs["rnn"], macs["full"]


def _overhead_ms(model_type: str, depth: int) -> np.ndarray:
    """Latency of a model one unit wide of the same type and depth: what a token costs
    outside the kernels' arithmetic (Python dispatch and kernel entry)."""
    tiny = synthetic_model(model_type, 1, [1] * depth, 2, 0.0)
    engine = Engine(tiny)
    return _time_per_token(engine.step, [0, 1] * 300, 100)


DENSE_AWD_ROWS = ("dense AWD-LSTM", "engine AWD-LSTM (dense, no table)")


def speedups(row: dict[str, Any], rows: list[dict[str, Any]], part: str) -> tuple[float, float]:
    """Realized speedup of ``row`` over the fastest dense AWD-LSTM path at the same thread
    count (fused addmv or the engine's dense-run axpy, whichever was faster), and the
    theoretical one: the AWD-LSTM's dense MACs over this row's MACs."""
    bases = [r for r in rows if r["threads"] == row["threads"] and r["name"] in DENSE_AWD_ROWS]
    fastest = min(r[f"ms_per_token_{part}_median"] for r in bases)
    real = fastest / row[f"ms_per_token_{part}_median"]
    dense = next(r for r in bases if r["name"] == DENSE_AWD_ROWS[0])
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
        f"order, each after {result['warmup']} warm-up; first-layer "
        f"W_ih·E table {table}; engine overhead outside kernels "
        f"{result['overhead_ms_per_token'] * 1e3:.1f} us/token",
        "",
        f"{'':<38} {'thr':>3} {'MMACs':>7} {'RNN ms':>7} {'p90':>6} {'MMACs':>7} "
        f"{'e2e ms':>7} {'p90':>6} {'speedup RNN':>15} {'speedup e2e':>15}",
        f"{'':<38} {'':>3} {'RNN':>7} {'median':>7} {'':>6} {'e2e':>7} {'median':>7} "
        f"{'':>6} {'real / theory':>15} {'real / theory':>15}",
    ]
    rows = result["rows"]
    for row in rows:
        lines.append(
            f"{row['name']:<38} {row['threads']:>3} "
            f"{row['macs_per_token_rnn'] / 1e6:>7.2f} "
            f"{row['ms_per_token_rnn_median']:>7.3f} {row['ms_per_token_rnn_p90']:>6.3f} "
            f"{row['macs_per_token_full'] / 1e6:>7.2f} "
            f"{row['ms_per_token_full_median']:>7.3f} "
            f"{row['ms_per_token_full_p90']:>6.3f} {_speedup_text(row, rows, 'rnn'):>15} "
            f"{_speedup_text(row, rows, 'full'):>15}"
        )
    sparse = result["sparse_weight_bytes"]
    lines += [
        "",
        "speedup = the fastest dense AWD-LSTM row at the same threads (fused addmv per step, "
        "or the engine's dense path) / this row;",
        "theory = dense AWD-LSTM MACs / this row's MACs (event-driven for the engine)",
        f"engine sparse weights: {sparse['values'] / 2**20:.1f} MiB values + "
        f"{sparse['indices'] / 2**20:.1f} MiB indices",
    ]
    return "\n".join(lines)
