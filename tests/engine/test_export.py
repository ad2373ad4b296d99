"""The deployment format: CSC round trips, and every kind of damage rejected in one line."""

import json
import stat

import numpy as np
import pytest
from engine_helpers import export_fixture, random_model
from safetensors.numpy import load_file, save_file

from dualsparse.engine.export import HEADER_FILE, TENSOR_FILE, load_export
from dualsparse.engine.format import csc_from_dense, weight_sparsity
from dualsparse.errors import DualsparseError


@pytest.fixture
def export_dir(tmp_path):
    return export_fixture(tmp_path)


def test_csc_round_trip_keeps_exact_nonzeros():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(7, 5)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.6] = 0.0
    dense[:, 2] = 0.0  # an empty column
    csc = csc_from_dense(dense)
    assert csc.nnz == int((dense != 0).sum())
    assert csc.row_indices.dtype == np.uint16
    assert csc.col_ptr[0] == 0 and csc.col_ptr[3] == csc.col_ptr[2]
    np.testing.assert_array_equal(csc.to_dense(), dense)
    np.testing.assert_array_equal(csc.column_nnz(), (dense != 0).sum(axis=0))


def test_csc_uses_wide_indices_only_when_rows_exceed_uint16():
    assert csc_from_dense(np.ones((65536, 1))).row_indices.dtype == np.uint16
    assert csc_from_dense(np.ones((65537, 1))).row_indices.dtype == np.int32


@pytest.mark.parametrize("model_type", ["egru", "lstm", "gru"])
def test_export_round_trip_matches_the_model(model_type, export_dir):
    model = random_model(model_type, 0.6)
    loaded = load_export(export_dir(model))
    params = {n: p.detach().numpy() for n, p in model.named_parameters()}
    for layer in range(2):
        w_hh = params[f"layers.{layer}.weight_hh"]
        np.testing.assert_array_equal(
            loaded.matrices[f"layer{layer}.W_ih"].to_dense(), params[f"layers.{layer}.weight_ih"]
        )
        if model_type == "egru":
            hidden = w_hh.shape[1]
            np.testing.assert_array_equal(
                loaded.matrices[f"layer{layer}.U_ur"].to_dense(), w_hh[: 2 * hidden]
            )
            np.testing.assert_array_equal(
                loaded.matrices[f"layer{layer}.U_z"].to_dense(), w_hh[2 * hidden :]
            )
            np.testing.assert_array_equal(
                loaded.dense[f"layer{layer}.threshold"], params[f"layers.{layer}.threshold"]
            )
        else:
            np.testing.assert_array_equal(loaded.matrices[f"layer{layer}.W_hh"].to_dense(), w_hh)
    np.testing.assert_array_equal(
        loaded.matrices["projection"].to_dense(), params["projection.weight"]
    )
    np.testing.assert_array_equal(loaded.decoder_weight, params["encoder.weight"])
    assert loaded.tied and loaded.projection
    assert weight_sparsity(loaded) == pytest.approx(0.6, abs=0.01)


def _edit_header(directory, edit):
    path = directory / HEADER_FILE
    header = json.loads(path.read_text())
    edit(header)
    path.write_text(json.dumps(header))


def _edit_tensors(directory, edit):
    path = directory / TENSOR_FILE
    tensors = dict(load_file(str(path)))
    edit(tensors)
    save_file(tensors, str(path))


def _set(tensors, name, value):
    tensors[name] = value


def _swap_two_ptrs(tensors):
    ptr = tensors["layer0.W_ih.col_ptr"].copy()
    ptr[1], ptr[2] = ptr[2], ptr[1]
    tensors["layer0.W_ih.col_ptr"] = ptr


def _row_out_of_range(tensors):
    rows = tensors["layer1.U_z.row_indices"].copy()
    rows[-1] = 6  # layer 1 has 6 units, rows 0..5
    tensors["layer1.U_z.row_indices"] = rows


def _rows_unsorted(tensors):
    ptr, rows = tensors["layer0.W_ih.col_ptr"], tensors["layer0.W_ih.row_indices"].copy()
    rows[ptr[0]], rows[ptr[0] + 1] = rows[ptr[0] + 1], rows[ptr[0]]
    tensors["layer0.W_ih.row_indices"] = rows


