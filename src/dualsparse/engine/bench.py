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

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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


@dataclass
class BenchRow:
    contender: Contender
    threads: int
    macs_rnn: float  # per token: dense MACs, or the engine's measured event MACs
    macs_full: float
    ms_rnn: np.ndarray = field(repr=False)
    ms_full: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        c = self.contender
        return {
            "name": c.name,
            "threads": self.threads,
            "runtime": c.runtime,
            "runs": c.runs,
            "input_table": c.input_table,
            "engine": c.engine,
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
    peers: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Latency rows, at each thread count, for: the dense AWD-LSTM (emb 400, hidden
    1150,1150,400) and the dense model of ``model``'s size and type (GRU for EGRU too),
    stepped in PyTorch with and without the first-layer table; the peers (``peers_rows``:
    ONNX Runtime, OpenVINO, torch sparse CSR; ``peers`` names the ones to run, None = every
    installed one, () = none), each checked against the model's log-probabilities first;
    the engine on ``model`` (with and without the table) and on the dense AWD-LSTM. Plus
    the headline (``headline``) and the engine's per-token overhead outside its kernels.
    Each row is timed in ``rounds`` rounds of ``tokens / rounds`` tokens."""
    from dualsparse.engine import peers_rows
    from dualsparse.engine.peers import DEEPSPARSE_NOTE

    engine = Engine(model, input_table=input_table)
    stream = engine.generate([], tokens + warmup, 1.0, seed)
    engine.reset()
    per_round = stream[: warmup + max(tokens // rounds, 1)]
    contenders = _dense_contenders(model, seed) + _engine_contenders(model, engine, seed)
    with tempfile.TemporaryDirectory(prefix="dualsparse-peers-") as workdir:
        peer_contenders, skipped = peers_rows.peer_contenders(
            model, _dense_contenders(model, seed, only_model=True), Path(workdir), peers
        )
        samples, macs, checks = _time_contenders(
            contenders + peer_contenders, per_round, warmup, threads, rounds
        )
    rows = [
        BenchRow(
            contender, n, *macs[(contender.name, n)], np.concatenate(rnn), np.concatenate(full)
        )
        for (contender, n), (rnn, full) in samples.items()
    ]
    matrices = model.matrices.values()
    row_dicts = _with_speedups([r.to_dict() for r in rows])
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
        "rows": row_dicts,
        "headline": headline(row_dicts, input_table),
        "peers_skipped": {**skipped, "DeepSparse": DEEPSPARSE_NOTE},
        "peer_checks": checks,
    }


def _dense_contenders(model: ExportedModel, seed: int, only_model: bool = False) -> list[Contender]:
    """The dense PyTorch rows (fused addmv per gate block), without and with the table;
    ``only_model``: the AWD-LSTM and the model's own type only, without the table (the
    models the peers export, built once and shared: their weights are the peers')."""
    sizes = (model.emb_size, model.hidden_sizes, model.vocab_size)
    kinds = [model.model_type] if only_model else dict.fromkeys([model.model_type, "gru"])
    described = [("dense AWD-LSTM", (*AWD_LSTM, model.vocab_size))] + [
        (f"dense {kind.upper()} (model size)", (kind, *sizes)) for kind in kinds
    ]
    rows = []
    for runs, arguments in described:
        arch = Architecture(*arguments)
        dense_macs = (arch.dense_macs_per_token("rnn"), arch.dense_macs_per_token("full"))
        for table in (False,) if only_model else (False, True):
            stepper = DenseStepper(*arguments, seed, input_table=table)
            rows.append(
                Contender(
                    runs + (", table" if table else ""),
                    "PyTorch addmv",
                    runs,
                    table,
                    lambda _, s=stepper: s,
                    lambda _, m=dense_macs: m,
                )
            )
    return rows


def _engine_contenders(model: ExportedModel, engine: Engine, seed: int) -> list[Contender]:
    kind, pruned = model.model_type.upper(), f"{weight_sparsity(model):.0%} pruned"
    runs = f"{kind} ({pruned})"
    has_table = engine.table is not None
    engines = [(f"engine {kind} ({pruned}{', table' if has_table else ''})", runs, engine, True)]
    if has_table:
        engines.append((f"engine {kind} ({pruned}, no table)", runs, Engine(model), True))
    awd = synthetic_model(*AWD_LSTM, model.vocab_size, 0.0, seed)
    engines.append(("engine AWD-LSTM (dense, no table)", "dense AWD-LSTM", Engine(awd), False))
    return [
        Contender(
            name,
            "dualsparse engine",
            runs,
            timed.table is not None,
            lambda n, e=timed: e.set_threads(n) or e,
            _engine_macs,
            engine=on_model,
        )
        for name, runs, timed, on_model in engines
    ]


def _time_contenders(
    contenders: list[Contender],
    per_round: list[int],
    warmup: int,
    threads: tuple[int, ...],
    rounds: int,
) -> tuple[dict, dict, dict]:
    """Per (contender, threads): the ms-per-token samples (RNN only, end to end) of every
    round, and the row's MACs per token; and per checked (row name, threads) the largest
    log-probability difference to the model (a row over ``PEER_TOLERANCE`` is not timed)."""
    import torch

    from dualsparse.engine.peers import PEER_TOLERANCE

    previous_threads = torch.get_num_threads()
    samples: dict[tuple[Contender, int], list[list[np.ndarray]]] = {}
    macs: dict[tuple[str, int], tuple] = {}
    checks: dict[str, dict[str, Any]] = {}
    try:
        for n_threads in threads:
            _set_threads(n_threads)
            steppers = []
            for contender in contenders:
                stepper = contender.build(n_threads)
                if contender.reference is not None:
                    diff = _max_log_prob_diff(stepper, contender.reference, per_round)
                    passed = diff <= PEER_TOLERANCE
                    checks[f"{contender.name} @ {n_threads}"] = {
                        "max_abs_log_prob_diff": diff,
                        "passed": passed,
                    }
                    if not passed:
                        continue
                steppers.append((contender, stepper))
            # alternate the order between rounds, so drifting load from other processes
            # falls on every row alike
            for round_index in range(rounds):
                order = steppers if round_index % 2 == 0 else steppers[::-1]
                for contender, stepper in order:
                    with torch.no_grad():
                        stepper.reset()
                        ms_rnn = _time_per_token(stepper.step_rnn, per_round, warmup)
                        stepper.reset()
                        ms_full = _time_per_token(stepper.step, per_round, warmup)
                    key = (contender, n_threads)
                    samples.setdefault(key, [[], []])
                    samples[key][0].append(ms_rnn)
                    samples[key][1].append(ms_full)
                    macs[(contender.name, n_threads)] = contender.macs(stepper)
            del steppers
    finally:
        torch.set_num_threads(previous_threads)
    return samples, macs, checks


def _max_log_prob_diff(stepper: Any, reference: Callable, tokens: list[int]) -> float:
    import torch

    expected = reference(tokens)
    stepper.reset()
    with torch.no_grad():
        got = [np.asarray(stepper.log_probs(t), dtype=np.float64) for t in tokens]
    stepper.reset()
    return float(max(np.abs(g - e).max() for g, e in zip(got, expected, strict=True)))


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


def _engine_macs(engine: Engine) -> tuple[float, float]:
    macs = engine.counts()["event_macs_per_token"]
    return macs["rnn"], macs["full"]


def _overhead_ms(model_type: str, depth: int) -> np.ndarray:
    """Latency of a model one unit wide of the same type and depth: what a token costs
    outside the kernels' arithmetic (Python dispatch and kernel entry)."""
    tiny = synthetic_model(model_type, 1, [1] * depth, 2, 0.0)
    engine = Engine(tiny)
    return _time_per_token(engine.step, [0, 1] * 300, 100)


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
