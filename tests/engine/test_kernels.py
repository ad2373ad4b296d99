"""The compiled products on hand-made matrices: every column kind, inactive inputs skipped."""

import numpy as np

from dualsparse.engine import kernels, scalar_math
from dualsparse.engine.format import csc_from_dense


def test_sparse_product_handles_dense_runs_scattered_and_empty_columns():
    weight = np.array(
        [[1, 0, 0, 2, 5], [2, 0, 3, 0, 6], [3, 0, 4, 0, 0], [4, 0, 0, 7, 0]], dtype=np.float32
    )
    # col 0 unpruned, col 1 empty, col 2 a run inside, col 3 scattered, col 4 a run at the top
    csc = csc_from_dense(weight)
    x = np.array([1.5, 9.0, -2.0, 0.0, 0.5], dtype=np.float32)  # x_3 = 0: never read
    x_active = np.zeros(5, dtype=np.int64)
    n_x = kernels.find_active(x, x_active)
    assert list(x_active[:n_x]) == [0, 1, 2, 4]
    out, out_active = np.zeros(4, dtype=np.float32), np.zeros(4, dtype=np.int64)
    stats = np.zeros(2, dtype=np.int64)
    n_out = kernels.sparse_product(
        out, csc.values, csc.row_indices, csc.col_ptr, x, x_active, n_x, out_active, stats
    )
    np.testing.assert_allclose(out, weight @ x, rtol=1e-6)
    assert n_out == int((weight @ x != 0).sum())
    # MACs: nnz of the active columns 0, 1, 2, 4 = 4 + 0 + 2 + 2
    assert list(stats) == [8, 4]


def test_gate_exp_is_within_one_ulp_of_libm_and_keeps_nan():
    """The engine's own e^v (vectorisable, no library call) against math.exp over the whole
    range the gates use, the clamps beyond it, and NaN."""
    import math

    from numba import njit

    @njit(error_model="numpy")
    def gate_exp(values, out):
        for i in range(values.shape[0]):
            out[i] = scalar_math.exp(values[i])

    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.uniform(-700, 700, 200_000), rng.uniform(-20, 20, 200_000), [0.0, -1e-300, 1e-300]]
    )
    got = np.empty_like(values)
    gate_exp(values, got)
    expected = np.array([math.exp(v) for v in values])
    np.testing.assert_allclose(got, expected, rtol=2.3e-16, atol=0)
    # in float32's range, float32 results round exactly as from libm's exp
    small = np.abs(values) < 88
    assert np.array_equal(got[small].astype(np.float32), expected[small].astype(np.float32))
    edge = np.array([np.nan, -np.inf, -800.0, np.inf, 800.0])
    gate_exp(edge, out := np.empty(5))
    assert np.isnan(out[0])
    assert 0 < out[1] == out[2] < 1e-300  # clamped at -700: sigmoid saturates to exactly 0/1
    assert out[3] == out[4] > 1e300
    sigmoid_of_big = np.float32(1.0 / (1.0 + out[3]))
    assert sigmoid_of_big == 0.0


def test_active_list_is_the_nonzero_positions_in_order():
    rng = np.random.default_rng(1)
    x = np.where(rng.random(1000) < 0.15, rng.standard_normal(1000), 0.0).astype(np.float32)
    x[-1], x[0] = 1.0, -0.0  # last position active, a negative zero inactive
    active = np.full(1000, -1, dtype=np.int64)
    n = kernels.find_active(x, active)
    assert list(active[:n]) == list(np.flatnonzero(x))


def test_layer_counters_have_a_slot_for_every_recurrent_product_of_every_cell():
    """A cell with more recurrent products than ``MACS_RECURRENT`` leaves room for would
    count into the active-input slots."""
    from dualsparse.architecture import CELLS

    widest = max(len(cell.recurrent) for cell in CELLS.values())
    macs = [kernels.MACS_INPUT, *(kernels.MACS_RECURRENT + k for k in range(widest))]
    slots = [*macs, kernels.ACTIVE_INPUTS, kernels.ACTIVE_RECURRENT]
    assert sorted(slots) == list(range(kernels.LAYER_STATS))
    head = [kernels.HEAD_MACS, kernels.HEAD_ACTIVE_INPUTS]
    assert sorted(head) == list(range(kernels.HEAD_STATS))
