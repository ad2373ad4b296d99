"""Sweep results → the paper's table layout: one cell per model, weight decay, bias
decay, sparsity target and way of pruning (steps, fine-tuning rate, chained), with
statistics over seeds."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualsparse.engine.bench_table import AWD_LSTM_RUNS, fastest_running, same_size_runs
from dualsparse.errors import DualsparseError
from dualsparse.fileio import read_json
from dualsparse.reports import records as rec
from dualsparse.reports.paper import PaperRow


@dataclass
class Cell:
    """The runs of one grid point over seeds."""

    model: str
    weight_decay: float
    bias_decay: float
    target: float
    pruning: str = "—"  # how it was pruned (records.pruning_label); "—" for a dense cell
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        return (self.model, self.weight_decay, self.bias_decay, self.target, self.pruning)

    def values(self, path: str) -> list[float]:
        out = []
        for record in self.records:
            value: Any = record
            try:
                for part in path.split("."):
                    value = value[part]
                out.append(float(value))
            except (KeyError, TypeError, ValueError):
                raise DualsparseError(
                    f"a result of the sweep lacks a number at {path!r}; delete that run's "
                    "results/*.json and run the sweep again"
                ) from None
        return out

    def mean(self, path: str) -> float:
        return statistics.fmean(self.values(path))

    def std(self, path: str) -> float:
        values = self.values(path)
        return statistics.stdev(values) if len(values) > 1 else 0.0

    @property
    def seeds(self) -> list[int]:
        return sorted(r.get("seed", 0) for r in self.records)

    def layer_activity(self) -> list[float]:
        layers = [r["activity"]["layers"] for r in self.records]
        return [statistics.fmean(v) for v in zip(*layers, strict=True)]


# what every table and figure of the report reads from a run's result
RESULT_KEYS = ("model", "weight_decay", "bias_decay", "test", "macs", "activity")


def load_results(sweep_dir: Path) -> list[dict[str, Any]]:
    results = sweep_dir / "results"
    files = sorted(results.glob("*.json")) if results.is_dir() else []
    if not files:
        raise DualsparseError(
            f"{sweep_dir} has no finished runs (results/*.json); run `dualsparse sweep SPEC "
            f"--out {sweep_dir}` first"
        )
    records = []
    for path in files:
        record = read_json(path, "delete it and run the sweep again")
        missing = [k for k in RESULT_KEYS if not isinstance(record, dict) or k not in record]
        if missing:
            raise DualsparseError(
                f"{path} is not a sweep run's result (it lacks {', '.join(missing)}); "
                f"delete it and run `dualsparse sweep SPEC --out {sweep_dir}` again"
            )
        records.append(record)
    return records


def cells(records: list[dict[str, Any]]) -> list[Cell]:
    """Grid points in table order: model (EGRU first, as in the paper), decays, target,
    way of pruning. Runs pruned to one target in different ways (a grid over the number
    of steps, say) are different cells, never seeds of one."""
    by_key: dict[tuple, Cell] = {}
    for r in records:
        key = (
            r["model"],
            r["weight_decay"],
            r["bias_decay"],
            r.get("target_sparsity", 0.0),
            rec.pruning_label(r),
        )
        by_key.setdefault(key, Cell(*key)).records.append(r)
    order = {"egru": 0, "gru": 1, "lstm": 2}
    return sorted(by_key.values(), key=lambda c: (order.get(c.model, 9), *c.key[1:]))


def reference_lstm(all_cells: list[Cell]) -> Cell | None:
    """The dense LSTM that MAC reduction factors are relative to (most seeds first)."""
    dense = [c for c in all_cells if c.model == "lstm" and c.target == 0]
    return max(dense, key=lambda c: len(c.records)) if dense else None


def reduction(cell: Cell, reference: Cell | None) -> float | None:
    if reference is None:
        return None
    return reference.mean("macs.rnn.event_macs_per_token") / max(
        cell.mean("macs.rnn.event_macs_per_token"), 1e-12
    )


def _pm(cell: Cell, path: str) -> str:
    return f"{cell.mean(path):.2f} ± {cell.std(path):.2f}"


MAIN_COLUMNS = [
    "model",
    "weight decay",
    "bias decay",
    "target sparsity",
    "pruning",
    "weight sparsity",
    "seeds",
    "activity (valid)",
    "RNN MACs/token (M)",
    "MAC reduction ×",
    "valid ppl min",
    "valid ppl mean ± std",
    "test ppl min",
    "test ppl mean ± std",
]


def main_table(all_cells: list[Cell]) -> list[list[str]]:
    """Rows of the paper's Table 2/3 layout (effective MACs = exact event-driven count)."""
    ref = reference_lstm(all_cells)
    rows = []
    for c in all_cells:
        factor = reduction(c, ref)
        rows.append(
            [
                c.model.upper(),
                f"{c.weight_decay:g}",
                f"{c.bias_decay:g}",
                f"{c.target:.2f}",
                c.pruning,
                f"{c.mean('weight_sparsity'):.3f}",
                str(len(c.records)),
                " / ".join(f"{a:.3f}" for a in c.layer_activity()),
                f"{c.mean('macs.rnn.event_macs_per_token') / 1e6:.4f}",
                "—" if factor is None else f"{factor:.1f}",
                f"{min(c.values('valid.perplexity')):.2f}",
                _pm(c, "valid.perplexity"),
                f"{min(c.values('test.perplexity')):.2f}",
                _pm(c, "test.perplexity"),
            ]
        )
    return rows


