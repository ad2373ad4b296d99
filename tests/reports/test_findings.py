"""Each rule of the findings table on results made up so that the answer is known."""

from __future__ import annotations

import pytest

from dualsparse.reports import findings as fnd
from dualsparse.reports.findings import CANNOT_TELL, CONTRADICTS, REPRODUCES


def result(
    name: str,
    *,
    model: str = "egru",
    wd: float = 0.1,
    bd: float = 0.0,
    seed: int = 1,
    target: float = 0.0,
    ppl: float = 100.0,
    valid: float | None = None,
    activity: float = 0.2,
    macs: float = 1e6,
    estimate: float | None = None,
    **meta,
) -> dict:
    """A results record as ``sweeps.measure`` writes it, with the job's meta."""
    return {
        "name": name,
        "model": model,
        "seed": seed,
        "weight_decay": wd,
        "bias_decay": bd,
        "target_sparsity": target,
        "weight_sparsity": target,
        "valid": {"perplexity": valid if valid is not None else ppl},
        "test": {"perplexity": ppl},
        "activity": {"overall": activity},
        "macs": {
            "rnn": {"event_macs_per_token": macs, "estimated_macs_per_token": estimate or macs}
        },
        **meta,
    }


# ---------------------------------------------------------------- MACs multiply


@pytest.mark.parametrize(
    ("ratios", "median", "verdict"),
    [
        ((1.0, 1.1), "1.050", REPRODUCES),
        ((2.0, 2.2), "2.100", CONTRADICTS),
        ((1.0, 1.0, 2.0), "1.000", CANNOT_TELL),
    ],
)
def test_macs_multiply(ratios, median, verdict):
    records = [result("dense")] + [
        result(f"p{i}", target=0.8, macs=r * 1e5, estimate=1e5) for i, r in enumerate(ratios)
    ]
    found = fnd.macs_multiply(records)
    assert found.verdict == verdict
    assert f"median {median}, range {min(ratios):.3f}–{max(ratios):.3f}" in found.measured


def test_macs_multiply_without_pruned_runs():
    assert fnd.macs_multiply([result("dense")]).verdict == CANNOT_TELL


# ---------------------------------------------------------------- weight vs bias decay


def decay_grid(activities: dict, bias_activity: float, seeds=(1, 2), spread=0.002) -> list:
    """Dense EGRUs at bias decay 0 per weight decay (two seeds, ± spread), and one more
    bias decay (0.1) at the smallest weight decay."""
    out = []
    for wd, a in activities.items():
        for i, seed in enumerate(seeds):
            out.append(result(f"wd{wd}-s{seed}", wd=wd, seed=seed, activity=a + i * spread))
    smallest = min(activities)
    for i, seed in enumerate(seeds):
        out.append(
            result(
                f"bd-s{seed}", wd=smallest, bd=0.1, seed=seed, activity=bias_activity + i * spread
            )
        )
    return out


def test_weight_decay_controls_activity_bias_decay_less():
    found = fnd.decay_controls_activity(decay_grid({0.01: 0.30, 0.1: 0.20, 0.3: 0.10}, 0.29))
    assert found.verdict == REPRODUCES
    # activity means 0.301/0.201/0.101: range 0.200, 66% of the largest; bias range 0.010
    assert "range 0.200, 66%" in found.measured and "range over bias decays 0.010" in found.measured


def test_bias_decay_moving_activity_as_much_contradicts():
    found = fnd.decay_controls_activity(decay_grid({0.01: 0.30, 0.1: 0.20, 0.3: 0.10}, 0.05))
    assert found.verdict == CONTRADICTS and "bias decay moved activity as much" in found.reason


def test_weight_decay_barely_moving_activity_contradicts():
    grid = decay_grid({0.001: 0.086, 0.01: 0.085, 0.1: 0.083}, 0.086, seeds=(1,))
    found = fnd.decay_controls_activity(grid)
    assert found.verdict == CONTRADICTS and "by only 3%" in found.reason
    assert "one seed per cell" in found.measured


