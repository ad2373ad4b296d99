"""Sweep specs: a YAML grid becomes named jobs; a wrong spec is one clear error."""

from pathlib import Path

import pytest
import yaml

from conftest import error_message
from dualsparse.cli import main
from dualsparse.sweeps.spec import load_spec, parse_spec, study_names


def group(name: str = "egru", **keys) -> dict:
    return {"name": name, "preset": "cpu-fast-egru", "seeds": [1], **keys}


def spec_dict(*groups: dict, **top) -> dict:
    return {"name": "t", **top, "groups": list(groups)}


def jobs_of(*groups: dict) -> dict:
    """Job name → Job of a spec made of ``groups``."""
    return {job.name: job for job in parse_spec(spec_dict(*groups), "test", None).job_list}


def test_grid_expands_into_named_jobs():
    jobs = jobs_of(group(seeds=[1, 2], weight_decay=[0.01, 0.1], sparsity=[0.8, 0.6]))
    dense = [f"egru-wd{wd}-bd0-s{seed}" for wd in ("0.01", "0.1") for seed in (1, 2)]
    expected = {name + suffix for name in dense for suffix in ("", "-p60", "-p80")}
    assert set(jobs) == expected and len(jobs) == 12
    job = jobs["egru-wd0.1-bd0-s2"]
    assert (job.kind, job.model, job.seed, job.weight_decay, job.sparsity) == (
        "train",
        "egru",
        2,
        0.1,
        0.0,
    )
    assert {"train.weight_decay=0.1", "train.seed=2", "train.threads=1"} <= set(job.overrides)
    pruned = jobs["egru-wd0.1-bd0-s2-p80"]
    assert (pruned.kind, pruned.sparsity, pruned.prune["steps"]) == ("prune", 0.8, 1)


@pytest.mark.parametrize("chain", [True, False])
def test_prune_sources_chained_or_from_the_dense_run(chain):
    jobs = jobs_of(group(sparsity=[0.9, 0.6, 0.8], prune={"chain": chain}))
    dense = "egru-wd0.01-bd0-s1"
    sources = {name: job.source for name, job in jobs.items()}
    if chain:  # train → 60% → 80% → 90%, whatever order the targets were given in
        expected = {f"{dense}-p60": dense, f"{dense}-p80": f"{dense}-p60"}
        expected[f"{dense}-p90"] = f"{dense}-p80"
    else:  # named -u: pruned from the dense run outside a chain
        expected = {f"{dense}-p{p}-u": dense for p in (60, 80, 90)}
    assert sources == {dense: None, **expected}


def test_groups_share_identical_jobs():
    """As in cpu-brown: a weight-decay group shares its default point with a pruning group."""
    jobs = jobs_of(
        group(seeds=[1, 2], weight_decay=[0.01], sparsity=[0.6]),
        group(seeds=[1, 2], weight_decay=[0.001, 0.01]),
    )
    assert len(jobs) == 2 * 2 + 2  # 2 seeds × (dense + p60), plus wd 0.001 × 2 seeds


def test_groups_defining_the_same_job_differently_are_refused():
    data = spec_dict(group(set=["train.epochs=2"]), group(set=["train.epochs=3"]))
    message = error_message(parse_spec, data, "test", None)
    assert "define the run egru-wd0.01-bd0-s1 differently" in message


def test_tiny_decays_get_distinct_names():
    """AWD-LSTM's weight decay is 1.2e-6: six decimals made it collide with 1e-6 and 0."""
    jobs = jobs_of(group(weight_decay=[0, 1e-7, 1e-6, 1.2e-6, 0.01]))
    assert len(jobs) == 5
    assert "egru-wd0.01-bd0-s1" in jobs and "egru-wd0-bd0-s1" in jobs


def test_shipped_studies_load():
    assert {"cpu-brown", "paper-ptb", "paper-wt2"} <= set(study_names())
    for name in study_names():
        spec = load_spec(name)
        names = {job.name for job in spec.job_list}
        assert all(job.source in names for job in spec.job_list if job.source)


def test_cpu_brown_is_the_reduced_reproduction():
    jobs = load_spec("cpu-brown").job_list
    assert {job.model for job in jobs} == {"egru", "lstm"}
    for model in ("egru", "lstm"):
        mine = [job for job in jobs if job.model == model]
        assert {job.sparsity for job in mine if job.kind == "prune"} == {0.6, 0.8, 0.9}
        assert len({job.seed for job in mine}) >= 2
    egru_decays = {job.weight_decay for job in jobs if job.model == "egru"}
    assert egru_decays == {0.001, 0.01, 0.1}


def test_paper_grid_size():
    spec = load_spec("paper-ptb")
    assert spec.dataset == "ptb"
    assert len(spec.job_list) == 2 * 15 * (1 + 8)  # 2 models, 15 seeds, dense + 8 targets


def write_spec(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, "utf-8")
    return path


BAD_SPECS = [
    (spec_dict(group(), grops=[]), "unknown key(s) ['grops']"),
    (spec_dict(group(seed=[1])), "groups[0]: unknown key(s) ['seed']"),
    (spec_dict(group(seeds=[])), "groups[0]: seeds is empty"),
    (spec_dict({"name": "egru", "preset": "cpu-fast-egru"}), "seeds is missing"),
    (spec_dict(group(sparsity=[0.5, 1.0])), "sparsity targets must be in [0, 1)"),
    (spec_dict(group(preset="tiny")), "unknown preset 'tiny'"),
    (spec_dict(group(prune={"chained": True})), "prune: unknown key(s) ['chained']"),
    (spec_dict(group(seeds=[1, 1])), "seeds repeats a value"),
    ({"groups": [group()]}, "give the sweep a name"),
    ("name: t\ngroups: [\n", "is not valid YAML"),
]


@pytest.mark.parametrize("data, expected", BAD_SPECS)
def test_bad_spec_names_the_problem(tmp_path, data, expected):
    path = write_spec(tmp_path / "spec.yaml", data)
    assert expected in error_message(load_spec, path)


def test_unknown_spec_lists_the_studies(tmp_path):
    message = error_message(load_spec, str(tmp_path / "absent.yaml"))
    assert "neither a file nor a shipped study" in message and "cpu-brown" in message


@pytest.mark.parametrize("data, expected", [BAD_SPECS[i] for i in (0, 2, 4, 5, 9)])
def test_cli_prints_one_error_line(capsys, tmp_path, data, expected):
    path = write_spec(tmp_path / "spec.yaml", data)
    out_dir = tmp_path / "out"
    code = main(["sweep", str(path), "--out", str(out_dir), "--data", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert not out_dir.exists()


def test_dry_run_lists_the_runs(capsys, tmp_path):
    assert main(["sweep", "cpu-brown", "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "18 runs"  # 2 models × 2 seeds × (dense + 3 targets) + 2 decays × 1 seed
    assert any("prune egru-wd0.01-bd0-s1-p60 → 0.8" in line for line in lines)
    assert not (tmp_path / "out").exists()


def test_studies_command(capsys):
    assert main(["studies"]) == 0
    out = capsys.readouterr().out
    assert "cpu-brown" in out and " 270 runs" in out
