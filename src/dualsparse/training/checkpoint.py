"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

Layout inside a run directory::

    checkpoints/<tag>/model.safetensors      weights (tied tensors stored once)
    checkpoints/<tag>/training.safetensors   optimizer moments, RNG states, carried hidden state
    checkpoints/<tag>/state.json             config, position, optimizer hyperparameters, history
    checkpoints/<tag>/vocab.json
    checkpoints/latest.json, best.json       pointers {"tag": ...}, replaced with os.replace

A checkpoint directory is complete and on disk (fsync) before it is renamed into
place and before a pointer names it, and a pointer is swapped atomically, so an
interrupted write or a crash never leaves a half-written checkpoint in use.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, save_model

from dualsparse.data.corpus import Vocabulary
from dualsparse.errors import DualsparseError
from dualsparse.fileio import atomic_write_text, fsync_directory, sync_directory

FORMAT = "dualsparse-checkpoint"
VERSION = 1
# what save_checkpoint and prune name checkpoint directories: one plain name, no path
TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able groups."""
    tensors = {}
    for index, entry in opt_state["state"].items():
        for key, value in entry.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in opt_state["param_groups"]
    ]
    return tensors, groups


def unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    vocab: Vocabulary,
    state: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
    *,
    pointers: tuple[str, ...] = ("latest",),
    masks: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a complete checkpoint directory, then point ``pointers`` at it."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".incoming-"))
    try:
        meta = {"format": FORMAT, "version": str(VERSION)}
        save_model(model, str(tmp / "model.safetensors"), metadata=meta)
        tensors = {k: v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()}
        save_file(tensors, str(tmp / "training.safetensors"), metadata=meta)
        if masks:
            packed = {k: v.detach().to("cpu", torch.uint8).contiguous() for k, v in masks.items()}
            save_file(packed, str(tmp / "masks.safetensors"), metadata=meta)
        full_state = {"format": FORMAT, "version": VERSION, **state}
        if masks:  # so that a lost masks.safetensors is an error, not a dense model
            full_state["masked_parameters"] = sorted(masks)
        atomic_write_text(tmp / "state.json", json.dumps(full_state, indent=1))
        vocab.save(tmp / "vocab.json")
        sync_directory(tmp)  # on disk, files 0644 (mkdtemp made the directory 0700)
        tag = _next_tag(root, state)
        os.replace(tmp, root / tag)
        fsync_directory(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    point_to(run_dir, tag, pointers)
    _collect_garbage(root)
    return root / tag


def point_to(run_dir: Path, tag: str, pointers: tuple[str, ...]) -> None:
    """Make each pointer (``latest``, ``best``) name checkpoint ``tag``, atomically."""
    for pointer in pointers:
        atomic_write_text(
            Path(run_dir) / "checkpoints" / f"{pointer}.json", json.dumps({"tag": tag})
        )


def _next_tag(root: Path, state: dict[str, Any]) -> str:
    base = f"epoch{state.get('epoch', 0):04d}-step{state.get('global_step', 0):08d}"
    tag, n = base, 1
    while (root / tag).exists():
        tag, n = f"{base}-{n}", n + 1
    return tag


def _collect_garbage(root: Path) -> None:
    keep = {read_pointer(root.parent, p) for p in ("latest", "best")}
    for child in root.iterdir():
        if child.is_dir() and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)


def read_pointer(run_dir: Path, pointer: str) -> str | None:
    path = Path(run_dir) / "checkpoints" / f"{pointer}.json"
    if not path.is_file():
        return None
    try:
        tag = json.loads(path.read_text(encoding="utf-8"))["tag"]
    except (ValueError, KeyError, TypeError):
        raise DualsparseError(
            f"{path} is corrupted; delete it to fall back to another checkpoint"
        ) from None
    # a tag names a directory next to the pointer, never a path out of the run
    if not isinstance(tag, str) or not TAG_PATTERN.fullmatch(tag):
        raise DualsparseError(
            f"{path} names {tag!r}, which is not a checkpoint of this run (a tag is one plain "
            "directory name); delete the pointer to fall back to another checkpoint"
        )
    return tag


def checkpoint_dir(run_dir: str | Path, which: str = "latest") -> Path:
    """The directory of the ``latest`` or ``best`` checkpoint of a run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DualsparseError(
            f"run directory {run_dir} does not exist; give the --out of a train run"
        )
    path = _pointed_checkpoint(run_dir, which)
    for _ in range(READ_ATTEMPTS):
        if path.is_dir():
            return path
        # a trainer may have written a newer checkpoint and deleted this one since the
        # pointer was read: only a pointer that still names a missing checkpoint is damage
        again = _pointed_checkpoint(run_dir, which)
        if again == path:
            break
        path = again
    raise DualsparseError(f"checkpoint {path} is missing; the run directory is damaged")


# how often a reader follows a pointer that moved while it read (a run being trained)
READ_ATTEMPTS = 5


def _pointed_checkpoint(run_dir: Path, which: str) -> Path:
    tag = read_pointer(run_dir, which) or (
        read_pointer(run_dir, "latest") if which == "best" else None
    )
    if tag is None:
        raise DualsparseError(
            f"{run_dir} has no checkpoint; train into it first "
            f"(dualsparse train ... --out {run_dir})"
        )
    return run_dir / "checkpoints" / tag


