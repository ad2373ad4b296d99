"""Learning curves from metrics.jsonl files written by hand: repeated positions (last
wins), null and NaN values, a half-written last line, pruned runs' steps, and the
settled rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dualsparse.reports.curves import curves, run_curve, settled_rows


def write_run(directory: Path, lines: list[str]) -> Path:
    (directory / "checkpoints").mkdir(parents=True)
    (directory / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def validation(epoch: float, ppl, activity=(0.5, 0.1), event: str = "epoch") -> str:
    return json.dumps(
        {"event": event, "epoch": epoch, "valid_ppl": ppl, "valid_activity": activity}
    )


def record(name: str, run: Path, target: float = 0.0) -> dict:
    return {"name": name, "run": str(run), "target_sparsity": target, "hidden_sizes": [16, 4]}


def test_a_trained_runs_curve_and_its_settled_verdict(tmp_path):
    run = write_run(
        tmp_path / "a",
        [
            validation(1, 200.0),
            validation(2, 150.0),
            validation(2, 140.0),  # a resumed run repeated epoch 2: the last one counts
            validation(2.5, float("nan"), event="interrupted"),
            validation(3, None),
            validation(3, 139.0),
            '{"event": "epo',  # killed while writing
        ],
    )
    curve = run_curve(record("a", run), tmp_path)
    assert curve.epochs == [1, 2, 2.5, 3]
    assert curve.valid_ppl[:2] == [200.0, 140.0] and math.isnan(curve.valid_ppl[2])
    assert curve.valid_ppl[3] == 139.0
    # activity weighted by units: (0.5·16 + 0.1·4) / 20
    assert curve.activity[0] == pytest.approx(0.42)
    # (140 − 139) / 140 = 0.7% < 1%: settled
    assert curve.settled() is True
    assert settled_rows([curve]) == [["a", "4", "140.00", "139.00", "yes"]]


def test_a_run_still_improving_has_not_settled(tmp_path):
    run = write_run(tmp_path / "b", [validation(1, 200.0), validation(2, 190.0)])
    curve = run_curve(record("b", run), tmp_path)
    assert curve.settled() is False  # 5% better than the epoch before
    run = write_run(tmp_path / "c", [validation(1, 200.0), validation(2, 210.0)])
    assert run_curve(record("c", run), tmp_path).settled() is True  # got worse: no longer learning


def test_a_pruned_run_is_its_steps_in_a_row_judged_on_the_last(tmp_path):
    run = tmp_path / "p"
    (run / "checkpoints").mkdir(parents=True)
    write_run(run / "step-1", [validation(1, 300.0), validation(2, 250.0)])
    write_run(run / "step-2", [validation(1, 400.0)])
    curve = run_curve(record("p", run, target=0.8), tmp_path)
    assert curve.epochs == [1, 2, 3] and curve.valid_ppl == [300.0, 250.0, 400.0]
    assert curve.settled() is None  # one validation in its last step
    assert settled_rows([curve]) == [["p", "3", "—", "400.00", "cannot tell"]]


def test_runs_whose_directory_is_gone_are_left_out(tmp_path):
    run = write_run(tmp_path / "sweep" / "runs" / "moved", [validation(1, 100.0)])
    # the results file names a path that no longer exists: OUT/runs/NAME is found instead
    found = curves(
        [record("moved", tmp_path / "elsewhere"), record("gone", tmp_path / "nowhere")],
        tmp_path / "sweep",
    )
    assert [c.name for c in found] == ["moved"] and run.is_dir()
