"""Tables of the trainability study: per setting and seed, the validation perplexity after
training (last 'epoch' line of metrics.jsonl), the unigram reference, and per layer the
activity and the fractions of units active at every position / never active
(activity-valid.json); the cpu-small-egru runs (item 5) and the paper-size runs (item 4)
with their learning curves, and a figure of the learning curves (curves.png, beside this
script, when matplotlib is installed).

Every finished run is also kept in runs.jsonl beside this script (one record per run, the
run folder's values win over an older record of the same run), so runs whose folders are
gone (a study folder lives outside the work tree) still count in the tables."""

import json
import math
import os
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

root = Path(os.environ.get("STUDY_DIR", os.getcwd()))
brown = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/brown")
here = Path(__file__).resolve().parent
store = here / "runs.jsonl"


def tokens(path):
    for line in path.read_text().splitlines():
        yield from line.split()
        yield "<eos>"


counts = Counter(tokens(brown / "train.txt"))
total = sum(counts.values())
valid = list(tokens(brown / "valid.txt"))
unigram = math.exp(-sum(math.log(counts[t] / total) for t in valid) / len(valid))
print(f"unigram valid perplexity (train frequencies): {unigram:.1f}\n")


def validations(run):
    """Validation records of a run in order; the last record per position wins."""
    by_position = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("valid_ppl") is not None and rec.get("event") != "progress":
            by_position[rec["epoch"]] = rec
    return [by_position[k] for k in sorted(by_position)]


def from_folder(run):
    """The record of a finished run folder (runs/NAME-sSEED with .study-done)."""
    setting, seed = run.name.rsplit("-s", 1)
    kind = (
        "paper" if setting.startswith("paper-") else "cs" if setting.startswith("cs-") else "small"
    )
    if kind == "paper":  # validations inside epochs too: each budget chunk ends with one
        recs = validations(run)
    else:
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        recs = [e for e in lines if e.get("event") == "epoch"]
    record = {
        "run": run.name,
        "setting": setting,
        "seed": int(seed),
        "kind": kind,
        "valid_ppl": recs[-1]["valid_ppl"],
        "curve": [r["valid_ppl"] for r in recs],
    }
    if kind == "paper":
        record["minutes"] = [r["elapsed_seconds"] / 60 for r in recs]
        record["epochs"] = [r["epoch"] for r in recs]
        record["tokens_per_s"] = [r.get("tokens_per_s") for r in recs]
    act = run / "activity-valid.json"
    if act.exists():
        layers = json.loads(act.read_text())["layers"]
        record["activity"] = [layer["activity"] for layer in layers]
        record["always_active"] = [
            layer["always_active_units"] / layer["units"] for layer in layers
        ]
        record["never_active"] = [layer["dead_units"] / layer["units"] for layer in layers]
    commits = Path(f"{run}.meta") / "commits"
    if commits.exists():
        record["code"] = commits.read_text().split()[-1][:7]
    record["source"] = "run folder"
    return record


records = {}
if store.exists():
    for line in store.read_text().splitlines():
        rec = json.loads(line)
        records[rec["run"]] = rec
for run in sorted((root / "runs").glob("*-s*")):
    if not run.suffix and (run / ".study-done").exists():
        records[run.name] = from_folder(run)
tmp = store.with_suffix(".tmp")
tmp.write_text("".join(json.dumps(r) + "\n" for r in records.values()))
tmp.replace(store)

# settings in queue order (queue.txt of the study folder, else the one beside this script)
queue = root / "queue.txt" if (root / "queue.txt").exists() else here / "queue.txt"
lines = [
    line.split()[1:3] if line.startswith(("#done", "#later")) else line.split()[:2]
    for line in queue.read_text().splitlines()
    if line.strip() and (not line.startswith("#") or line.startswith(("#done", "#later")))
]
# seed 1 of every setting in queue order first, so settings keep the order they were planned in
order = [
    name for _, _, name in sorted((int(seed), i, name) for i, (name, seed) in enumerate(lines))
]
order = list(dict.fromkeys(order + sorted({r["setting"] for r in records.values()})))
by_setting = defaultdict(list)
for rec in sorted(records.values(), key=lambda r: r["seed"]):
    by_setting[rec["setting"]].append(rec)
small = [s for s in order if by_setting[s] and by_setting[s][0]["kind"] == "small"]
one_epoch = [s for s in small if not s.endswith("-3ep")]
item5 = [s for s in order if by_setting[s] and by_setting[s][0]["kind"] == "cs"]
paper = [s for s in order if by_setting[s] and by_setting[s][0]["kind"] == "paper"]


def fmt(xs):
    return " / ".join(f"{x:.2f}" for x in xs)


def mean_layers(lists):
    return [statistics.mean(column) for column in zip(*lists, strict=True)]