def test_decay_effect_within_the_seed_spread_or_narrow_span_cannot_tell():
    noisy = decay_grid({0.01: 0.30, 0.1: 0.29, 0.3: 0.28}, 0.3, spread=0.05)
    assert fnd.decay_controls_activity(noisy).reason == "seed spread larger than the effect"
    narrow = decay_grid({0.01: 0.30, 0.02: 0.10}, 0.3)
    assert fnd.decay_controls_activity(narrow).verdict == CANNOT_TELL
    assert "span < 10×" in fnd.decay_controls_activity(narrow).reason


# ---------------------------------------------------------------- pruning cost


def pruning_runs(pruned_ppl: tuple[float, float], **meta) -> list:
    dense = [result("d1", seed=1, ppl=100.0), result("d2", seed=2, ppl=102.0)]
    pruned = [
        result(f"p80-s{s}", seed=s, target=0.8, ppl=p, **meta)
        for s, p in zip((1, 2), pruned_ppl, strict=True)
    ]
    worse = [result(f"p85-s{s}", seed=s, target=0.85, ppl=130.0, prune_steps=2) for s in (1, 2)]
    return dense + pruned + worse


def test_pruning_cost_under_two_points():
    # an old sweep's runs (no prune_steps/chained): one step, chained
    found = fnd.pruning_cost(pruning_runs((101.0, 103.5)))
    assert found.verdict == REPRODUCES
    # costs 1.0% and 1.47%: mean 1.24%, in points (1.0 + 1.5) / 2
    assert "best: 80% in 1 step(s), lr default: +1.25 points (+1.2%)" in found.measured
    assert "2 setting(s)" in found.measured


def test_pruning_cost_above_two_points_contradicts():
    found = fnd.pruning_cost(pruning_runs((120.0, 121.0), prune_steps=1, chained=False))
    assert found.verdict == CONTRADICTS and ", from dense" in found.measured


def test_a_run_that_had_not_settled_makes_a_finding_cannot_tell():
    records = pruning_runs((101.0, 103.5))
    rows = fnd.findings(records, {"d1": False, "d2": True, "p80-s1": True, "p80-s2": True})
    cost = next(f for f in rows if f.claim.startswith("pruning to 80"))
    assert cost.verdict == CANNOT_TELL
    assert cost.reason.startswith("1 of its ") and "had not settled: d1" in cost.reason
    assert "by the rule alone: reproduces" in cost.reason
    # runs without a learning curve: said, not decided on
    cost = next(f for f in fnd.findings(records, {}) if f.claim.startswith("pruning to 80"))
    assert (
        cost.verdict == REPRODUCES and "whether 6 of its runs settled cannot be told" in cost.reason
    )


# ---------------------------------------------------------------- activity vs sparsity


@pytest.mark.parametrize(
    ("at_80", "verdict"), [(0.21, REPRODUCES), (0.30, CONTRADICTS), (0.235, CANNOT_TELL)]
)
def test_activity_against_weight_sparsity(at_80, verdict):
    records = [
        result("dense", activity=0.2),
        result("p40", target=0.4, activity=0.205),
        result("p80", target=0.8, activity=at_80),
        result("p95", target=0.95, activity=0.6),  # high sparsity: not part of the claim
    ]
    found = fnd.activity_flat(records)
    assert found.verdict == verdict
    assert found.measured == (
        f"relative activity change from dense: 40% +2.5%, 80% {(at_80 - 0.2) / 0.2:+.1%}"
    )


