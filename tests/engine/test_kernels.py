"""The compiled products on hand-made matrices: every column kind, inactive inputs skipped."""

import numpy as np

from dualsparse.engine import kernels
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
