"""Check an export against the PyTorch model it came from, token by token.

The PyTorch model is run at batch 1 over the same token stream, state carried,
in float64 (the model's function, up to rounding far below 1e-4) and in float32
(what `dualsparse evaluate` computes). A threshold unit makes the model
discontinuous: where ĉ − θ lies within rounding of zero, two float32 programs that
sum in a different order can disagree on an event, and the difference then
travels with the state. So the engine is compared with both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TOLERANCE = 1e-4
CHUNK = 1000  # tokens per forward call when the whole state is carried across calls


def torch_log_probs(model, ids: np.ndarray, dtype: str) -> tuple[np.ndarray, list]:
    """log p(w_{t+1} | w_1..w_t) of ``model`` (converted to ``dtype``) at batch 1, and the
    fraction of nonzero outputs per layer."""
    import torch

    from dualsparse.evaluation import DEFAULT_BPTT, walk_split

    model = model.to(getattr(torch, dtype))
    tokens = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    # an EGRU whose local state restarts every window must be walked in the windows the
    # engine restarts it at (those of `evaluate`); otherwise the window length is free
    carried = getattr(model.cfg, "carry_local_state", True)
    out, nonzero, seen = [], np.zeros(len(model.layers)), 0
    for window in walk_split(model, tokens, 1, CHUNK if carried else DEFAULT_BPTT):
        lp = torch.log_softmax(window.output.logits[:, 0].double(), -1)
        out.append(lp.gather(1, window.targets)[:, 0].numpy())
        nonzero += [int(torch.count_nonzero(y)) for y in window.output.layer_outputs]
        seen += window.targets.numel()
    sizes = np.array([layer.hidden_size for layer in model.layers])
    return np.concatenate(out), (nonzero / (seen * sizes)).tolist()


def compare(log_probs: np.ndarray, layer_activity: list, run_dir: str | Path, ids) -> dict:
    """Agreement of the engine's ``log_probs`` and activity with the run's PyTorch model."""
    from dualsparse.runs import load_run

    model = load_run(run_dir, "best").model  # float32 → float64 → float32 is exact
    report: dict[str, Any] = {"run": str(run_dir), "tolerance": TOLERANCE}
    for dtype in ("float64", "float32"):
        reference, activity = torch_log_probs(model, ids, dtype)
        diff = np.abs(log_probs - reference)
        report[f"pytorch_{dtype}"] = {
            "max_abs_diff": float(diff.max()),
            "tokens_beyond_tolerance": int((diff > TOLERANCE).sum()),
            "fraction_beyond_tolerance": float((diff > TOLERANCE).mean()),
            "layer_activity": activity,
            "activity_max_abs_diff": float(np.abs(np.subtract(activity, layer_activity)).max()),
        }
    return report


def format_comparison(report: dict) -> str:
    lines = [f"against the PyTorch model of {report['run']} (batch 1, state carried):"]
    for dtype in ("float64", "float32"):
        r = report[f"pytorch_{dtype}"]
        lines.append(
            f"  PyTorch {dtype}: max |Δ log p| {r['max_abs_diff']:.2e}, "
            f"{r['tokens_beyond_tolerance']:,} tokens beyond {report['tolerance']:g} "
            f"({r['fraction_beyond_tolerance']:.2%}), activity max |Δ| "
            f"{r['activity_max_abs_diff']:.2e}"
        )
    return "\n".join(lines)
