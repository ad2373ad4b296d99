"""The benchmark's peer rows (``engine.peers``): which run, on which model, checked against
what. ONNX Runtime (plain ``run`` and with I/O binding) and OpenVINO run the dense models the
PyTorch rows run (the same weights, exported once per model and table choice); torch sparse
CSR runs the benchmarked model itself. A peer that is not installed is a skip with a reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dualsparse.engine import peer_graphs, peers
from dualsparse.engine.bench_table import Contender
from dualsparse.engine.dense_baselines import DenseStepper
from dualsparse.engine.format import ExportedModel, weight_sparsity

ALL_PEERS = ("ONNX Runtime", "OpenVINO", "torch CSR")


def peer_contenders(
    model: ExportedModel,
    dense: list[Contender],
    workdir: Path,
    wanted: tuple[str, ...] | None = None,
) -> tuple[list[Contender], dict[str, str]]:
    """Rows for each wanted, installed peer (``wanted`` None: all of ``ALL_PEERS``), and
    per skipped peer the reason. ``dense`` are the PyTorch rows whose models the ONNX peers
    export (their steppers are the references for the check)."""
    wanted = ALL_PEERS if wanted is None else wanted
    unknown = set(wanted) - set(ALL_PEERS)
    if unknown:
        raise ValueError(f"unknown peers {sorted(unknown)}; known: {', '.join(ALL_PEERS)}")
    missing = peers.missing_peers()
    skipped = {name: why for name, why in missing.items() if name in wanted}
    rows: list[Contender] = []
    onnx_peers = [p for p in ("ONNX Runtime", "OpenVINO") if p in wanted and p not in missing]
    for row in dense if onnx_peers else []:
        base: DenseStepper = row.build(1)
        for table in (False, True):
            stepper = _with_table(base, table)
            rows += _onnx_contenders(
                stepper, row, table, onnx_peers, workdir / f"{len(rows)}-{int(table)}"
            )
    if "torch CSR" in wanted:
        rows += _csr_contenders(model)
    return rows, skipped


def _onnx_contenders(
    stepper: DenseStepper, row: Contender, table: bool, onnx_peers: list[str], stem: Path
) -> list[Contender]:
    """The ONNX peers' rows for one dense model and table choice: ONNX Runtime (``run`` and
    I/O binding) and OpenVINO on the plain graph; for an LSTM or GRU also ONNX Runtime on
    the graph with ONNX's fused operator (``peer_graphs.FUSED_OPS``), a row of its own."""
    shapes = peer_graphs.state_shapes(
        stepper.model_type, [layer["h"].shape[0] for layer in stepper.layers]
    )
    forms = [("", "ONNX Runtime", False)]
    op = peer_graphs.FUSED_OPS.get(stepper.model_type)
    if "ONNX Runtime" in onnx_peers and op is not None:
        forms.append((f" {op} op", f"ONNX Runtime, {op} operator", True))
    builders = []
    for form, runtime, fused in forms:
        graphs = {
            part: peer_graphs.export_onnx(
                stepper,
                Path(f"{stem}{'-fused' if fused else ''}-{part}.onnx"),
                part == "full",
                fused,
            )
            for part in ("rnn", "full")
        }
        if "ONNX Runtime" in onnx_peers:
            builders += [
                (f"ORT{form}", runtime, lambda n, g=graphs: peers.OrtStepper(g, shapes, n, False)),
                (
                    f"ORT{form} iobind",
                    f"{runtime}, I/O binding",
                    lambda n, g=graphs: peers.OrtStepper(g, shapes, n, True),
                ),
            ]
        if "OpenVINO" in onnx_peers and not fused:
            builders.append(
                ("OpenVINO", "OpenVINO", lambda n, g=graphs: peers.OpenVinoStepper(g, shapes, n))
            )
    reference = _stepper_reference(stepper)
    suffix = ", table" if table else ""
    return [
        Contender(
            f"{label} {row.runs}{suffix}",
            runtime,
            row.runs,
            table,
            build,
            row.macs,
            reference=reference,
        )
        for label, runtime, build in builders
    ]


def _with_table(stepper: DenseStepper, table: bool) -> DenseStepper:
    """The same weights with the first-layer table on or off (a shallow copy)."""
    import copy

    import torch

    out = copy.copy(stepper)
    out.layers = [dict(layer) for layer in stepper.layers]
    if table and stepper.table is None:
        first = stepper.layers[0]
        out.table = torch.addmm(first["b"], stepper.embedding, first["w_ih"].T)
    elif not table:
        out.table = None
    return out


def _stepper_reference(stepper: DenseStepper):
    """The PyTorch stepper's log-probabilities on ``tokens`` from a zero state, computed
    once (the same for every thread count of every peer of this model)."""
    cache: dict[tuple[int, ...], list[np.ndarray]] = {}

    def reference(tokens: list[int]) -> list[np.ndarray]:
        key = tuple(tokens)
        if key not in cache:
            import torch

            stepper.reset()
            with torch.no_grad():
                cache[key] = [stepper.log_probs(t).numpy().astype(np.float64) for t in tokens]
            stepper.reset()
        return cache[key]

    return reference


def _csr_contenders(model: ExportedModel) -> list[Contender]:
    """torch sparse CSR on the benchmarked model, every product for every input; checked
    against the engine in float64 (the model's function, see docs/engine.md: Exactness)."""
    from dualsparse.engine.runtime import Engine

    cache: dict[tuple[int, ...], list[np.ndarray]] = {}

    def reference(tokens: list[int]) -> list[np.ndarray]:
        if tuple(tokens) not in cache:
            engine = Engine(model, dtype=np.float64)
            cache[tuple(tokens)] = [engine.logits - engine.step(t) for t in tokens]
        return cache[tuple(tokens)]

    nnz = {name: m.nnz for name, m in model.matrices.items()}
    rnn = sum(v for name, v in nnz.items() if name.startswith("layer"))
    full = rnn + nnz.get("projection", 0) + int(np.count_nonzero(model.decoder_weight))
    kind = model.model_type.upper()
    runs = f"{kind} ({weight_sparsity(model):.0%} pruned)"
    steppers: dict[bool, Any] = {}
    return [
        Contender(
            f"torch CSR {runs}{', table' if table else ''}",
            "PyTorch sparse CSR",
            runs,
            table,
            lambda _, t=table: steppers.setdefault(t, peers.SparseCsrStepper(model, t)),
            lambda _: (rnn, full),
            reference=reference,
        )
        for table in (False, True)
    ]