PAPER_COLUMNS = [
    "model",
    "weight sparsity",
    "RNN MACs/token (M)",
    "valid ppl min",
    "valid ppl mean ± std",
    "test ppl min",
    "test ppl mean ± std",
]


def paper_table(published: list[PaperRow]) -> list[list[str]]:
    """The published rows (``reference/paper_tables.csv``) in the same number formats."""
    return [
        [
            r.model.upper(),
            f"{r.weight_sparsity:.2f}",
            f"{r.macs_millions:g}",
            f"{r.valid_ppl_min:.2f}",
            f"{r.valid_ppl_mean:.2f} ± {r.valid_ppl_std:.2f}",
            f"{r.test_ppl_min:.2f}",
            f"{r.test_ppl_mean:.2f} ± {r.test_ppl_std:.2f}",
        ]
        for r in published
    ]


INDEPENDENCE_COLUMNS = [
    "model",
    "weight decay",
    "target sparsity",
    "pruning",
    "exact RNN MACs (M)",
    "λa·λw estimate (M)",
    "exact / estimate",
    "seeds",
]


def independence_table(all_cells: list[Cell]) -> list[list[str]]:
    """Exact event-driven MACs against the paper's λ_a·λ_w·dense estimate."""
    rows = []
    for c in all_cells:
        exact = c.mean("macs.rnn.event_macs_per_token")
        estimate = c.mean("macs.rnn.estimated_macs_per_token")
        rows.append(
            [
                c.model.upper(),
                f"{c.weight_decay:g}",
                f"{c.target:.2f}",
                c.pruning,
                f"{exact / 1e6:.4f}",
                f"{estimate / 1e6:.4f}",
                f"{exact / estimate:.3f}" if estimate else "—",
                str(len(c.records)),
            ]
        )
    return rows


# what the report reads from each row of a `dualsparse bench --json` result
BENCH_ROW_KEYS = (
    "name",
    "threads",
    "runs",
    "engine",
    "input_table",
    "ms_per_token_rnn_median",
    "ms_per_token_full_median",
    "macs_per_token_rnn",
    "macs_per_token_full",
)