def rate(rec):
    """The range of the training throughput over a run's chunks (tokens/s)."""
    values = [v for v in rec.get("tokens_per_s") or [] if v]
    return f"{min(values):.0f}–{max(values):.0f}" if values else "-"


def curve(rec):
    return " → ".join(f"{p:.1f}" for p in rec["curve"])


print("| setting | seed | valid ppl | / unigram | activity | always active | never active |")
print("|---|---|---|---|---|---|---|")
for name in one_epoch:
    for r in by_setting[name]:
        cells = [name, str(r["seed"]), f"{r['valid_ppl']:.1f}", f"{r['valid_ppl'] / unigram:.3f}"]
        cells += [fmt(r["activity"]), fmt(r["always_active"]), fmt(r["never_active"])]
        print("| " + " | ".join(cells) + " |")


def summary(names):
    print("| setting | seeds | valid ppl mean ± std | activity | always active | never active |")
    print("|---|---|---|---|---|---|")
    for name in names:
        runs = by_setting[name]
        ppls = [r["valid_ppl"] for r in runs]
        sd = f"{statistics.stdev(ppls):.1f}" if len(ppls) > 1 else "-"
        means = [
            fmt(mean_layers([r[k] for r in runs]))
            for k in ("activity", "always_active", "never_active")
        ]
        cells = [name, str(len(ppls)), f"{statistics.mean(ppls):.1f} ± {sd}", *means]
        print("| " + " | ".join(cells) + " |")


print()
summary(one_epoch)

print("\nRuns longer than one epoch (validation perplexity after each epoch):\n")
print("| run | valid ppl per epoch | / unigram | activity | always active | never active |")
print("|---|---|---|---|---|---|")
for name in [s for s in small if s.endswith("-3ep")] + item5:
    for r in by_setting[name]:
        cells = [f"{name} s{r['seed']}", curve(r), f"{r['valid_ppl'] / unigram:.3f}"]
        cells += [fmt(r["activity"]), fmt(r["always_active"]), fmt(r["never_active"])]
        print("| " + " | ".join(cells) + " |")
if any(len(by_setting[s]) > 1 for s in item5):
    print("\nItem 5 per setting (2 epochs):\n")
    summary(item5)

print("\nPaper-size presets on Brown, in chunks (a validation closes each, and each epoch):\n")
print(
    "| preset | seed | epochs trained | minutes | valid ppl per validation | / unigram "
    "| tokens/s | activity | never active |"
)
print("|---|---|---|---|---|---|---|---|---|")
for name in paper:
    for r in by_setting[name]:
        cells = [
            name,
            str(r["seed"]),
            f"{r['epochs'][-1]:.2f}",
            " / ".join(f"{m:.1f}" for m in r["minutes"]),
            curve(r),
            f"{r['valid_ppl'] / unigram:.3f}",
            rate(r),
            fmt(r["activity"]) if "activity" in r else "-",
            fmt(r["never_active"]) if "never_active" in r else "-",
        ]
        print("| " + " | ".join(cells) + " |")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
except ImportError:
    sys.exit(0)
fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 5))
for name in small:
    for r in by_setting[name]:
        if len(r["curve"]) > 1:
            left.plot(
                range(1, len(r["curve"]) + 1), r["curve"], marker="o", label=f"{name} s{r['seed']}"
            )
left.set(xlabel="epoch", ylabel="validation perplexity", title="small EGRU, 3 epochs")
colours = plt.get_cmap("tab20").colors
for index, name in enumerate(item5):  # one colour per setting, a line per seed
    for k, r in enumerate(by_setting[name]):
        middle.plot(
            range(1, len(r["curve"]) + 1),
            r["curve"],
            marker="o",
            color=colours[index % len(colours)],
            label=f"{name} ({len(by_setting[name])} seeds)" if k == 0 else None,
        )
middle.set(xlabel="epoch", ylabel="validation perplexity", title="cpu-small-egru variants (item 5)")
styles = ("-", "--", ":")
for index, name in enumerate(paper):  # one colour per setting, a line style per seed
    for r in by_setting[name]:
        right.plot(
            r["minutes"],
            r["curve"],
            marker="o",
            color=colours[(2 * index) % len(colours)],
            linestyle=styles[(r["seed"] - 1) % len(styles)],
            label=f"{name} s{r['seed']}",
        )
right.set(xlabel="minutes of training", ylabel="validation perplexity", title="paper-size presets")
right.set_yscale("log")
for axes in (left, middle):
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
for axes in (left, middle, right):
    axes.axhline(unigram, color="grey", linestyle="--", label="unigram")
    axes.legend(fontsize=6 if axes is middle else 7, ncol=2 if axes is middle else 1)
fig.tight_layout()
fig.savefig(here / "curves.png", dpi=110)
