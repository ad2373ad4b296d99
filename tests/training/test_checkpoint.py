"""Checkpoints: exact round trips, tied weights stored once, atomic writes, damage reported."""

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import error_message, tiny_run_config
from dualsparse.data.corpus import Vocabulary
from dualsparse.models.lm import LanguageModel
from dualsparse.training import checkpoint as ckpt
from dualsparse.training.optim import make_optimizer

VOCAB = Vocabulary(["the", "cat", "sat", "<eos>", "<unk>"])


def tiny_model(seed: int, **model) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(tiny_run_config(model).model, len(VOCAB))


def save(run_dir: Path, model: LanguageModel, epoch: int = 1, **kwargs) -> Path:
    return ckpt.save_checkpoint(
        run_dir, model, VOCAB, {"epoch": epoch, "global_step": epoch}, **kwargs
    )


def test_round_trip_restores_weights_exactly_and_keeps_the_tie(tmp_path):
    saved = tiny_model(seed=0)
    path = save(tmp_path, saved)
    loaded = tiny_model(seed=1)
    ckpt.load_model_weights(loaded, path / "model.safetensors")
    for name, tensor in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.decoder.weight is loaded.encoder.weight
    assert Vocabulary.load(path / "vocab.json") == VOCAB


def test_tied_weights_are_stored_once(tmp_path):
    model = tiny_model(seed=0)
    path = save(tmp_path, model) / "model.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
    assert len(keys & {"encoder.weight", "decoder.weight"}) == 1
    assert keys | {"encoder.weight", "decoder.weight"} == set(model.state_dict())


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path):
    cfg = tiny_run_config()
    model = tiny_model(seed=0)
    optimizer = make_optimizer(model, cfg.train)
    batch = torch.randint(0, len(VOCAB), (6, 2), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        optimizer.zero_grad()
        model(batch).logits.logsumexp(-1).mean().backward()
        optimizer.step()
    tensors, groups = ckpt.flatten_optimizer(optimizer.state_dict())
    path = tmp_path / "training.safetensors"
    save_file(tensors, str(path))
    groups = json.loads(json.dumps(groups))
    twin = tiny_model(seed=0)
    twin.load_state_dict(model.state_dict())
    twin_optimizer = make_optimizer(twin, cfg.train)
    twin_optimizer.load_state_dict(ckpt.unflatten_optimizer(ckpt.read_tensors(path), groups))
    for step_model, step_optimizer in ((model, optimizer), (twin, twin_optimizer)):
        torch.manual_seed(1)  # the same dropout masks for both
        step_optimizer.zero_grad()
        step_model(batch).logits.logsumexp(-1).mean().backward()
        step_optimizer.step()
    for name, tensor in model.state_dict().items():
        assert torch.equal(twin.state_dict()[name], tensor), name


def test_pointers_name_complete_checkpoints_and_old_ones_are_collected(tmp_path):
    model = tiny_model(seed=0)
    first = save(tmp_path, model, epoch=1, pointers=("latest", "best"))
    second = save(tmp_path, model, epoch=2)
    assert ckpt.checkpoint_dir(tmp_path, "latest") == second
    assert ckpt.checkpoint_dir(tmp_path, "best") == first
    third = save(tmp_path, model, epoch=3, pointers=("latest", "best"))
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {
        third.name,
        "latest.json",
        "best.json",
    }
    assert not second.exists() and not first.exists()


def test_best_falls_back_to_latest(tmp_path):
    latest = save(tmp_path, tiny_model(seed=0))
    assert ckpt.checkpoint_dir(tmp_path, "best") == latest


def test_checkpoint_files_are_0644_and_its_directory_0755_whatever_the_umask(tmp_path):
    previous = os.umask(0o077)  # a private umask must not make shared results unreadable
    try:
        path = save(tmp_path, tiny_model(seed=0), masks={})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    files = sorted(path.iterdir()) + sorted((tmp_path / "checkpoints").glob("*.json"))
    assert {p.name for p in files} >= {"model.safetensors", "state.json", "latest.json"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == dict.fromkeys(
        [p.name for p in files], 0o644
    )


def test_failed_write_leaves_the_previous_checkpoint_in_use(tmp_path, monkeypatch):
    model = tiny_model(seed=0)
    good = save(tmp_path, model, epoch=1)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", disk_full)
    with pytest.raises(OSError):
        save(tmp_path, model, epoch=2)
    assert ckpt.checkpoint_dir(tmp_path, "latest") == good
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert sorted(leftovers) == sorted([good.name, "latest.json"])


def test_another_architecture_is_reported_before_any_weight_changes(tmp_path):
    path = save(tmp_path, tiny_model(seed=0, hidden_sizes=[16, 8])) / "model.safetensors"
    model = tiny_model(seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    message = error_message(ckpt.load_model_weights, model, path)
    assert "different architecture" in message and "shape mismatch" in message
    assert "layers.1.bias (24,) vs (36,)" in message
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    lstm = tiny_model(seed=1, type="lstm")
    assert "missing" in error_message(ckpt.load_model_weights, lstm, path)


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty"])
def test_damaged_safetensors_is_one_clear_error(tmp_path, damage):
    path = save(tmp_path, tiny_model(seed=0)) / "model.safetensors"
    data = path.read_bytes()
    garbage = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
    path.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "random bytes": bytes(garbage.to(torch.uint8).tolist()),
            "empty": b"",
        }[damage]
    )
    message = error_message(ckpt.load_model_weights, tiny_model(seed=0), path)
    assert "truncated or corrupted" in message and str(path) in message


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, "is missing"),
        ('{"format": "dualsparse-checkpoint", "vers', "is not valid JSON"),
        ('["a list"]', "is not a dualsparse checkpoint"),
        ('{"format": "dualsparse-checkpoint", "version": 99}', "format version 99"),
    ],
)
def test_damaged_state_json(tmp_path, text, expected):
    path = save(tmp_path, tiny_model(seed=0))
    if text is None:
        (path / "state.json").unlink()
    else:
        (path / "state.json").write_text(text, encoding="utf-8")
    assert expected in error_message(ckpt.read_state, path)


