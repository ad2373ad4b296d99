"""Sweep specs with a pruning grid: steps × fine-tuning lr per target, chained and
unchained series side by side, the report's figures; and a real tiny sweep in which a
2-step prune with its own fine-tuning rate runs as asked."""

import hashlib
import json

import pytest
from test_runner import _runs_use_this_checkout, make_sweep, result, tiny_group  # noqa: F401

from conftest import error_message
from dualsparse.cli import main
from dualsparse.sweeps.spec import FIGURES, load_spec, parse_spec

DENSE = "egru-wd0.01-bd0-s1"


def jobs_of(prune: dict, sparsity: list[float], **top) -> dict:
    """Job name → Job of a one-group spec (cpu-fast-egru, seed 1, its weight decay 0.01)."""
    group = {"name": "egru", "preset": "cpu-fast-egru", "seeds": [1]}
    data = {"name": "t", **top, "groups": [{**group, "sparsity": sparsity, "prune": prune}]}
    return {job.name: job for job in parse_spec(data, "test", None).job_list}


def grid_meta(jobs: dict) -> dict:
    """Name → (source, target, prune_steps, finetune_lr, chained), from the report's keys."""
    keys = ("source", "target_sparsity", "prune_steps", "finetune_lr", "chained")
    return {name: tuple(job.meta()[k] for k in keys) for name, job in jobs.items()}


def test_steps_lr_grid_chained_and_unchained():
    jobs = jobs_of(
        {"steps": [1, 2], "lr": [None, 0.0005], "chain": [True, False]}, sparsity=[0.8, 0.6]
    )
    expected = {DENSE: (None, 0.0, 0, None, False)}
    for steps, k in ((1, ""), (2, "-k2")):
        for lr, lr_name in ((None, ""), (0.0005, "-lr0.0005")):
            p60, p80 = f"{DENSE}-p60{k}{lr_name}", f"{DENSE}-p80{k}{lr_name}"
            expected[p60] = (DENSE, 0.6, steps, lr, True)  # one chain per (steps, lr)
            expected[p80] = (p60, 0.8, steps, lr, True)
            expected[p60 + "-u"] = (DENSE, 0.6, steps, lr, False)
            expected[p80 + "-u"] = (DENSE, 0.8, steps, lr, False)
    assert grid_meta(jobs) == expected  # 1 dense + 2 series × 4 combinations × 2 targets
    pruned = jobs[f"{DENSE}-p80-k2-lr0.0005-u"]
    assert pruned.prune == {"steps": 2, "finetune_epochs": 1, "lr": 0.0005}


def test_per_target_grid_unchained():
    """Fig. 3's layout: only the high targets get a steps grid, each from the dense run."""
    jobs = jobs_of(
        {"chain": False, "finetune_epochs": 2, "targets": {0.9: {"steps": [1, 2, 4]}}},
        sparsity=[0.4, 0.9],
    )
    assert grid_meta(jobs) == {
        DENSE: (None, 0.0, 0, None, False),
        f"{DENSE}-p40-u": (DENSE, 0.4, 1, None, False),
        f"{DENSE}-p90-u": (DENSE, 0.9, 1, None, False),
        f"{DENSE}-p90-k2-u": (DENSE, 0.9, 2, None, False),
        f"{DENSE}-p90-k4-u": (DENSE, 0.9, 4, None, False),
    }
    assert {job.prune.get("finetune_epochs") for job in jobs.values()} == {None, 2}


def test_a_chain_with_one_setting_per_target():
    jobs = jobs_of({"targets": {0.6: {"lr": 0.0004}, 0.9: {"steps": 2}}}, sparsity=[0.6, 0.9])
    p60 = f"{DENSE}-p60-lr0.0004"
    assert grid_meta(jobs) == {
        DENSE: (None, 0.0, 0, None, False),
        p60: (DENSE, 0.6, 1, 0.0004, True),
        f"{DENSE}-p90-k2": (p60, 0.9, 2, None, True),
    }


# cpu-brown's EGRU preset was renamed cpu-fast-egru (same settings) when
# cpu-small-egru took the paper's mechanism; the digest is taken under the old name.
RENAMED_PRESETS = {"cpu-fast-egru": "cpu-small-egru"}


def fingerprint(name: str) -> tuple[int, str]:
    """How many jobs a shipped study has, and a digest of their names, definitions and
    the meta keys they had before the pruning grid existed."""
    old_keys = ("name", "kind", "group", "model", "seed", "weight_decay", "bias_decay")
    old_keys += ("target_sparsity", "source")
    rows = []
    for job in load_spec(name).job_list:
        kind, preset, *rest = job.definition()
        definition = (kind, RENAMED_PRESETS.get(preset, preset), *rest)
        rows.append([job.name, definition, {k: job.meta()[k] for k in old_keys}])
    return len(rows), hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


# Computed with the spec code before the pruning grid (commit c36fc07). A change in a
# preset's default weight decay or model type changes these too (the names carry them).
BEFORE_THE_GRID = {
    "cpu-brown": (18, "1326361c5a42d7b9c2d9f63050e1a2d76bb635bd654fc8e79b90c01ba5b4f655"),
    "paper-ptb": (270, "7a6010132e30ad31f1bcceafa0c036d8700adbbbb2a0ad3c4cdd9662ba8f1383"),
    "paper-wt2": (270, "72e2adbb46b0645547d72e58d6cd3fd7dddf3a6a09799e8210858f756f7a2259"),
}