def pointer_moved(run_dir: str | Path, which: str, path: Path) -> bool:
    """Whether ``which`` names another checkpoint than ``path`` now: a reader that failed
    on ``path`` raced the trainer's deletion of it and should read again."""
    try:
        return _pointed_checkpoint(Path(run_dir), which) != Path(path)
    except DualsparseError:
        return False


def read_state(ckpt: Path) -> dict[str, Any]:
    path = Path(ckpt) / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DualsparseError(f"{path} is missing; the checkpoint is incomplete") from None
    except (ValueError, UnicodeDecodeError):
        raise DualsparseError(f"{path} is not valid JSON; the checkpoint is corrupted") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DualsparseError(f"{path} is not a dualsparse checkpoint state file")
    if state.get("version") != VERSION:
        raise DualsparseError(
            f"{path} has format version {state.get('version')}; this dualsparse reads {VERSION}"
        )
    wrong = [key for key, ok in _STATE_TYPES.items() if key in state and not ok(state[key])]
    if "optimizer_groups" in state and not _optimizer_groups_ok(state["optimizer_groups"]):
        wrong.append("optimizer_groups")
    if wrong:
        raise DualsparseError(
            f"{path} has entries of the wrong type ({', '.join(wrong)}); the checkpoint is "
            "damaged: delete its pointer to fall back to another checkpoint, or start over"
        )
    return state


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# the position and history a resume reads from state.json, with the type each must have
_STATE_TYPES = {
    "epoch": _count,
    "window": _count,
    "global_step": _count,
    "bad_epochs": _count,
    "best_valid_loss": lambda v: v is None or _number(v),
    "elapsed_seconds": lambda v: _number(v) and v >= 0,
    "finished": lambda v: isinstance(v, bool),
    "config": lambda v: isinstance(v, dict),
}


def _optimizer_groups_ok(groups: Any) -> bool:
    """AdamW's parameter groups as flatten_optimizer writes them."""
    if not isinstance(groups, list):
        return False
    for group in groups:
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            return False
        if not all(_count(i) for i in group["params"]):
            return False
        if not all(_number(group[k]) for k in ("lr", "weight_decay", "eps") if k in group):
            return False
        betas = group.get("betas", [0.0, 0.0])
        if not (isinstance(betas, list) and len(betas) == 2 and all(map(_number, betas))):
            return False
    return True


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning any damage into a one-line error."""
    if not Path(path).is_file():
        raise DualsparseError(f"{path} is missing; the checkpoint is incomplete")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DualsparseError(
            f"{path} is truncated or corrupted ({reason}); restore it or retrain"
        ) from None
    # a generator's state is a byte tensor; torch would raise a TypeError on any other
    wrong = [k for k, v in tensors.items() if k.startswith("rng.") and v.dtype != torch.uint8]
    if wrong:
        raise DualsparseError(
            f"{path} holds {', '.join(wrong)} of type {tensors[wrong[0]].dtype}, not a random "
            "generator's state (uint8); the checkpoint is damaged"
        )
    return tensors


def load_masks(ckpt: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Pruning masks saved with a checkpoint (empty if it was never pruned), validated."""
    path = Path(ckpt) / "masks.safetensors"
    if not path.exists():
        if _was_pruned(Path(ckpt)):
            raise DualsparseError(
                f"{path} is missing: the checkpoint is of a pruned model, which without its "
                "masks would be evaluated and trained as dense; restore the file, or prune "
                "the model again"
            )
        return {}
    params = dict(model.named_parameters())
    masks = {}
    for name, mask in read_tensors(path).items():
        if name not in params or params[name].shape != mask.shape:
            raise DualsparseError(
                f"{path}: mask {name} {tuple(mask.shape)} matches no parameter of the model; "
                "the checkpoint is damaged or belongs to another architecture"
            )
        masks[name] = mask.to(torch.bool)
    return masks


def _was_pruned(ckpt: Path) -> bool:
    """Whether a checkpoint holds a pruned model: its state lists the masked parameters
    (written since masks were recorded there), or it is a pruning's final checkpoint."""
    try:
        listed = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
        listed = listed.get("masked_parameters") if isinstance(listed, dict) else None
    except (OSError, ValueError, UnicodeDecodeError):
        listed = None
    return bool(listed) or ckpt.name.startswith("pruned-")


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Load weights into ``model``, checking names and shapes before touching it."""
    tensors = read_tensors(path)
    expected = model.state_dict()
    # save_model stores each tied group (same storage) under one of its names, either one
    groups: dict[int, list[str]] = {}
    for name, tensor in expected.items():
        groups.setdefault(tensor.data_ptr(), []).append(name)
    missing = [names[0] for names in groups.values() if not any(n in tensors for n in names)]
    unexpected = [n for n in tensors if n not in expected]
    wrong = [
        f"{n} {tuple(tensors[n].shape)} vs {tuple(expected[n].shape)}"
        for n in tensors
        if n in expected and tensors[n].shape != expected[n].shape
    ]
    if missing or unexpected or wrong:
        detail = "; ".join(
            filter(
                None,
                [
                    f"missing {missing[:3]}" if missing else "",
                    f"unexpected {unexpected[:3]}" if unexpected else "",
                    f"shape mismatch {wrong[:3]}" if wrong else "",
                ],
            )
        )
        raise DualsparseError(
            f"{path} holds a different architecture than the config describes ({detail}); "
            "use the config and vocabulary saved with that checkpoint"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            expected[name].copy_(value)
