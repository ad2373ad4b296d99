"""Tables of the trainability study: per setting and seed, the validation perplexity after
training (last 'epoch' line of metrics.jsonl), the unigram reference, and per layer the
activity and the fraction of units active at every position (activity-valid.json); the
paper-size runs (item 4) with their learning curves, and a figure of all learning curves
(curves.png, beside this script, when matplotlib is installed)."""

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
paper = [name for name in order if name.startswith("paper-")]
order = [name for name in order if name not in paper]
item5 = [name for name in order if name.startswith("cs-")]  # cpu-small-egru, 2 epochs
order = [name for name in order if name not in item5]
rows = defaultdict(list)
for name in order + item5:
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

print("\nItem 5, cpu-small-egru (emb 200, 512/256) for 2 epochs, seed 1:\n")
print("| run | valid ppl after epoch 1 → 2 | / unigram | activity | always active | never active |")
print("|---|---|---|---|---|---|")
for name in item5:
    for seed, ppl, a, always, dead, curve in rows[name]:
        cells = [f"{name} s{seed}", " → ".join(f"{p:.1f}" for p in curve), f"{ppl / unigram:.3f}"]
        print("| " + " | ".join(cells + [fmt(a), fmt(always), fmt(dead)]) + " |")


def records(run):
    """Validation records of a run in order; the last record per position wins."""
    by_position = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("valid_ppl") is not None and rec.get("event") != "progress":
            by_position[rec["epoch"]] = rec
    return [by_position[k] for k in sorted(by_position)]


print("\nPaper-size presets on Brown, in chunks of 8.33 minutes (a validation closes each):\n")
print("| preset | seed | epochs trained | minutes | valid ppl per chunk | / unigram | activity |")
print("|---|---|---|---|---|---|---|")
curves = {}
for name in paper:
    for run in sorted((root / "runs").glob(f"{name}-s*")):
        if run.suffix or not (run / ".study-done").exists():
            continue
        recs = records(run)
        curves[run.name] = [(r["elapsed_seconds"] / 60, r["valid_ppl"]) for r in recs]
        act = run / "activity-valid.json"
        activity = "-"
        if act.exists():
            activity = fmt(layer["activity"] for layer in json.loads(act.read_text())["layers"])
        last = recs[-1]
        cells = [
            name,
            run.name.rsplit("-s", 1)[1],
            f"{last['epoch']:.2f}",
            f"{last['elapsed_seconds'] / 60:.1f}",
            " → ".join(f"{r['valid_ppl']:.1f}" for r in recs),
            f"{last['valid_ppl'] / unigram:.3f}",
            activity,
        ]
        print("| " + " | ".join(cells) + " |")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(0)
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for name in order + item5:
    for seed, *_, curve in rows[name]:
        if len(curve) > 1:
            left.plot(range(1, len(curve) + 1), curve, marker="o", label=f"{name} s{seed}")
left.axhline(unigram, color="grey", linestyle="--", label="unigram")
left.set(xlabel="epoch", ylabel="validation perplexity", title="runs longer than one epoch")
left.legend(fontsize=7)
for label, curve in curves.items():
    right.plot(*zip(*curve, strict=True), marker="o", label=label)
right.axhline(unigram, color="grey", linestyle="--", label="unigram")
right.set(xlabel="minutes of training", ylabel="validation perplexity", title="paper-size presets")
right.set_yscale("log")
right.legend(fontsize=7)
fig.tight_layout()
fig.savefig(Path(__file__).with_name("curves.png"), dpi=110)
