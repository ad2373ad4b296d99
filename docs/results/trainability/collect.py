"""Table of the trainability study: per setting and seed, the validation perplexity after
training (last 'epoch' line of metrics.jsonl), the unigram reference, and per layer the
activity and the fraction of units active at every position (activity-valid.json)."""

import json
import math
import os
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

root = Path(os.environ.get("STUDY_DIR", os.getcwd()))
brown = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/brown")


def tokens(path):
    for line in path.read_text().splitlines():
        yield from line.split()
        yield "<eos>"


counts = Counter(tokens(brown / "train.txt"))
total = sum(counts.values())
valid = list(tokens(brown / "valid.txt"))
unigram = math.exp(-sum(math.log(counts[t] / total) for t in valid) / len(valid))
print(f"unigram valid perplexity (train frequencies): {unigram:.1f}\n")

order = [
    line.split()[0]
    for line in (root / "queue.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
order = list(dict.fromkeys(order))
rows = defaultdict(list)
for name in order:
    for run in sorted((root / "runs").glob(f"{name}-s*")):
        if run.suffix or not (run / ".study-done").exists():
            continue
        if run.name.rsplit("-s", 1)[0] != name:
            continue
        epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        last = [e for e in epochs if e.get("event") == "epoch"][-1]
        act = json.loads((run / "activity-valid.json").read_text())
        layers = act["layers"]
        rows[name].append(
            (
                run.name.rsplit("-s", 1)[1],
                last["valid_ppl"],
                [line["activity"] for line in layers],
                [line["always_active_units"] / line["units"] for line in layers],
                [line["dead_units"] / line["units"] for line in layers],
                [e["valid_ppl"] for e in epochs if e.get("event") == "epoch"],
            )
        )


def fmt(xs):
    return " / ".join(f"{x:.2f}" for x in xs)


def mean_layers(lists):
    return [statistics.mean(column) for column in zip(*lists, strict=True)]


HEAD = "| setting | seed | valid ppl | / unigram | activity | always active | never active |"
print(HEAD)
print("|---|---|---|---|---|---|---|")
for name in order:
    for seed, ppl, a, always, dead, _ in rows[name]:
        cells = [name, seed, f"{ppl:.1f}", f"{ppl / unigram:.3f}", fmt(a), fmt(always), fmt(dead)]
        print("| " + " | ".join(cells) + " |")

print("\n| setting | seeds | valid ppl mean ± std | activity | always active | never active |")
print("|---|---|---|---|---|---|")
for name in order:
    if not rows[name]:
        continue
    ppls = [r[1] for r in rows[name]]
    sd = f"{statistics.stdev(ppls):.1f}" if len(ppls) > 1 else "-"
    means = [fmt(mean_layers([r[k] for r in rows[name]])) for k in (2, 3, 4)]
    print(
        f"| {name} | {len(ppls)} | {statistics.mean(ppls):.1f} ± {sd} | " + " | ".join(means) + " |"
    )

print("\nLearning curves (validation perplexity after each epoch) of runs longer than one epoch:\n")
for name in order:
    for seed, *_, curve in rows[name]:
        if len(curve) > 1:
            print(f"- {name} seed {seed}: " + " → ".join(f"{p:.1f}" for p in curve))
