import json

import pytest
import yaml

from conftest import error_message
from dualsparse.config import (
    RunConfig,
    apply_overrides,
    config_to_json,
    load_config_file,
    load_preset,
    preset_names,
    resolve_config,
)


def test_the_shipped_presets_are_listed():
    assert {"cpu-small-egru", "cpu-small-lstm", "paper-ptb-egru", "paper-wt2-lstm"} <= set(
        preset_names()
    )


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads(name):
    cfg = load_preset(name)
    assert cfg.model.type == name.rsplit("-", 1)[1]
    assert RunConfig.from_dict(json.loads(config_to_json(cfg))) == cfg


def test_unknown_preset_lists_the_available_ones():
    message = error_message(load_preset, "cpu-tiny-egru")
    assert "unknown preset 'cpu-tiny-egru'" in message
    assert all(name in message for name in preset_names())


def test_overrides_are_coerced_to_the_field_types():
    cfg = apply_overrides(
        RunConfig(),
        [
            "train.lr=1",
            "train.epochs=3.0",
            "model.hidden_sizes=[16, 12]",
            "train.betas=0.5,0.9",
            "model.tie_weights=false",
            "model.type=lstm",
            "train.device=cpu",
            "model.emb_size=16",
        ],
    )
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.model.hidden_sizes == [16, 12]
    assert cfg.train.betas == [0.5, 0.9] and all(isinstance(b, float) for b in cfg.train.betas)
    assert cfg.model.tie_weights is False
    assert cfg.model.type == "lstm"
    assert cfg.model.emb_size == 16


def test_overrides_leave_the_input_config_alone():
    cfg = RunConfig()
    apply_overrides(cfg, ["train.lr=1"])
    assert cfg == RunConfig()


def test_unknown_override_key_lists_the_valid_keys():
    message = error_message(apply_overrides, RunConfig(), ["train.learning_rate=0.1"])
    assert "unknown key 'learning_rate'" in message
    assert "valid keys:" in message and "lr" in message and "weight_decay" in message


@pytest.mark.parametrize("item", ["lr=0.1", "train.lr", "optim.lr=0.1"])
def test_malformed_override_shows_the_expected_form(item):
    message = error_message(apply_overrides, RunConfig(), [item])
    assert repr(item) in message and "train.KEY=VALUE" in message


