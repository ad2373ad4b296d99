"""The findings table: each claim of the paper, the number this sweep measured for it,
and a verdict (reproduces / contradicts / cannot tell) by an explicit rule.

Every rule is computed from the results records and the runs' learning curves; the
thresholds are the constants below, and ``RULES`` states them in the report. Seed
spread: a difference counts only when it exceeds NOISE_FACTOR × the largest sample
std over seeds of the cells it compares (0 when every cell has one seed, which the
measured text then says). A claim about trained models cannot be told when a run it
rests on had not settled (``curves.SETTLED_RULE``).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from dualsparse.reports import records as rec

REPRODUCES, CONTRADICTS, CANNOT_TELL = "reproduces", "contradicts", "cannot tell"

NOISE_FACTOR = 2.0
MAC_TOLERANCE = 1.25  # exact / (λa·λw·dense) within [1/1.25, 1.25]
MIN_WEIGHT_SPARSITY = 0.1  # runs with both sparsities, for the MAC rule
DECAY_SPAN = 10.0  # the weight decays must span this factor (or start at 0)
ACTIVITY_CONTROL = 0.25  # weight decay must move activity by this share of its largest value
BIAS_SHARE = 0.5  # bias decay's effect at most this share of weight decay's
PRUNE_TARGETS = (0.79, 0.86)  # "80–85%"
PAPER_PPL = 57.3  # the paper's PTB perplexity scale (AWD-LSTM 57.3; EGRU 57–59)
PRUNE_COST = 2.0 / PAPER_PPL  # "under ~2 points" as a fraction of the dense perplexity
MODERATE_SPARSITY = 0.8  # "until high sparsity": targets up to this one
FLAT_ACTIVITY, CHANGED_ACTIVITY = 0.10, 0.25  # relative activity change
EQUAL_MACS = 1.25  # LSTM MACs within a factor of the EGRU's
PPL_MATCH = 0.05  # relative perplexity difference that still "matches"
PAPER_OPTIMUM = (0.1, 0.14)  # weight decays of the paper's best runs (PTB, WT2 Fig. 2)

RULES = [
    f"Differences count only beyond {NOISE_FACTOR:g} × the largest seed std (sample) of "
    "the cells compared; a claim about trained runs cannot be told while any run it uses "
    "had not settled.",
    f"MACs multiply: exact event MACs / (λa·λw·dense) of every EGRU with weight sparsity ≥ "
    f"{MIN_WEIGHT_SPARSITY:g} within [1/{MAC_TOLERANCE:g}, {MAC_TOLERANCE:g}] → reproduces; "
    "median outside → contradicts; else cannot tell.",
    f"Weight decay controls activity: dense EGRUs at one bias decay, weight decays spanning "
    f"≥ {DECAY_SPAN:g}× (or from 0); the range of activity over weight decays must be ≥ "
    f"{ACTIVITY_CONTROL:.0%} of its largest value (below → contradicts), and the range over "
    f"bias decays at one weight decay ≤ {BIAS_SHARE:g} × that → reproduces (≥ it → "
    "contradicts).",
    f"Pruning to 80–85%: per pruning setting (steps, lr, chained), the mean relative test "
    f"perplexity cost over the dense run of the same seed; the best setting ≤ "
    f"{PRUNE_COST:.1%} (2 points at perplexity {PAPER_PPL:g}) → reproduces; above by more "
    "than the seed spread → contradicts.",
    f"Activity vs weight sparsity: mean relative activity change from the dense run at "
    f"targets ≤ {MODERATE_SPARSITY:.0%}; largest ≤ {FLAT_ACTIVITY:.0%} → reproduces, > "
    f"{CHANGED_ACTIVITY:.0%} → contradicts.",
    f"Equal MACs: the dense EGRU and pruned LSTM cells closest in event MACs (within "
    f"{EQUAL_MACS:g}×); test perplexities within {PPL_MATCH:.0%} → reproduces, further → "
    "contradicts.",
    f"Optimum weight decay: ≥ 3 weight decays of dense EGRUs at one bias decay; validation "
    f"perplexity lowest at an inner decay, both ends worse → reproduces; lowest at an end "
    f"of a range that holds {PAPER_OPTIMUM[0]:g}–{PAPER_OPTIMUM[1]:g} → contradicts.",
]


@dataclass
class Finding:
    claim: str
    measured: str
    verdict: str
    reason: str
    runs: list[str]

    def __post_init__(self) -> None:
        self.runs = list(dict.fromkeys(self.runs))  # a dense run shared by pairs, once

    def row(self) -> list[str]:
        return [self.claim, self.measured, self.verdict, self.reason]


COLUMNS = ["claim of the paper", "measured in this sweep", "verdict", "why"]
Settled = dict[str, bool | None]


def _cells(records: list[rec.Record], key: Callable) -> dict:
    return rec.group_by(records, key)


def _mean(runs: list[rec.Record], value: Callable[[rec.Record], float]) -> float:
    return rec.mean_std([value(r) for r in runs])[0]


def _noise(cells: list[list[rec.Record]], value: Callable[[rec.Record], float]) -> float:
    stds = [rec.mean_std([value(r) for r in c])[1] for c in cells]
    return NOISE_FACTOR * max([s for s in stds if math.isfinite(s)], default=0.0)


def _seeds_note(cells: list[list[rec.Record]]) -> str:
    return "" if any(len(c) > 1 for c in cells) else "; one seed per cell, no spread"


def _dense_partner(record: rec.Record, records: list[rec.Record]) -> rec.Record | None:
    key = (record["model"], record["weight_decay"], record["bias_decay"], record.get("seed"))
    return next(
        (
            r
            for r in rec.dense(records)
            if (r["model"], r["weight_decay"], r["bias_decay"], r.get("seed")) == key
        ),
        None,
    )


def macs_multiply(records: list[rec.Record]) -> Finding:
    claim = "MACs multiply: event MACs ≈ λa·λw·dense"
    runs = [
        r
        for r in records
        if r["model"] == "egru" and rec.number(r, "weight_sparsity") >= MIN_WEIGHT_SPARSITY
    ]
    ratios = [
        rec.event_macs(r) / rec.number(r, "macs.rnn.estimated_macs_per_token")
        for r in runs
        if rec.number(r, "macs.rnn.estimated_macs_per_token") > 0
    ]
    if not ratios:
        return Finding(claim, "—", CANNOT_TELL, "no pruned EGRU run", [])
    median = statistics.median(ratios)
    measured = (
        f"exact / estimate: median {median:.3f}, range {min(ratios):.3f}–{max(ratios):.3f} "
        f"over {len(ratios)} pruned EGRU runs"
    )
    inside = [1 / MAC_TOLERANCE <= x <= MAC_TOLERANCE for x in ratios]
    names = [rec.name(r) for r in runs]
    if all(inside):
        return Finding(claim, measured, REPRODUCES, "every run within the tolerance", names)
    if not 1 / MAC_TOLERANCE <= median <= MAC_TOLERANCE:
        return Finding(claim, measured, CONTRADICTS, "the median is outside the tolerance", names)
    return Finding(claim, measured, CANNOT_TELL, f"{inside.count(False)} runs outside", names)


def decay_controls_activity(records: list[rec.Record]) -> Finding:
    claim = "weight decay controls activity; bias decay much less"
    bd = rec.fixed_bias_decay(records)
    dense = rec.dense(records, "egru")
    by_wd = _cells([r for r in dense if r["bias_decay"] == bd], lambda r: r["weight_decay"])
    if len(by_wd) < 2:
        return Finding(claim, "—", CANNOT_TELL, "dense EGRUs at fewer than two weight decays", [])
    means = {wd: _mean(c, rec.activity) for wd, c in by_wd.items()}
    wds = list(by_wd)
    effect = max(means.values()) - min(means.values())
    relative = effect / max(max(means.values()), 1e-12)
    by_bd = _cells(dense, lambda r: (r["weight_decay"], r["bias_decay"]))
    bias_effects, cells = [], list(by_wd.values())
    for wd in sorted({wd for wd, _ in by_bd}):
        at_wd = {b: c for (w, b), c in by_bd.items() if w == wd}
        if len(at_wd) > 1:
            values = [_mean(c, rec.activity) for c in at_wd.values()]
            bias_effects.append(max(values) - min(values))
            cells += list(at_wd.values())
    bias_effect = max(bias_effects) if bias_effects else None
    noise = _noise(cells, rec.activity)
    measured = (
        f"activity {min(means.values()):.3f}–{max(means.values()):.3f} over weight decays "
        f"{wds[0]:g}–{wds[-1]:g} (range {effect:.3f}, {relative:.0%}) at bias decay {bd:g}; "
        + (
            f"range over bias decays {bias_effect:.3f}"
            if bias_effect is not None
            else "one bias decay only"
        )
        + _seeds_note(cells)
    )
    names = [rec.name(r) for c in cells for r in c]
    if wds[0] > 0 and wds[-1] / wds[0] < DECAY_SPAN:
        return Finding(claim, measured, CANNOT_TELL, f"weight decays span < {DECAY_SPAN:g}×", names)
    if effect <= noise:
        return Finding(claim, measured, CANNOT_TELL, "seed spread larger than the effect", names)
    if relative < ACTIVITY_CONTROL:
        why = f"weight decay moved activity by only {relative:.0%}"
        return Finding(claim, measured, CONTRADICTS, why, names)
    if bias_effect is None:
        return Finding(claim, measured, CANNOT_TELL, "only one bias decay was trained", names)
    if bias_effect >= effect:
        why = "bias decay moved activity as much as weight decay"
        return Finding(claim, measured, CONTRADICTS, why, names)
    if bias_effect <= BIAS_SHARE * effect:
        return Finding(claim, measured, REPRODUCES, "both rules hold", names)
    why = f"bias decay's effect is {bias_effect / effect:.0%} of weight decay's"
    return Finding(claim, measured, CANNOT_TELL, why, names)


def pruning_cost(records: list[rec.Record]) -> Finding:
    claim = "pruning to 80–85% costs under ~2 perplexity points"
    low, high = PRUNE_TARGETS
    pairs = [
        (r, d)
        for r in records
        if r["model"] == "egru" and low <= rec.target(r) <= high
        if (d := _dense_partner(r, records)) is not None
    ]
    if not pairs:
        return Finding(claim, "—", CANNOT_TELL, "no EGRU pruned to 80–85% with its dense run", [])
    settings = _cells(pairs, lambda p: rec.pruning(p[0]))
    costs = {}
    for key, members in settings.items():
        relative = [(rec.test_ppl(r) - rec.test_ppl(d)) / rec.test_ppl(d) for r, d in members]
        points = [rec.test_ppl(r) - rec.test_ppl(d) for r, d in members]
        costs[key] = (*rec.mean_std(relative), rec.mean_std(points)[0], len(members))
    best = min(costs, key=lambda k: costs[k][0])
    cost, spread, points, seeds = costs[best]
    target, steps, lr, chained = best
    measured = (
        f"best: {target:.0%} in {steps} step(s), lr {rec.lr_label(lr)}"
        f"{'' if chained else ', from dense'}: {points:+.2f} points ({cost:+.1%}) over "
        f"{seeds} seed(s), spread {spread:.1%}; {len(costs)} setting(s)"
    )
    names = [rec.name(x) for p in pairs for x in p]
    if cost <= PRUNE_COST:
        return Finding(claim, measured, REPRODUCES, f"cost ≤ {PRUNE_COST:.1%}", names)
    if cost - PRUNE_COST > NOISE_FACTOR * spread:
        return Finding(claim, measured, CONTRADICTS, f"cost > {PRUNE_COST:.1%}", names)
    return Finding(claim, measured, CANNOT_TELL, "seed spread larger than the excess", names)


def activity_flat(records: list[rec.Record]) -> Finding:
    claim = "activity barely changes with weight sparsity until high sparsity"
    pairs = [
        (r, d)
        for r in records
        if r["model"] == "egru" and 0 < rec.target(r) <= MODERATE_SPARSITY
        if (d := _dense_partner(r, records)) is not None
    ]
    if not pairs:
        why = f"no EGRU pruned to ≤ {MODERATE_SPARSITY:.0%} with its dense run"
        return Finding(claim, "—", CANNOT_TELL, why, [])
    # one entry per target and way of pruning: "80%", or "80% (2 steps, from dense)" where
    # a sweep prunes to one target in several ways (their runs are not seeds of one setting)
    by_way = _cells(pairs, lambda p: rec.pruning(p[0]))
    ways_per_target = Counter(way[0] for way in by_way)

    def label(way: tuple, runs: list) -> str:
        if ways_per_target[way[0]] == 1:
            return f"{way[0]:.0%}"
        return f"{way[0]:.0%} ({rec.pruning_label(runs[0][0])})"

    changes = {
        label(way, m): rec.mean_std(
            [(rec.activity(r) - rec.activity(d)) / rec.activity(d) for r, d in m]
        )[0]
        for way, m in by_way.items()
    }
    worst = max(changes, key=lambda t: abs(changes[t]))
    dense_cells = list(_cells([d for _, d in pairs], lambda r: r["weight_decay"]).values())
    dense_mean = _mean([d for _, d in pairs], rec.activity)
    noise = _noise(dense_cells, rec.activity) / max(dense_mean, 1e-12)
    measured = "relative activity change from dense: " + ", ".join(
        f"{t} {c:+.1%}" for t, c in changes.items()
    )
    names = [rec.name(x) for p in pairs for x in p]
    if abs(changes[worst]) <= FLAT_ACTIVITY:
        return Finding(claim, measured, REPRODUCES, f"all within {FLAT_ACTIVITY:.0%}", names)
    if abs(changes[worst]) > max(CHANGED_ACTIVITY, noise):
        why = f"{changes[worst]:+.0%} at {worst}"
        return Finding(claim, measured, CONTRADICTS, why, names)
    why = f"change between {FLAT_ACTIVITY:.0%} and {CHANGED_ACTIVITY:.0%} or within the spread"
    return Finding(claim, measured, CANNOT_TELL, why, names)


def equal_macs(records: list[rec.Record]) -> Finding:
    claim = "a dense activity-sparse EGRU matches a weight-sparse LSTM at equal MACs"
    egru = _cells(rec.dense(records, "egru"), lambda r: (r["weight_decay"], r["bias_decay"]))
    lstm = _cells(
        [r for r in records if r["model"] == "lstm" and rec.target(r) > 0],
        lambda r: (r["weight_decay"], r["bias_decay"], *rec.pruning(r)),
    )
    if not egru or not lstm:
        return Finding(claim, "—", CANNOT_TELL, "needs dense EGRU and pruned LSTM runs", [])
    pairs = [(e, s) for e in egru.values() for s in lstm.values()]
    e, s = min(
        pairs,
        key=lambda p: abs(math.log(_mean(p[1], rec.event_macs) / _mean(p[0], rec.event_macs))),
    )
    macs_ratio = _mean(s, rec.event_macs) / _mean(e, rec.event_macs)
    e_ppl, s_ppl = _mean(e, rec.test_ppl), _mean(s, rec.test_ppl)
    diff = (s_ppl - e_ppl) / e_ppl
    noise = _noise([e, s], rec.test_ppl) / e_ppl
    measured = (
        f"EGRU wd {e[0]['weight_decay']:g} {e_ppl:.2f} at {_mean(e, rec.event_macs) / 1e6:.4f}M "
        f"vs LSTM {rec.target(s[0]):.0%} pruned {s_ppl:.2f} at "
        f"{_mean(s, rec.event_macs) / 1e6:.4f}M (LSTM {diff:+.1%})" + _seeds_note([e, s])
    )
    names = [rec.name(r) for r in e + s]
    if not 1 / EQUAL_MACS <= macs_ratio <= EQUAL_MACS:
        why = f"no pruned LSTM within {EQUAL_MACS:g}× of the EGRU's MACs ({macs_ratio:.2f}×)"
        return Finding(claim, measured, CANNOT_TELL, why, names)
    if abs(diff) <= PPL_MATCH:
        return Finding(claim, measured, REPRODUCES, f"within {PPL_MATCH:.0%}", names)
    if abs(diff) > noise:
        better = "EGRU" if diff > 0 else "LSTM"
        return Finding(claim, measured, CONTRADICTS, f"{better} better by {abs(diff):.0%}", names)
    return Finding(claim, measured, CANNOT_TELL, "seed spread larger than the gap", names)


def optimum_decay(records: list[rec.Record]) -> Finding:
    claim = "an optimum weight decay for perplexity"
    bd = rec.fixed_bias_decay(records)
    by_wd = _cells(
        [r for r in rec.dense(records, "egru") if r["bias_decay"] == bd],
        lambda r: r["weight_decay"],
    )
    if len(by_wd) < 3:
        return Finding(claim, "—", CANNOT_TELL, "dense EGRUs at fewer than three weight decays", [])
    ppl = {wd: _mean(c, rec.valid_ppl) for wd, c in by_wd.items()}
    wds = list(ppl)
    best = min(ppl, key=ppl.get)
    noise = _noise(list(by_wd.values()), rec.valid_ppl)
    measured = (
        "validation perplexity by weight decay: "
        + ", ".join(f"{wd:g} {p:.2f}" for wd, p in ppl.items())
        + _seeds_note(list(by_wd.values()))
    )
    names = [rec.name(r) for c in by_wd.values() for r in c]
    ends = (wds[0], wds[-1])
    if best not in ends and all(ppl[end] - ppl[best] > noise for end in ends):
        return Finding(claim, measured, REPRODUCES, f"lowest at {best:g}, inside the range", names)
    if best in ends:
        neighbour = wds[1] if best == wds[0] else wds[-2]
        spans_paper = wds[0] <= PAPER_OPTIMUM[0] and wds[-1] >= PAPER_OPTIMUM[1]
        if spans_paper and ppl[neighbour] - ppl[best] > noise:
            why = f"lowest at the end {best:g} of a range holding the paper's optimum"
            return Finding(claim, measured, CONTRADICTS, why, names)
        if not spans_paper:
            low, high = PAPER_OPTIMUM
            why = f"lowest at the end {best:g}; the range misses {low:g}–{high:g}"
            return Finding(claim, measured, CANNOT_TELL, why, names)
    return Finding(claim, measured, CANNOT_TELL, "differences within the seed spread", names)


def findings(records: list[rec.Record], settled: Settled) -> list[Finding]:
    """Every claim's finding; those about trained runs (all but the MAC identity) become
    'cannot tell' while a run they rest on had not settled."""
    out = [macs_multiply(records)]
    for rule in (decay_controls_activity, pruning_cost, activity_flat, equal_macs, optimum_decay):
        found = rule(records)
        unsettled = [n for n in found.runs if settled.get(n) is False]
        if unsettled and found.verdict != CANNOT_TELL:
            shown = ", ".join(unsettled[:3]) + (" …" if len(unsettled) > 3 else "")
            found.reason = (
                f"{len(unsettled)} of its {len(found.runs)} runs had not settled: {shown} "
                f"(by the rule alone: {found.verdict}, {found.reason})"
            )
            found.verdict = CANNOT_TELL
        unknown = [n for n in found.runs if settled.get(n) is None]
        if unknown:
            found.reason += f"; whether {len(unknown)} of its runs settled cannot be told"
        out.append(found)
    return out