def test_one_target_pruned_in_several_ways_is_not_averaged_as_seeds():
    """The 80% runs in 1 and in 2 steps are two settings, each against its dense run; the
    cpu-brown-findings report once printed their mean as one '80%' entry."""
    records = [
        result("dense", activity=0.2),
        result("p40", target=0.4, activity=0.21, prune_steps=1, chained=False),
        result("p80", target=0.8, activity=0.22, prune_steps=1, chained=False),
        result("p80-k2", target=0.8, activity=0.2, prune_steps=2, chained=False),
    ]
    found = fnd.activity_flat(records)
    assert found.measured == (
        "relative activity change from dense: 40% +5.0%, 80% (1 step, from dense) +10.0%, "
        "80% (2 steps, from dense) +0.0%"
    )
    assert found.verdict == REPRODUCES  # the worst, +10.0%, is within the 10% rule


def test_the_table_keeps_ways_of_pruning_apart():
    from dualsparse.reports.tables import cells, main_table

    records = [
        result("dense", ppl=200.0),
        result("p80", target=0.8, ppl=190.0, prune_steps=1, chained=False),
        result("p80-k2", target=0.8, ppl=180.0, prune_steps=2, chained=False),
        result("p80-c", target=0.8, ppl=170.0, prune_steps=1, chained=True, finetune_lr=0.001),
    ]
    for r in records:
        r["valid"]["perplexity"] = r["test"]["perplexity"]
        r["activity"]["layers"] = [r["activity"]["overall"]]
    found = {c.pruning: [x["name"] for x in c.records] for c in cells(records)}
    assert found == {
        "—": ["dense"],
        "1 step, from dense": ["p80"],
        "2 steps, from dense": ["p80-k2"],
        "1 step, chained, lr 0.001": ["p80-c"],
    }
    rows = {row[4]: row for row in main_table(cells(records))}
    assert rows["2 steps, from dense"][6] == "1"  # seeds: one run, not three
    assert rows["2 steps, from dense"][-1] == "180.00 ± 0.00"


# ---------------------------------------------------------------- equal MACs


@pytest.mark.parametrize(
    ("lstm_macs", "lstm_ppl", "verdict", "why"),
    [
        (1.1e6, 103.0, REPRODUCES, "within 5%"),
        (1.1e6, 130.0, CONTRADICTS, "EGRU better by 30%"),
        (5e6, 100.0, CANNOT_TELL, "no pruned LSTM within 1.25×"),
    ],
)
def test_dense_egru_against_pruned_lstm_at_equal_macs(lstm_macs, lstm_ppl, verdict, why):
    records = [
        result("egru", macs=1e6, ppl=100.0),
        result("lstm", model="lstm", macs=20e6, ppl=90.0, activity=1.0),
        result("lstm-p90", model="lstm", target=0.9, macs=lstm_macs, ppl=lstm_ppl, activity=1.0),
    ]
    found = fnd.equal_macs(records)
    assert found.verdict == verdict and found.reason.startswith(why)
    assert "vs LSTM 90% pruned" in found.measured


# ---------------------------------------------------------------- optimum weight decay


@pytest.mark.parametrize(
    ("ppl", "verdict", "why"),
    [
        ({0.01: 110, 0.1: 100, 0.3: 105}, REPRODUCES, "lowest at 0.1, inside the range"),
        ({0.01: 110, 0.1: 105, 0.3: 100}, CONTRADICTS, "lowest at the end 0.3"),
        ({0.001: 110, 0.01: 105, 0.05: 100}, CANNOT_TELL, "lowest at the end 0.05; the range"),
        ({0.01: 110, 0.1: 100}, CANNOT_TELL, "dense EGRUs at fewer than three"),
    ],
)
def test_optimum_weight_decay(ppl, verdict, why):
    records = [result(f"wd{wd}", wd=wd, valid=p, ppl=p + 3) for wd, p in ppl.items()]
    found = fnd.optimum_decay(records)
    assert found.verdict == verdict and found.reason.startswith(why)


def test_every_claim_has_a_row_and_a_stated_rule():
    rows = fnd.findings([result("dense")], {})
    assert len(rows) == len(fnd.RULES) - 1 == 6  # the first rule is the shared one
    assert all(r.verdict == CANNOT_TELL for r in rows)
