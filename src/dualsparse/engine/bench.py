"""Per-token latency at batch 1: the engine against the fastest dense path, in one run.

The dense baselines (``engine.dense_baselines``: one fused ``torch.addmv`` per gate block
per step, random weights) are the AWD-LSTM (emb 400, hidden 1150,1150,400) and an EGRU/GRU
of the engine model's own size. The engine runs the exported model at its own weight
sparsity on a token stream it samples itself, so activity is the model's real activity.

Speedups over the dense model of the engine model's size and type are printed
next to the MAC ratio of the same two models (dense MACs over the engine's
measured event-driven MACs); over the larger AWD-LSTM, measured only; RNN-only
(the paper's convention) and end-to-end with projection and decoder. PyTorch is
needed here, for the dense baselines only.
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
from dualsparse.engine.bench_table import Contender, _with_speedups, headline
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


def model_summary(model, engine) -> dict[str, Any]:
    """What a benchmark result says of its model: sizes, weight sparsity, and the activity
    per layer the engine saw over the tokens it stepped."""
    return {
        "type": model.model_type,
        "emb_size": model.emb_size,
        "hidden_sizes": model.hidden_sizes,
        "vocab_size": model.vocab_size,
        "weight_sparsity": weight_sparsity(model),
        "layer_activity": engine.counts()["layer_activity"],
    }


def time_per_token(step, tokens: list[int], warmup: int) -> np.ndarray:
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


def set_threads(threads: int) -> None:
    """numba first: its OpenMP layer shares PyTorch's OpenMP runtime and setting its thread
    count resets PyTorch's (a dense baseline then silently ran its decoder on 2 threads)."""
    import torch

    if jit.numba is not None:
        jit.numba.set_num_threads(min(threads, jit.numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
    if torch.get_num_threads() != threads:
        raise RuntimeError(f"PyTorch runs {torch.get_num_threads()} threads, not {threads}")


def peer_selection(text: str) -> tuple[str, ...] | None:
    """``--peers`` as run_benchmark takes it: "all" (None: every installed peer), "none", or a
    comma list of peer names."""
    named: dict[str, tuple[str, ...] | None] = {"all": None, "none": ()}
    if text in named:
        return named[text]
    return tuple(name.strip() for name in text.split(",") if name.strip())


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
    row_dicts = _with_speedups([r.to_dict() for r in rows], model.model_type)
    return {
        "model": model_summary(model, engine),
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
            set_threads(n_threads)
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
                        ms_rnn = time_per_token(stepper.step_rnn, per_round, warmup)
                        stepper.reset()
                        ms_full = time_per_token(stepper.step, per_round, warmup)
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


def _engine_macs(engine: Engine) -> tuple[float, float]:
    macs = engine.counts()["event_macs_per_token"]
    return macs["rnn"], macs["full"]


def _overhead_ms(model_type: str, depth: int) -> np.ndarray:
    """Latency of a model one unit wide of the same type and depth: what a token costs
    outside the kernels' arithmetic (Python dispatch and kernel entry)."""
    tiny = synthetic_model(model_type, 1, [1] * depth, 2, 0.0)
    engine = Engine(tiny)
    return time_per_token(engine.step, [0, 1] * 300, 100)
