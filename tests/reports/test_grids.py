"""The grid figures on made-up results: panels per fine-tuning rate and group, lines per
steps and chaining, statistics over seeds (recomputed with numpy), and old results
without the pruning fields."""

from __future__ import annotations

import numpy as np
import pytest
from test_findings import result

from dualsparse.reports import grids
from dualsparse.reports.records import MissingRuns


def _rows(columns: list[str], rows: list[list[str]]) -> list[dict[str, str]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def test_pruning_steps_panels_lines_and_seed_statistics(tmp_path):
    ppl = {  # (steps, lr, chained) -> test ppl of seeds 1 and 2
        (1, None, True): (110.0, 114.0),
        (2, None, True): (105.0, 106.0),
        (1, None, False): (120.0, 121.0),
        (1, 0.001, False): (101.0, 99.0),
    }
    records = [result("dense-s1", seed=1), result("dense-s2", seed=2)]
    for (steps, lr, chained), values in ppl.items():
        for seed, p in zip((1, 2), values, strict=True):
            records.append(
                result(
                    f"p80-k{steps}-{lr}-{chained}-s{seed}",
                    seed=seed,
                    target=0.8,
                    ppl=p,
                    prune_steps=steps,
                    finetune_lr=lr,
                    chained=chained,
                )
            )
    paths, rows = grids.pruning_steps(records, tmp_path / "fig3")
    assert paths["fig3_png"].stat().st_size > 1000
    table = _rows(grids.STEPS_COLUMNS, rows)
    assert len(table) == len(ppl)
    for row in table:
        lr = None if row["fine-tuning lr"] == "default" else float(row["fine-tuning lr"])
        values = np.array(ppl[(int(row["pruning steps"]), lr, row["chained"] == "yes")])
        assert float(row["test ppl mean"]) == pytest.approx(values.mean(), abs=1e-3)
        assert float(row["test ppl std"]) == pytest.approx(values.std(ddof=1), abs=1e-3)
        assert row["seeds"] == "2" and row["target sparsity"] == "0.80"
    # the default-rate panel first, then 0.001
    assert [r["fine-tuning lr"] for r in table] == ["default"] * 3 + ["0.001"]


def test_old_results_without_pruning_fields_count_as_one_chained_step(tmp_path):
    old = [result("d"), result("p80", target=0.8, ppl=105.0)]  # no prune_steps, chained
    with pytest.raises(MissingRuns, match="two or more settings"):
        grids.pruning_steps(old, tmp_path / "fig3")
    new = old + [result("p80-k2", target=0.8, ppl=103.0, prune_steps=2, chained=True)]
    _, rows = grids.pruning_steps(new, tmp_path / "fig3")
    table = _rows(grids.STEPS_COLUMNS, rows)
    assert [(r["pruning steps"], r["chained"], r["test ppl mean"]) for r in table] == [
        ("1", "yes", "105.000"),
        ("2", "yes", "103.000"),
    ]


def test_activity_vs_sparsity_has_a_panel_per_group(tmp_path):
    records = [
        result("a", group="small", wd=0.1, activity=0.3),
        result("a-p50", group="small", wd=0.1, target=0.5, activity=0.31),
        result("b", group="large", wd=0.01, activity=0.5),
        result("b-p90", group="large", wd=0.01, target=0.9, activity=0.2, macs=2e5),
        result("c", group="other", wd=0.3, activity=0.1),  # dense only: no panel, no point
        result("l-p50", model="lstm", group="lstm", target=0.5, activity=1.0),
    ]
    _, rows = grids.activity_vs_sparsity(records, tmp_path / "fig1cd")
    table = _rows(grids.ACTIVITY_COLUMNS, rows)
    assert [(r["panel"], r["run"]) for r in table] == [
        ("large", "b"),
        ("large", "b-p90"),
        ("small", "a"),
        ("small", "a-p50"),
    ]
    assert table[1]["RNN event MACs/token (M)"] == "0.20000" and table[1]["activity"] == "0.2000"


def test_decay_tradeoff_statistics_over_seeds(tmp_path):
    records = [
        result(f"wd{wd}-s{s}", wd=wd, seed=s, ppl=p, activity=a)
        for wd, s, p, a in (
            (0.01, 1, 100.0, 0.30),
            (0.01, 2, 104.0, 0.34),
            (0.3, 1, 120.0, 0.10),
            (0.3, 2, 121.0, 0.12),
        )
    ] + [result("bd", wd=0.01, bd=0.1, ppl=90.0)]  # another bias decay: not in the series
    _, rows = grids.decay_tradeoff(records, tmp_path / "trade")
    table = _rows(grids.TRADEOFF_COLUMNS, rows)
    assert [(r["weight decay"], r["bias decay"], r["seeds"]) for r in table] == [
        ("0.01", "0", "2"),
        ("0.3", "0", "2"),
    ]
    assert table[0]["test ppl mean"] == "102.000"
    assert float(table[0]["test ppl std"]) == pytest.approx(np.std([100, 104], ddof=1), abs=1e-3)
    assert float(table[1]["activity std"]) == pytest.approx(np.std([0.1, 0.12], ddof=1), abs=1e-4)
    with pytest.raises(MissingRuns, match="two or more weight decays"):
        grids.decay_tradeoff(records[:2], tmp_path / "trade")