def bench_results(sweep_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """``DIR/bench/*.json`` files written by ``dualsparse bench EXPORT --json``."""
    folder = sweep_dir / "bench"
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        data = read_json(path, "write it with dualsparse bench --json")
        rows = data.get("rows") if isinstance(data, dict) else None
        if (
            "model" not in data
            or not isinstance(rows, list)
            or not all(isinstance(row, dict) for row in rows)
        ):
            raise DualsparseError(f"{path} is not a `dualsparse bench --json` result")
        missing = sorted({k for row in rows for k in BENCH_ROW_KEYS if k not in row})
        if missing:
            raise DualsparseError(
                f"{path}: its rows lack {', '.join(missing)} (an older `dualsparse bench` "
                f"wrote it); write it again with `dualsparse bench EXPORT --json > {path}`"
            )
        out.append((path.stem, data))
    return out


def _against(
    rows: list[dict[str, Any]], engine_row: dict[str, Any], runs: str, part: str, macs: bool
) -> dict[str, Any] | None:
    """The engine row against the fastest row running ``runs``: its name and ms per token,
    the speedup, and (``macs``) the MAC ratio of the same two models, the fastest row's
    dense MACs over the engine's event MACs."""
    fastest = fastest_running(rows, engine_row, runs, part)
    if fastest is None:
        return None
    ms, macs_key = f"ms_per_token_{part}_median", f"macs_per_token_{part}"
    found = {
        "fastest": fastest["name"],
        "fastest_ms": fastest[ms],
        "speedup": fastest[ms] / engine_row[ms],
    }
    if macs:
        found["mac_ratio"] = fastest[macs_key] / max(engine_row[macs_key], 1)
    return found


def bench_comparisons(benches: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per bench and engine row on the benchmarked model, RNN only and end to end: against
    the fastest row running the dense model of the same size and type (speedup and MAC
    ratio), and against the fastest row running the paper-size AWD-LSTM (speedup only: a
    MAC ratio between models of different sizes does not predict time, the smaller model's
    weights stay in cache)."""
    out = []
    for name, data in benches:
        rows, model = data["rows"], data["model"]
        for row in (r for r in rows if r["engine"]):
            entry: dict[str, Any] = {"bench": name, "model": model, "engine": row}
            for part in ("rnn", "full"):
                same = same_size_runs(model["type"])
                entry[f"same_size_{part}"] = _against(rows, row, same, part, macs=True)
                entry[f"awd_lstm_{part}"] = _against(rows, row, AWD_LSTM_RUNS, part, macs=False)
            out.append(entry)
    return out


BENCH_COLUMNS = [
    "model",
    "weight sparsity",
    "activity",
    "threads",
    "engine RNN ms",
    "fastest dense same size, RNN",
    "its RNN ms",
    "RNN speedup",
    "RNN MAC ratio",
    "engine e2e ms",
    "fastest dense same size, e2e",
    "its e2e ms",
    "e2e speedup",
    "e2e MAC ratio",
]


def _versus(found: dict[str, Any] | None, mac_ratio: bool) -> list[str]:
    if found is None:
        return ["—"] * (4 if mac_ratio else 3)
    cells = [found["fastest"], f"{found['fastest_ms']:.3f}", f"{found['speedup']:.1f}×"]
    return cells + [f"{found['mac_ratio']:.1f}×"] if mac_ratio else cells


def bench_table(benches: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """The engine rows of each bench against the fastest contender running the dense model
    of the same size and type (``bench_comparisons``)."""
    rows = []
    for c in bench_comparisons(benches):
        m, row = c["model"], c["engine"]
        rows.append(
            [
                f"{c['bench']} ({row['name']})",
                f"{m['weight_sparsity']:.3f}",
                " / ".join(f"{a:.3f}" for a in m["layer_activity"]),
                str(row["threads"]),
                f"{row['ms_per_token_rnn_median']:.3f}",
                *_versus(c["same_size_rnn"], mac_ratio=True),
                f"{row['ms_per_token_full_median']:.3f}",
                *_versus(c["same_size_full"], mac_ratio=True),
            ]
        )
    return rows


BENCH_AWD_LSTM_COLUMNS = [
    "model",
    "threads",
    "engine RNN ms",
    "fastest dense AWD-LSTM, RNN",
    "its RNN ms",
    "RNN speedup (measured only)",
    "engine e2e ms",
    "fastest dense AWD-LSTM, e2e",
    "its e2e ms",
    "e2e speedup (measured only)",
]


def bench_awd_lstm_table(benches: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """The engine rows of each bench against the fastest contender running the paper-size
    AWD-LSTM, without a MAC ratio (``bench_comparisons``)."""
    return [
        [
            f"{c['bench']} ({c['engine']['name']})",
            str(c["engine"]["threads"]),
            f"{c['engine']['ms_per_token_rnn_median']:.3f}",
            *_versus(c["awd_lstm_rnn"], mac_ratio=False),
            f"{c['engine']['ms_per_token_full_median']:.3f}",
            *_versus(c["awd_lstm_full"], mac_ratio=False),
        ]
        for c in bench_comparisons(benches)
    ]