def test_run_dir_without_checkpoint_or_with_a_damaged_pointer(tmp_path):
    assert "does not exist" in error_message(ckpt.checkpoint_dir, tmp_path / "absent")
    assert "has no checkpoint" in error_message(ckpt.checkpoint_dir, tmp_path)
    save(tmp_path, tiny_model(seed=0))
    (tmp_path / "checkpoints" / "latest.json").write_text("{not json", encoding="utf-8")
    assert "latest.json is corrupted" in error_message(ckpt.checkpoint_dir, tmp_path)


# ---------------------------------------------------------------- files a user can damage


@pytest.fixture
def trained_run(tmp_path):
    """A real one-epoch run (with its source.json), as ``dualsparse train`` leaves it."""
    from conftest import write_tiny_corpus
    from dualsparse.runs import new_run

    run_dir = tmp_path / "run"
    new_run(run_dir, tiny_run_config(), str(write_tiny_corpus(tmp_path / "tiny")), progress=False)
    return run_dir


def cli_error(argv, capsys) -> str:
    """The one ``error:`` line and exit 2 of a refused command."""
    from dualsparse.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_pointer_never_leads_out_of_the_run(trained_run, tmp_path, capsys):
    """Issue 15, point 8: a tag such as ../../x was followed by evaluate and --resume."""
    outside = tmp_path / "x"
    (tmp_path / "run" / "checkpoints" / ckpt.read_pointer(trained_run, "latest")).rename(outside)
    for pointer in ("latest", "best"):
        (trained_run / "checkpoints" / f"{pointer}.json").write_text('{"tag": "../../x"}')
    assert "not a checkpoint of this run" in error_message(ckpt.checkpoint_dir, trained_run)
    before = sorted(p.name for p in outside.iterdir())
    for argv in (["evaluate", str(trained_run)], ["train", "--resume", str(trained_run)]):
        assert "not a checkpoint of this run" in cli_error(argv, capsys)
    assert sorted(p.name for p in outside.iterdir()) == before


@pytest.mark.parametrize(
    "key, value",
    [
        ("epoch", "3"),
        ("epoch", 1.5),
        ("best_valid_loss", "low"),
        ("optimizer_groups", {"lr": 0.1}),
        ("optimizer_groups", [{"params": "all"}]),
        ("rng.torch", None),  # a float tensor where the generator's bytes belong
    ],
)
def test_a_state_entry_of_the_wrong_type_is_one_error_line(trained_run, capsys, key, value):
    """Issue 15, point 9: these were tracebacks (TypeError inside torch or the loop)."""
    path = ckpt.checkpoint_dir(trained_run, "latest")
    if key.startswith("rng."):
        tensors = ckpt.read_tensors(path / "training.safetensors")
        tensors[key] = tensors[key].float()
        save_file(tensors, str(path / "training.safetensors"))
        expected = "rng.torch of type torch.float32"
    else:
        state = json.loads((path / "state.json").read_text())
        state[key] = value
        (path / "state.json").write_text(json.dumps(state))
        expected = f"wrong type ({key})"
    assert expected in cli_error(["train", "--resume", str(trained_run)], capsys)