@pytest.mark.parametrize("study", sorted(BEFORE_THE_GRID))
def test_existing_studies_expand_as_before(study):
    assert fingerprint(study) == BEFORE_THE_GRID[study]
    for job in load_spec(study).job_list:  # chained one-step runs at prune's default lr
        meta = job.meta()
        pruned = job.kind == "prune"
        assert (meta["prune_steps"], meta["finetune_lr"], meta["chained"]) == (
            int(pruned),
            None,
            pruned,
        )


BAD_GRIDS = [
    ({"steps": [1, 0]}, "pruning steps must be >= 1"),
    ({"steps": 1.5}, "expected an integer"),
    ({"lr": [None, -0.001]}, "fine-tuning rates must be > 0"),
    ({"lr": 0}, "fine-tuning rates must be > 0"),
    ({"lr": [0.001, 0.001]}, "prune.lr repeats a value"),
    ({"chain": "yes"}, "prune.chain must be true, false or [true, false]"),
    ({"chain": [1]}, "prune.chain must be true, false or [true, false]"),
    ({"targets": {0.7: {"steps": 2}}}, "prune.targets names [0.7], which are not among"),
    ({"targets": {0.9: {"chain": False}}}, "prune.targets.0.9: unknown key(s) ['chain']"),
    ({"targets": {0.9: {"steps": [1, 2]}}}, "a chain runs one (steps, lr) combination"),
]


@pytest.mark.parametrize("prune, expected", BAD_GRIDS)
def test_bad_grid_names_the_problem(prune, expected):
    assert expected in error_message(jobs_of, prune, [0.6, 0.9])


def test_figures_are_kept_or_refused():
    data = {"name": "t", "groups": [{"name": "egru", "preset": "cpu-fast-egru", "seeds": [1]}]}
    assert parse_spec(data, "test", None).figures is None
    chosen = ["pruning-steps", "learning-curves"]
    assert parse_spec({**data, "figures": chosen}, "test", None).figures == tuple(chosen)
    message = error_message(parse_spec, {**data, "figures": ["fig3"]}, "test", None)
    assert "unknown figure(s) ['fig3']" in message and ", ".join(FIGURES) in message


def test_findings_study_expands_as_designed():
    spec = load_spec("cpu-brown-findings")
    assert (spec.threads, spec.jobs, len(spec.job_list)) == (1, 2, 19)
    assert spec.figures == FIGURES
    names = {job.name for job in spec.job_list}
    assert all(job.source in names for job in spec.job_list if job.source)
    dense = [job for job in spec.job_list if job.kind == "train"]
    egru_decays = {(job.weight_decay, job.bias_decay) for job in dense if job.model == "egru"}
    assert egru_decays == {(0.01, 0), (0.03, 0), (0.1, 0), (0.3, 0), (0.1, 0.1)}
    two_seeds = {
        (job.weight_decay, job.bias_decay) for job in dense if job.model == "egru" and job.seed == 2
    }
    assert two_seeds == {(0.01, 0), (0.3, 0)}  # the knob's ends carry the spread
    assert {job.prune["finetune_epochs"] for job in spec.job_list if job.kind == "prune"} == {2}
    pruned = {
        (job.model, job.sparsity, job.prune["steps"])
        for job in spec.job_list
        if job.kind == "prune" and not job.chained and job.source in {d.name for d in dense}
    }
    fig3 = {("egru", t, k) for t in (0.8, 0.9) for k in (1, 2, 4)}
    fig1 = {("egru", t, 1) for t in (0.4, 0.6)}
    assert pruned == fig3 | fig1 | {("lstm", t, 1) for t in (0.7, 0.8, 0.9)}


def test_a_real_two_step_prune_at_its_own_rate(tmp_path):
    """The grid's steps and lr reach ``dualsparse prune``: the pruned run records 2
    steps, each fine-tuned at the spec's rate (not the run's 0.01 or prune's default)."""
    prune = {"steps": 2, "lr": 0.002, "chain": False}
    spec = make_sweep(
        tmp_path, tiny_group("egru", sparsity=[0.5], prune=prune), figures=["pruning-steps"]
    )
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 0
    name = f"{DENSE}-p50-k2-lr0.002-u"
    record = json.loads((out / "runs" / name / "prune.json").read_text(encoding="utf-8"))
    assert (record["steps"], record["finetune_lr"], len(record["history"])) == (2, 0.002, 2)
    assert [h["target"] for h in record["history"]] == pytest.approx([1 - 0.5**0.5, 0.5])
    for k in (1, 2):
        config = json.loads((out / "runs" / name / f"step-{k}" / "config.json").read_text())
        assert config["train"]["lr"] == 0.002
    measured = result(out, name)
    assert (measured["prune_steps"], measured["finetune_lr"], measured["chained"]) == (
        2,
        0.002,
        False,
    )
    assert measured["weight_sparsity"] == pytest.approx(0.5, abs=1e-3)
    state = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    assert state["figures"] == ["pruning-steps"]