INVALID = [
    ("model.dropout_emb=-0.1", "model.dropout_emb"),
    ("model.dropout_connect=1.0", "model.dropout_connect"),
    ("model.dropout_words=1.5", "model.dropout_words"),
    ("model.type=transformer", "model.type"),
    ("model.emb_size=0", "model.emb_size"),
    ("model.hidden_sizes=[16, 0]", "model.hidden_sizes"),
    ("model.hidden_sizes=[]", "model.hidden_sizes"),
    ("model.hidden_sizes=abc", "model.hidden_sizes"),
    ("model.surrogate_width=0", "model.surrogate_width"),
    ("model.surrogate_width=.nan", "model.surrogate_width"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.bptt=-8", "train.bptt"),
    ("train.epochs=0", "train.epochs"),
    ("train.epochs=2.5", "train.epochs"),
    ("train.log_interval=0", "train.log_interval"),
    ("train.lr=0", "train.lr"),
    ("train.lr=.nan", "train.lr"),
    ("train.lr=.inf", "train.lr"),
    ("train.lr=fast", "train.lr"),
    ("train.threshold_lr_scale=-1", "train.threshold_lr_scale"),
    ("train.min_lr=-0.001", "train.min_lr"),
    ("train.schedule=linear", "train.schedule"),
    ("train.betas=[0.9]", "train.betas"),
    ("train.device=tpu", "train.device"),
    ("model.weight_init=kaiming", "model.weight_init"),
    ("model.dropout_mask_shared_over=sequence", "model.dropout_mask_shared_over"),
    ("model.layer_grad_clip=-0.1", "model.layer_grad_clip"),
    ("model.reset_after=maybe", "model.reset_after"),
]


@pytest.mark.parametrize("item, key", INVALID)
def test_invalid_override_names_the_key(item, key):
    assert key in error_message(apply_overrides, RunConfig(), [item])


@pytest.mark.parametrize("item, key", INVALID)
def test_invalid_value_in_a_file_names_the_key(tmp_path, item, key):
    path = tmp_path / "bad.yaml"
    dotted, _, raw = item.partition("=")
    section, name = dotted.split(".")
    path.write_text(yaml.safe_dump({section: {name: yaml.safe_load(raw)}}), encoding="utf-8")
    assert key in error_message(load_config_file, path)


def test_config_file_takes_defaults_for_missing_keys(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text("model:\n  emb_size: 16\ntrain:\n  lr: 0.01\n", encoding="utf-8")
    cfg = load_config_file(path)
    assert cfg.model.emb_size == 16 and cfg.train.lr == 0.01
    assert cfg.model.hidden_sizes == RunConfig().model.hidden_sizes
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert load_config_file(empty) == RunConfig()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("model: [unclosed\n", "is not valid YAML"),
        ("optimizer:\n  lr: 1\n", "unknown section(s) ['optimizer']"),
        ("- model\n- train\n", "expected a mapping"),
        ("model: 16\n", "model: expected a mapping"),
        ("model:\n  width: 16\n", "unknown key 'width'"),
    ],
)
def test_bad_config_files(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    message = error_message(load_config_file, path)
    assert expected in message and str(path) in message


def test_config_file_that_is_missing_or_not_utf8(tmp_path):
    assert "does not exist" in error_message(load_config_file, tmp_path / "absent.yaml")
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model:\n  type: \xe9gru\n".encode("latin-1"))
    assert "is not valid YAML" in error_message(load_config_file, path)


def test_resolve_config_wants_exactly_one_source(tmp_path):
    for preset, path in ((None, None), ("cpu-small-egru", str(tmp_path / "x.yaml"))):
        assert "exactly one of --preset" in error_message(resolve_config, preset, path, [])
    cfg = resolve_config("cpu-small-lstm", None, ["train.epochs=2"])
    assert cfg.model.type == "lstm" and cfg.train.epochs == 2


REFERENCE_KEYS = {
    "model": {
        "reset_after": False,
        "carry_local_state": True,
        "layer_grad_clip": 0.0,
        "weight_init": "uniform",
        "dropout_mask_shared_over": "time",
    },
    "train": {"decay_thresholds": True},
}


def test_a_config_json_written_before_the_reference_options_loads_with_todays_behaviour():
    """Old runs' config.json files lack the keys; they must load as they trained."""
    old = RunConfig().to_dict()
    for section, keys in REFERENCE_KEYS.items():
        for key in keys:
            del old[section][key]
    cfg = RunConfig.from_dict(old)
    for section, keys in REFERENCE_KEYS.items():
        for key, value in keys.items():
            assert getattr(getattr(cfg, section), key) == value, f"{section}.{key}"


def test_reference_options_are_set_from_the_command_line():
    cfg = apply_overrides(
        RunConfig(),
        [
            "model.reset_after=true",
            "model.carry_local_state=false",
            "model.layer_grad_clip=0.1",
            "model.weight_init=xavier_normal",
            "model.dropout_mask_shared_over=batch",
            "train.decay_thresholds=no",
        ],
    )
    assert cfg.model.reset_after is True and cfg.model.carry_local_state is False
    assert cfg.model.layer_grad_clip == 0.1 and cfg.model.weight_init == "xavier_normal"
    assert cfg.model.dropout_mask_shared_over == "batch" and cfg.train.decay_thresholds is False


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_setting_says_where_it_comes_from(name):
    """A key line carries a comment, or the comment lines right above it do."""
    from importlib import resources

    text = (resources.files("dualsparse") / "presets" / f"{name}.yaml").read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not line.startswith("  ") or stripped.startswith("#"):
            continue
        assert "#" in line or lines[i - 1].strip().startswith("#"), f"{name}: {stripped}"