def _nan_bias(tensors):
    bias = tensors["layer0.bias"].copy()
    bias[0] = np.nan
    tensors["layer0.bias"] = bias


DAMAGE = {
    "not json": (lambda d: (d / HEADER_FILE).write_text("{not json"), "not valid JSON"),
    "wrong version": (
        lambda d: _edit_header(d, lambda h: h.update(version=99)),
        "format version 99",
    ),
    "wrong format": (
        lambda d: _edit_header(d, lambda h: h.update(format="other")),
        "is not a dualsparse-engine header",
    ),
    "header shape": (
        lambda d: _edit_header(d, lambda h: h["hidden_sizes"].__setitem__(0, 11)),
        "shape",
    ),
    "nnz disagrees": (
        lambda d: _edit_header(d, lambda h: h["matrices"]["layer0.U_z"].update(nnz=1)),
        "declares 1 nonzeros",
    ),
    "vocabulary size": (lambda d: _edit_header(d, lambda h: h["itos"].pop()), "itos"),
    "tensor shape": (
        lambda d: _edit_tensors(d, lambda t: _set(t, "layer0.threshold", np.zeros(9, np.float32))),
        r"layer0.threshold has shape \[9\], expected \[10\]",
    ),
    "missing tensor": (
        lambda d: _edit_tensors(d, lambda t: t.pop("decoder.bias")),
        "decoder.bias is missing",
    ),
    "extra tensor": (
        lambda d: _edit_tensors(d, lambda t: _set(t, "spy", np.zeros(1))),
        "does not define",
    ),
    "wrong dtype": (
        lambda d: _edit_tensors(
            d, lambda t: _set(t, "layer1.U_z.col_ptr", t["layer1.U_z.col_ptr"].astype(np.int32))
        ),
        "dtype int32",
    ),
    "row out of range": (lambda d: _edit_tensors(d, _row_out_of_range), "row 6 outside 0..5"),
    "non-monotone col_ptr": (lambda d: _edit_tensors(d, _swap_two_ptrs), "never decrease"),
    "rows unsorted": (lambda d: _edit_tensors(d, _rows_unsorted), "increase strictly"),
    "NaN": (lambda d: _edit_tensors(d, _nan_bias), "NaN"),
    "truncated": (
        lambda d: (d / TENSOR_FILE).write_bytes((d / TENSOR_FILE).read_bytes()[:-100]),
        "truncated or corrupted",
    ),
    "no tensors": (lambda d: (d / TENSOR_FILE).unlink(), "missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_malformed_exports_are_rejected_with_one_line(damage, export_dir):
    directory = export_dir(random_model("egru", 0.5))
    break_it, message = DAMAGE[damage]
    break_it(directory)
    with pytest.raises(DualsparseError, match=message) as info:
        load_export(directory)
    assert "\n" not in str(info.value)


def test_missing_directory_says_how_to_make_one(tmp_path):
    with pytest.raises(DualsparseError, match="dualsparse export"):
        load_export(tmp_path / "nowhere")


def test_export_files_are_shared_readable_and_replace_an_old_export(export_dir):
    """Written through fileio: mode 0644 (not mkstemp's 0600), no temporary files left,
    and a second export over the first replaces it."""
    directory = export_dir(random_model("gru", 0.5))
    export_dir(random_model("egru", 0.5))  # same directory name: replaces the GRU
    assert sorted(p.name for p in directory.iterdir()) == [HEADER_FILE, TENSOR_FILE]
    for name in (HEADER_FILE, TENSOR_FILE):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o644
    assert load_export(directory).model_type == "egru"


@pytest.mark.parametrize(
    "model_type, edit, message",
    [
        ("egru", {"reset_after": "yes"}, "'reset_after' must be true or false"),
        ("lstm", {"reset_after": True}, "'reset_after': true is an EGRU option"),
        ("gru", {"carry_local_state": False}, "'carry_local_state': false is an EGRU option"),
        ("egru", {"carry_local_state": False, "window": 0}, "'window' must be a positive"),
        ("egru", {"carry_local_state": False, "window": None}, "'window' must be a positive"),
    ],
)
def test_export_refuses_bad_egru_options(model_type, edit, message, export_dir):
    directory = export_dir(random_model(model_type, 0.0))
    _edit_header(directory, lambda h: h.update(edit))
    with pytest.raises(DualsparseError, match=message):
        load_export(directory)
