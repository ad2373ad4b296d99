"""What the study figures and the findings read from a sweep's results records
(``results/NAME.json``: the job's meta from ``sweeps.job.Job.meta`` plus the
measurements of ``sweeps.measure``).

Sweeps made before the pruning grid lack ``prune_steps``, ``finetune_lr`` and
``chained``: a pruned run of theirs was pruned in one step, at prune's default
fine-tuning rate, in a chain.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dualsparse.errors import DualsparseError

Record = dict[str, Any]


class MissingRuns(Exception):
    """A figure or finding lacks the runs it needs; the message names what is missing."""


def number(record: Record, path: str) -> float:
    """The number at ``path`` ("test.perplexity") of a results record."""
    value: Any = record
    try:
        for part in path.split("."):
            value = value[part]
        return float(value)
    except (KeyError, TypeError, ValueError):
        raise DualsparseError(
            f"the result of {name(record)} lacks a number at {path!r}; delete that run's "
            "results/*.json and run the sweep again"
        ) from None


def name(record: Record) -> str:
    return str(record.get("name") or Path(str(record.get("run", "?"))).name)


def target(record: Record) -> float:
    return float(record.get("target_sparsity") or 0.0)


def prune_steps(record: Record) -> int:
    """Pruning steps of a pruned run (1 when the sweep did not record it), 0 for dense."""
    if target(record) == 0:
        return 0
    return int(record.get("prune_steps") or 1)


def finetune_lr(record: Record) -> float | None:
    """The fine-tuning rate the spec gave; None: prune's default for the target."""
    lr = record.get("finetune_lr")
    return None if lr is None else float(lr)


def chained(record: Record) -> bool:
    return target(record) > 0 and bool(record.get("chained", True))


def pruning(record: Record) -> tuple[float, int, float | None, bool]:
    """How a run was pruned: (target, steps, fine-tuning lr, chained)."""
    return target(record), prune_steps(record), finetune_lr(record), chained(record)


def pruning_label(record: Record) -> str:
    """How a run was pruned, as the tables print it: "—" (dense), "1 step, chained",
    "4 steps, from dense, lr 0.001" (lr only when the spec gave one)."""
    target, steps, lr, chained = pruning(record)
    if target == 0:
        return "—"
    label = f"{steps} step{'s' if steps != 1 else ''}, {'chained' if chained else 'from dense'}"
    return label if lr is None else f"{label}, lr {lr:g}"


def lr_label(lr: float | None) -> str:
    return "default" if lr is None else f"{lr:g}"


def activity(record: Record) -> float:
    return number(record, "activity.overall")


def event_macs(record: Record) -> float:
    return number(record, "macs.rnn.event_macs_per_token")


def test_ppl(record: Record) -> float:
    return number(record, "test.perplexity")


def valid_ppl(record: Record) -> float:
    return number(record, "valid.perplexity")


def run_dir(record: Record, sweep_dir: Path) -> Path | None:
    """The run's directory: where the results file says, else OUT/runs/NAME (a sweep
    directory that was moved); None when neither exists."""
    for candidate in (Path(str(record.get("run", ""))), sweep_dir / "runs" / name(record)):
        if str(candidate) and (candidate / "checkpoints").is_dir():
            return candidate
    return None


def dense(records: Iterable[Record], model: str | None = None) -> list[Record]:
    return [r for r in records if target(r) == 0 and (model is None or r["model"] == model)]


def group_by(records: Iterable[Any], key: Callable[[Any], Any]) -> dict[Any, list[Any]]:
    """Records grouped by ``key``, groups and members in sorted order (seeds ascending)."""
    out: dict[Any, list[Record]] = {}
    for r in sorted(records, key=_member_order):
        out.setdefault(key(r), []).append(r)
    return dict(sorted(out.items(), key=lambda item: _sortable(item[0])))


def _member_order(item: Any) -> tuple:
    """Seed, then name, of a record or of the first record of a tuple (a pair)."""
    first = item if isinstance(item, dict) else item[0]
    return first.get("seed", 0), name(first)


def _sortable(key: Any) -> Any:
    """A group key that sorts with None (a default, e.g. prune's fine-tuning rate) first."""
    if isinstance(key, tuple):
        return tuple(_sortable(k) for k in key)
    return (key is not None, key if key is not None else 0)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value) of the finite values; nan when none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def fixed_bias_decay(records: Iterable[Record], model: str = "egru") -> float | None:
    """The bias decay at which the dense runs of ``model`` cover the most weight decays
    (ties: the most runs, then the smaller decay): the paper's "fixed bias decay"."""
    by_bd = group_by(dense(records, model), lambda r: r["bias_decay"])
    if not by_bd:
        return None
    return max(
        by_bd, key=lambda bd: (len({r["weight_decay"] for r in by_bd[bd]}), len(by_bd[bd]), -bd)
    )


def requested_figures(state: dict[str, Any]) -> tuple[str, ...] | None:
    """The figures the sweep's spec asked for (``figures`` in sweep.json); None: not
    recorded, so the report draws what the data allows."""
    value = state.get("figures")
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None
