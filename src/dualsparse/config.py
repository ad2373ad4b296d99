"""Run configuration: dataclasses, presets, YAML files, ``--set`` overrides, validation.

A config has two sections, ``model`` and ``train``. Presets are YAML files
shipped in ``dualsparse/presets``; a user's ``--config FILE`` has the same shape
(missing keys take the defaults below). ``--set train.lr=0.002`` overrides one key.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dualsparse.errors import DualsparseError

MODEL_TYPES = ("egru", "lstm", "gru")
SCHEDULES = ("cosine", "constant")
WEIGHT_INITS = ("uniform", "xavier_normal")
DROPOUT_MASK_LAYOUTS = ("time", "batch")
# torch seeds its generators with an unsigned 64-bit integer
SEED_RANGE = (0, 2**64 - 1)
# No run of this project comes near it (the paper-size models hold ~25M parameters);
# beyond it the weights alone take 8 GiB and training ~4 times that.
MAX_PARAMETERS = 2**31
GATES = {"egru": 3, "gru": 3, "lstm": 4}


@dataclass
class ModelConfig:
    """Architecture and regularisation (AWD-LSTM layout; names follow the EvNN reference).

    Dropouts: ``dropout_words`` drops word types from the embedding matrix (AWD
    ``dropoute``); ``dropout_emb`` is locked dropout on the embedding output (AWD
    ``dropouti``); ``dropout_forward`` is locked dropout between RNN layers (AWD
    ``dropouth``); ``dropout_output`` is locked dropout on the last layer's output
    (AWD ``dropout``); ``dropout_connect`` is DropConnect on recurrent weights
    (AWD ``wdrop``). ``dropout_mask_shared_over``: "time" draws one locked-dropout mask
    per sequence, shared over its time steps (AWD-LSTM); "batch" one per time step,
    shared by the batch (the EvNN reference as run, benchmarks/lm/modules.py line 29).

    Reference behaviours (docs/recipe.md; defaults keep dualsparse's own):
    ``reset_after`` the candidate tanh(W_z x + b_z + r·(U_z y + b_hz)) instead of the
    paper's tanh(W_z x + U_z (r·y) + b_z); ``carry_local_state`` False restarts the EGRU's
    c at 0 at every window (only y is carried); ``layer_grad_clip`` > 0 clips each EGRU
    layer's gradients by their joint norm inside the layer; ``weight_init``
    "xavier_normal" draws weight matrices xavier-normal with zero biases.
    """

    type: str = "egru"
    emb_size: int = 200
    hidden_sizes: list[int] = field(default_factory=lambda: [400, 400, 200])
    tie_weights: bool = True
    dropout_words: float = 0.1
    dropout_emb: float = 0.3
    dropout_forward: float = 0.2
    dropout_output: float = 0.3
    dropout_connect: float = 0.3
    dropout_mask_shared_over: str = "time"
    weight_init: str = "uniform"
    # EGRU only
    threshold_init_mean: float = 0.01  # thresholds ~ Beta(a, 3) with this mean
    # triangular pseudo-derivative γ·max(0, 1 − |x|/ε); the EvNN reference's "width 3.6"
    # is its support parameter s = 1/ε, and it reuses 3.6 as the dampening γ
    surrogate_width: float = 0.2777778
    surrogate_dampening: float = 3.6
    reset_after: bool = False
    carry_local_state: bool = True
    layer_grad_clip: float = 0.0  # 0 = off
    # activation regularisation on the last layer (AWD-LSTM AR / TAR)
    ar_alpha: float = 0.0
    tar_beta: float = 0.0


@dataclass
class TrainConfig:
    """Optimisation. ``weight_decay`` applies to weight matrices, ``bias_decay`` to
    biases and, with ``decay_thresholds``, thresholds (the paper's activity knob, sec. 4.2)."""

    batch_size: int = 32
    eval_batch_size: int = 10
    test_batch_size: int = 1
    bptt: int = 35
    variable_bptt: bool = True
    epochs: int = 10
    lr: float = 0.003
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.1
    bias_decay: float = 0.0
    threshold_lr_scale: float = 1.0
    decay_thresholds: bool = True
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    scheduler_start: int = 0
    min_lr: float = 0.0
    clip: float = 0.25
    patience: int = 0
    seed: int = 1111
    log_interval: int = 50
    threads: int = 0
    device: str = "cpu"


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        if not isinstance(data, dict):
            raise DualsparseError(f"{source}: expected a mapping with 'model' and 'train' sections")
        unknown = set(data) - {"model", "train"}
        if unknown:
            raise DualsparseError(
                f"{source}: unknown section(s) {sorted(unknown)}; allowed: 'model', 'train'"
            )
        cfg = cls(
            model=_section(ModelConfig, data.get("model") or {}, f"{source}: model"),
            train=_section(TrainConfig, data.get("train") or {}, f"{source}: train"),
        )
        validate(cfg)
        return cfg


def _section(kind, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise DualsparseError(f"{where}: expected a mapping of key: value")
    names = {f.name: f for f in dataclasses.fields(kind)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise DualsparseError(
                f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(names))}"
            )
        kwargs[key] = _coerce(value, names[key], kind(), f"{where}.{key}")
    return kind(**kwargs)


def _coerce(value: Any, fld: dataclasses.Field, default_obj, where: str) -> Any:
    default = getattr(default_obj, fld.name)
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list):
            if isinstance(value, str):
                value = [v for v in value.replace("[", "").replace("]", "").split(",") if v]
            elem = type(default[0]) if default else float
            if elem is int and any(isinstance(v, float) and not v.is_integer() for v in value):
                raise ValueError  # int(3.5) would silently make a layer of 3
            return [elem(v) for v in value]
        return str(value)
    except (TypeError, ValueError):
        raise DualsparseError(
            f"{where}: cannot use {value!r}; expected {type(default).__name__} like {default!r}"
        ) from None


def validate(cfg: RunConfig) -> None:
    """Reject values no run could use, with the fix in the message."""
    m, t = cfg.model, cfg.train
    for section, values in (("model", m), ("train", t)):
        for fld in dataclasses.fields(values):
            value = getattr(values, fld.name)
            numbers = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise DualsparseError(f"{section}.{fld.name} = {value} must be a finite number")
    if m.type not in MODEL_TYPES:
        raise DualsparseError(f"model.type {m.type!r} is unknown; choose one of {MODEL_TYPES}")
    for name in (
        "dropout_words",
        "dropout_emb",
        "dropout_forward",
        "dropout_output",
        "dropout_connect",
    ):
        p = getattr(m, name)
        if not 0.0 <= p < 1.0:
            raise DualsparseError(f"model.{name} = {p} is not a probability in [0, 1)")
    if m.emb_size <= 0 or not m.hidden_sizes or any(h <= 0 for h in m.hidden_sizes):
        raise DualsparseError("model.emb_size and model.hidden_sizes must be positive integers")
    check_model_size(m, vocab_size=1)
    if m.surrogate_width <= 0 or m.surrogate_dampening < 0:
        raise DualsparseError("model.surrogate_width must be > 0 and surrogate_dampening >= 0")
    if m.ar_alpha < 0 or m.tar_beta < 0:
        raise DualsparseError("model.ar_alpha and model.tar_beta must be >= 0")
    if m.layer_grad_clip < 0:
        raise DualsparseError(
            f"model.layer_grad_clip = {m.layer_grad_clip} must be >= 0 (0 switches it off)"
        )
    if m.weight_init not in WEIGHT_INITS:
        raise DualsparseError(
            f"model.weight_init {m.weight_init!r} is unknown; choose one of {WEIGHT_INITS}"
        )
    if m.dropout_mask_shared_over not in DROPOUT_MASK_LAYOUTS:
        raise DualsparseError(
            f"model.dropout_mask_shared_over {m.dropout_mask_shared_over!r} is unknown; "
            f"choose one of {DROPOUT_MASK_LAYOUTS}"
        )
    positive = (
        "batch_size",
        "eval_batch_size",
        "test_batch_size",
        "bptt",
        "epochs",
        "log_interval",
    )
    for name in positive:
        if getattr(t, name) <= 0:
            raise DualsparseError(f"train.{name} = {getattr(t, name)} must be a positive integer")
    if t.lr <= 0:
        raise DualsparseError(f"train.lr = {t.lr} must be > 0")
    if t.threshold_lr_scale < 0 or t.min_lr < 0:
        raise DualsparseError(
            "train.threshold_lr_scale and train.min_lr must be >= 0 "
            "(a negative learning rate climbs the loss)"
        )
    if t.weight_decay < 0 or t.bias_decay < 0:
        raise DualsparseError("train.weight_decay and train.bias_decay must be >= 0")
    if t.schedule not in SCHEDULES:
        raise DualsparseError(
            f"train.schedule {t.schedule!r} is unknown; choose one of {SCHEDULES}"
        )
    if len(t.betas) != 2 or not all(0.0 <= b < 1.0 for b in t.betas):
        raise DualsparseError("train.betas must be two numbers in [0, 1), e.g. 0.9,0.999")
    if not SEED_RANGE[0] <= t.seed <= SEED_RANGE[1]:
        raise DualsparseError(
            f"train.seed = {t.seed} is out of range; use an integer from 0 to 2**64 - 1"
        )
    if t.scheduler_start < 0:
        raise DualsparseError(
            f"train.scheduler_start = {t.scheduler_start} must be >= 0 (the epoch the "
            "learning-rate schedule starts at)"
        )
    if t.clip < 0 or t.patience < 0 or t.warmup_epochs < 0 or t.threads < 0:
        raise DualsparseError("train.clip, patience, warmup_epochs and threads must be >= 0")
    if t.device not in ("cpu", "cuda") and not t.device.startswith("cuda:"):
        raise DualsparseError(f"train.device {t.device!r} is unknown; use cpu or cuda")


def parameter_counts(m: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Parameters of a ``LanguageModel`` of this config, by the config key that sizes them
    (weights and biases; the tied decoder adds only its bias)."""
    gates = GATES[m.type]
    counts = {"model.emb_size": vocab_size * m.emb_size * (1 if m.tie_weights else 2)}
    counts["model.emb_size"] += vocab_size
    keys = [f"model.hidden_sizes[{i}]" for i in range(len(m.hidden_sizes))]
    sizes = [m.emb_size, *m.hidden_sizes]
    for i, h in enumerate(m.hidden_sizes):
        counts[keys[i]] = gates * h * (h + 2) + h
        # the input product grows with both sizes: charge it to the larger one
        n_in, in_key = sizes[i], (["model.emb_size", *keys])[i]
        counts[in_key if n_in > h else keys[i]] += gates * h * n_in
    if m.hidden_sizes[-1] != m.emb_size:
        last = f"model.hidden_sizes[{len(m.hidden_sizes) - 1}]"
        counts[last] += m.hidden_sizes[-1] * m.emb_size + m.emb_size
    return counts


def check_model_size(m: ModelConfig, vocab_size: int) -> None:
    """Refuse a model too large to allocate before PyTorch tries (it would fail with a
    traceback, or with luck after swapping the machine to a halt), naming the size to lower."""
    counts = parameter_counts(m, vocab_size)
    total = sum(counts.values())
    if total > MAX_PARAMETERS:
        key = max(counts, key=counts.get)
        raise DualsparseError(
            f"the model would hold {total:,} parameters ({4 * total / 2**30:,.0f} GiB of "
            f"float32 weights, about 4 times that to train), more than the {MAX_PARAMETERS:,} "
            f"dualsparse allows; lower {key} (it sizes {counts[key]:,} of them)"
        )


def preset_names() -> list[str]:
    files = resources.files("dualsparse") / "presets"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> RunConfig:
    if name not in preset_names():
        raise DualsparseError(
            f"unknown preset {name!r}; available presets: {', '.join(preset_names())}"
        )
    text = (resources.files("dualsparse") / "presets" / f"{name}.yaml").read_text()
    return RunConfig.from_dict(yaml.safe_load(text), source=f"preset {name}")


def load_config_file(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise DualsparseError(f"config file {path} does not exist; give a YAML or JSON file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0]
        raise DualsparseError(f"config file {path} is not valid YAML ({reason}); fix it") from None
    return RunConfig.from_dict(data or {}, source=str(path))


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars)."""
    data = cfg.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or section not in data:
            raise DualsparseError(
                f"--set {item!r} is not of the form model.KEY=VALUE or train.KEY=VALUE"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        data[section][name] = value
    return RunConfig.from_dict(data, source="--set")


def resolve_config(preset: str | None, config_file: str | None, overrides: list[str]) -> RunConfig:
    if (preset is None) == (config_file is None):
        raise DualsparseError("give exactly one of --preset NAME or --config FILE")
    cfg = load_preset(preset) if preset else load_config_file(config_file)
    return apply_overrides(cfg, overrides or [])


def config_to_json(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
