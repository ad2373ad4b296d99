"""The command line: every user mistake is one `error: …` line and exit code 2.

Most cases call ``main()`` in-process (fast); two run ``python -m dualsparse`` to
prove that a real process prints no traceback and exits with 2.
"""

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import save_model

from conftest import (
    file_contents,
    temp_files,
    tiny_run_config,
    write_run_config,
    write_tiny_corpus,
)
from dualsparse.cli import COMMANDS, main
from dualsparse.data.corpus import Vocabulary
from dualsparse.models.lm import LanguageModel
from dualsparse.training import checkpoint as ckpt

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def trained_run(corpus_dir, tmp_path_factory) -> Path:
    """One epoch through the CLI (so source.json is there); read-only, copy before damaging."""
    root = tmp_path_factory.mktemp("trained")
    config = write_run_config(root / "tiny.yaml")
    run_dir = root / "run"
    assert main(train_argv(config, corpus_dir, run_dir)) == 0
    assert ckpt.checkpoint_dir(run_dir, "best") == ckpt.checkpoint_dir(run_dir, "latest")
    return run_dir


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def user_error(capsys, argv: list, run_dir: Path | None = None) -> str:
    """Run the CLI, check the user-error contract, return the error line."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    if run_dir is not None and run_dir.exists():
        assert temp_files(run_dir) == []
    return lines[0]


def train_argv(config: Path, data: Path, out: Path, *extra) -> list[str]:
    argv = ["train", "--config", config, "--data", data, "--out", out, "--no-progress", *extra]
    return [str(a) for a in argv]


# ------------------------------------------------------------------ data mistakes


def remove_valid(d: Path):
    (d / "valid.txt").unlink()


def empty_train(d: Path):
    (d / "train.txt").write_text("", encoding="utf-8")


def binary_train(d: Path):
    (d / "train.txt").write_bytes(b"the cat\n\x00\x01\x02\xff sat\n")


def latin1_train(d: Path):
    (d / "train.txt").write_bytes("the caf\xe9 sat\n".encode("latin-1"))


def train_is_a_directory(d: Path):
    (d / "train.txt").unlink()
    (d / "train.txt").mkdir()


@pytest.mark.parametrize(
    "damage, expected",
    [
        (remove_valid, "but no valid.txt"),
        (empty_train, "has no words"),
        (binary_train, "looks binary"),
        (latin1_train, "is not UTF-8"),
        (train_is_a_directory, "is not a regular file"),
    ],
)
def test_bad_data_dir(capsys, tmp_path, tiny_config_file, damage, expected):
    data = write_tiny_corpus(tmp_path / "data")
    damage(data)
    out = tmp_path / "run"
    message = user_error(capsys, train_argv(tiny_config_file, data, out), out)
    assert expected in message
    assert not out.exists()  # nothing written for a run that never started


def test_missing_data_dir(capsys, tmp_path, tiny_config_file):
    out = tmp_path / "run"
    message = user_error(capsys, train_argv(tiny_config_file, tmp_path / "absent", out), out)
    assert "data dir" in message and "does not exist" in message


def test_data_moved_away_after_training(capsys, run_copy, tmp_path, corpus_dir):
    moved = Path(shutil.copytree(corpus_dir, tmp_path / "data"))
    source = json.loads((run_copy / "source.json").read_text(encoding="utf-8"))
    source["data"] = str(moved)
    (run_copy / "source.json").write_text(json.dumps(source), encoding="utf-8")
    (moved / "test.txt").unlink()
    message = user_error(capsys, ["evaluate", run_copy], run_copy)
    assert "no test.txt" in message


# ------------------------------------------------------------------ config mistakes


def test_unknown_preset_lists_the_shipped_ones(capsys, tmp_path, corpus_dir):
    out = tmp_path / "run"
    message = user_error(
        capsys, ["train", "--preset", "tiny", "--data", corpus_dir, "--out", out], out
    )
    assert "unknown preset 'tiny'" in message and "cpu-small-egru" in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.dropout_emb=1.5", "model.dropout_emb"),
        ("train.batch_size=0", "train.batch_size"),
        ("model.type=transformer", "model.type"),
        ("train.schedule=linear", "train.schedule"),
        ("train.learning_rate=0.1", "unknown key 'learning_rate'"),
        ("lr=0.1", "model.KEY=VALUE"),
    ],
)
def test_invalid_set_override(capsys, tmp_path, tiny_config_file, corpus_dir, override, expected):
    out = tmp_path / "run"
    argv = train_argv(tiny_config_file, corpus_dir, out, "--set", override)
    message = user_error(capsys, argv, out)
    assert expected in message
    assert not out.exists()


@pytest.mark.parametrize(
    "model, train, expected",
    [
        ({"hidden_sizes": [16, -4]}, {}, "model.hidden_sizes"),
        ({"dropout_forward": -0.2}, {}, "model.dropout_forward"),
        ({}, {"epochs": 0}, "train.epochs"),
        ({}, {"log_interval": 0}, "train.log_interval"),
    ],
)
def test_invalid_config_file_values(capsys, tmp_path, corpus_dir, model, train, expected):
    config = write_run_config(tmp_path / "bad.yaml", model, **train)
    out = tmp_path / "run"
    message = user_error(capsys, train_argv(config, corpus_dir, out), out)
    assert expected in message


def test_invalid_yaml(capsys, tmp_path, corpus_dir):
    config = tmp_path / "broken.yaml"
    config.write_text("model:\n  emb_size: [16\ntrain: {}\n", encoding="utf-8")
    out = tmp_path / "run"
    message = user_error(capsys, train_argv(config, corpus_dir, out), out)
    assert "is not valid YAML" in message and "broken.yaml" in message


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--data", "D", "--out", "R"], "exactly one of --preset NAME or --config FILE"),
        (["train", "--preset", "cpu-small-egru", "--data", "D"], "give --out RUN_DIR"),
        (["train", "--resume", "R", "--preset", "cpu-small-egru"], "takes the run's own config"),
    ],
)
def test_inconsistent_train_arguments(capsys, argv, expected):
    assert expected in user_error(capsys, argv)


def test_new_run_into_an_existing_run_changes_nothing(capsys, run_copy, tiny_config_file, tmp_path):
    before = file_contents(run_copy)
    other_data = write_tiny_corpus(tmp_path / "other")
    message = user_error(capsys, train_argv(tiny_config_file, other_data, run_copy), run_copy)
    assert "already holds a run" in message and "--resume" in message
    assert file_contents(run_copy) == before


# ------------------------------------------------------------------ damaged runs


def other_architecture(path: Path):
    vocab_size = len(Vocabulary.load(path / "vocab.json"))
    model = LanguageModel(tiny_run_config({"hidden_sizes": [16, 8]}).model, vocab_size)
    save_model(model, str(path / "model.safetensors"))


def other_vocabulary(path: Path):
    Vocabulary(["a", "b", "<eos>", "<unk>"]).save(path / "vocab.json")


def truncated_weights(path: Path):
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])


def random_weights(path: Path):
    (path / "model.safetensors").write_bytes(random.Random(0).randbytes(4096))


def corrupted_state(path: Path):
    (path / "state.json").write_bytes(random.Random(1).randbytes(256))


def state_without_config(path: Path):
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    del state["config"]
    (path / "state.json").write_text(json.dumps(state), encoding="utf-8")


@pytest.mark.parametrize("command", ["evaluate", "resume"])
@pytest.mark.parametrize(
    "damage, expected",
    [
        (other_architecture, "different architecture"),
        (other_vocabulary, "vocab"),
        (truncated_weights, "model.safetensors is truncated or corrupted"),
        (random_weights, "model.safetensors is truncated or corrupted"),
        (corrupted_state, "state.json is not valid JSON"),
        (state_without_config, "state.json has no config"),
    ],
)
def test_damaged_checkpoint(capsys, run_copy, command, damage, expected):
    damage(ckpt.checkpoint_dir(run_copy, "latest"))
    before = file_contents(run_copy)
    argv = (
        ["evaluate", run_copy]
        if command == "evaluate"
        else ["train", "--resume", run_copy, "--no-progress"]
    )
    assert expected in user_error(capsys, argv, run_copy)
    assert file_contents(run_copy) == before


@pytest.mark.parametrize("argv", [["evaluate"], ["train", "--resume"]])
def test_missing_run_dir(capsys, tmp_path, argv):
    message = user_error(capsys, [*argv, tmp_path / "absent"])
    assert "run directory" in message and "does not exist" in message


def test_run_dir_without_checkpoint(capsys, tmp_path):
    assert "has no checkpoint" in user_error(capsys, ["evaluate", tmp_path])


def test_resume_mid_epoch_with_another_batch_size(capsys, tmp_path, tiny_config_file, corpus_dir):
    out = tmp_path / "run"
    assert main(train_argv(tiny_config_file, corpus_dir, out, "--max-minutes", "1e-9")) == 0
    assert "continue with: dualsparse train --resume" in capsys.readouterr().out
    before = file_contents(out)
    message = user_error(
        capsys, ["train", "--resume", out, "--no-progress", "--set", "train.batch_size=2"], out
    )
    assert "train.batch_size=4" in message
    assert file_contents(out) == before


# ------------------------------------------------------------------ what works


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_subcommand(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: dualsparse {command}")


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "usage: dualsparse" in out and "sweep" in out
    assert "sweep-step" not in out  # internal: what a sweep runs in its subprocesses


def test_evaluate_json(capsys, trained_run):
    assert main(["evaluate", str(trained_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["model"] == "egru"
    assert math.isfinite(result["perplexity"]) and result["perplexity"] > 1
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert len(result["layer_activity"]) == 2
    assert all(0 <= a <= 1 for a in result["layer_activity"])


def test_evaluate_table(capsys, trained_run):
    assert main(["evaluate", str(trained_run), "--split", "valid"]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "split        valid" in out


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["train", "--config", "absent.yaml", "--data", "absent", "--out", "R"],
            "config file absent.yaml does not exist",
        ),
        (["evaluate", "absent-run"], "run directory absent-run does not exist"),
    ],
)
def test_real_process_prints_one_error_line_and_exits_2(tmp_path, argv, expected):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "dualsparse", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.seed=1000000000000000000000000000000", "train.seed"),
        ("train.seed=-1", "train.seed"),
        ("model.hidden_sizes=[10000000]", "lower model.hidden_sizes[0]"),
        ("model.emb_size=1000000000", "lower model.emb_size"),
        ("model.hidden_sizes=[3.5]", "model.hidden_sizes"),
        ("train.scheduler_start=-1", "train.scheduler_start"),
    ],
)
def test_values_no_run_could_use(
    capsys, tmp_path, tiny_config_file, corpus_dir, override, expected
):
    """Issue 15 point 9/10: each was a traceback or silently changed before."""
    out = tmp_path / "run"
    message = user_error(capsys, train_argv(tiny_config_file, corpus_dir, out, "--set", override))
    assert expected in message
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--preset", "cpu-small-egru", "--out", "R", "--max-minutes", "-1"], "--max"),
        (["train", "--resume", "R", "--max-minutes", "nan"], "--max-minutes nan"),
        (["demo", "--minutes-per-model", "0"], "--minutes-per-model"),
        (["sweep", "spec.yaml", "--out", "S", "--jobs", "0"], "--jobs 0"),
    ],
)
def test_budgets_no_command_can_use(capsys, tmp_path, monkeypatch, argv, expected):
    """Issue 15 point 10: negative --max-minutes and --jobs 0 were accepted without a word."""
    monkeypatch.chdir(tmp_path)
    assert expected in user_error(capsys, argv)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv", [["export", "{run}", "{file}"], ["activity", "{run}", "--out", "{file}"]]
)
def test_output_onto_an_existing_file(capsys, trained_run, corpus_dir, tmp_path, argv):
    """Issue 15 point 9: a traceback from deep in the writer before."""
    target = tmp_path / "taken.txt"
    target.write_text("keep me", encoding="utf-8")
    filled = [a.format(run=trained_run, file=target) for a in argv] + ["--data", str(corpus_dir)]
    if argv[0] == "export":
        filled = filled[:3]
    assert "is a file" in user_error(capsys, filled)
    assert target.read_text(encoding="utf-8") == "keep me"


def test_a_run_with_non_finite_weights_is_refused_by_every_measurement(capsys, run_copy):
    """Issue 15, point 10: NaN weights evaluated to a NaN loss (exit 0) while export
    rejected them and advised exporting again."""
    from safetensors.torch import load_file, save_file

    best = ckpt.checkpoint_dir(run_copy, "best")
    tensors = load_file(best / "model.safetensors")
    name = next(n for n in tensors if tensors[n].ndim == 2 and "layers.0" in n)
    tensors[name][0, 0] = math.nan
    save_file(tensors, best / "model.safetensors")
    for argv in (
        ["evaluate", run_copy, "--split", "valid"],
        ["macs", run_copy, "--split", "valid"],
        ["export", run_copy, run_copy.parent / "export"],
    ):
        line = user_error(capsys, argv)
        assert "NaN or infinite weights" in line and name in line and "train.lr" in line


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """Issue 15: `dualsparse presets | head` ended in a BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dualsparse", "presets"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the command writes
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait() == 141 and err == ""
