"""Kernels for two (or more) threads over rows: each thread owns some units of a layer.

A layer's units are split into shards; shard s owns units bounds[s]:bounds[s+1] and the
rows of every gate block that belong to them, stored as its own CSC columns (row indices
local to the shard, ``col_ptr[s]`` pointing into values shared by all shards). Every shard
reads every active input column, so threads never write the same accumulator. EGRU needs
one barrier inside the step: U_z reads r ⊙ y_{t-1} at all active units, and r of a unit
is known only to its shard; LSTM, GRU and the reset-after EGRU (whose U_z reads y_{t-1}
itself) need none (they read a copy of h_{t-1}).
Active lists are merged in shard order, so they stay sorted and the arithmetic is the
single-threaded arithmetic, entry for entry.

The kernels here are built from the helpers of ``kernels.py``: after editing one, delete
``src/dualsparse/engine/__pycache__`` (``engine.jit`` says why).
"""

from __future__ import annotations

import math

from dualsparse.engine.jit import FUSED, njit, numba
from dualsparse.engine.kernels import (
    MACS_RECURRENT,
    _count_decoder,
    _count_inputs,
    _egru_units,
    _gru_units,
    _logits_part,
    _lstm_units,
    _products,
    _reset_after_candidate,
    _reset_gated,
    _scatter,
)


@njit(cache=True, inline="always")
def _shard(matrix, s):
    """Shard s's columns of a matrix stored as (values, row_indices, col_ptr [shards, cols+1])."""
    return matrix[0], matrix[1], matrix[2][s]


@njit(cache=True, inline="always")
def _shard_products(a, a_hh, s, w_ih, x, x_active, n_x, w_hh, h, h_active, n_h, stats):
    """``kernels._products`` on shard s's rows, counted in the shard's row of ``stats``."""
    _products(
        a, a_hh, _shard(w_ih, s), x, x_active, n_x, _shard(w_hh, s), h, h_active, n_h, stats[s]
    )


@njit(cache=True, inline="always")
def _shard_base(a, base, gates, hidden, lo, size):
    """The shard's rows of ``base`` (its units in every gate block), in shard order."""
    for g in range(gates):
        a[g * size : (g + 1) * size] = base[g * hidden + lo : g * hidden + lo + size]


@njit(cache=True, inline="always")
def _merge_active(shard_active, shard_n, active):
    """Concatenate the shards' active units (shard order keeps them sorted)."""
    n = 0
    for s in range(shard_n.shape[0]):
        for q in range(shard_n[s]):
            active[n] = shard_active[s, q]
            n += 1
    return n


@njit(cache=True, inline="always")
def _copy_active(source, active, n_active, target):
    """target[j] = source[j] at the active j: the previous output, kept while shards write
    the new one (LSTM and GRU read h_{t-1} and write h_t in the same parallel region)."""
    for q in range(n_active):
        target[active[q]] = source[active[q]]


# The kernels.*_step arguments, plus ``shards`` = (bounds [S + 1], shard_active [S, widest],
# shard_n [S]); ``acc`` is [S, gates · widest], ``stats`` [S, LAYER_STATS] (one row per
# shard; the layer's active inputs are counted once, in shard 0's row), ``h_prev`` a copy of
# h_{t-1} at its active units. Shard s owns units bounds[s]:bounds[s+1].


@njit(cache=True, parallel=True, fastmath=FUSED, error_model="numpy")
def egru_step_sharded(
    base,
    x,
    x_active,
    n_x,
    n_y,
    w_ih,
    u_ur,
    u_z,
    threshold,
    c,
    y,
    y_active,
    acc,
    ry,
    r_pre,
    shards,
    stats,
):
    """``egru_step`` over shards: a barrier after U_ur, since U_z reads r ⊙ y_{t-1} at all
    active units and a unit's r is known only to its shard (``r_pre``)."""
    bounds, shard_active, shard_n = shards
    hidden = c.shape[0]
    for s in numba.prange(bounds.shape[0] - 1):
        lo, size = bounds[s], bounds[s + 1] - bounds[s]
        a = acc[s]
        _shard_base(a, base, 3, hidden, lo, size)
        _shard_products(a, a, s, w_ih, x, x_active, n_x, u_ur, y, y_active, n_y, stats)
        r_pre[lo : lo + size] = a[size : 2 * size]
    _reset_gated(r_pre, y, y_active, n_y, ry)
    for s in numba.prange(bounds.shape[0] - 1):
        lo, size = bounds[s], bounds[s + 1] - bounds[s]
        a = acc[s]
        w_z = _shard(u_z, s)
        u_z_macs = _scatter(a, 2 * size, w_z[0], w_z[1], w_z[2], ry, y_active, n_y)
        stats[s, MACS_RECURRENT + 1] += u_z_macs
        shard_n[s] = _egru_units(a, lo, size, threshold, c, y, shard_active[s])
    _count_inputs(stats[0], n_x, n_y)
    return _merge_active(shard_active, shard_n, y_active)


@njit(cache=True, parallel=True, fastmath=FUSED, error_model="numpy")
def egru_reset_after_step_sharded(
    base,
    x,
    x_active,
    n_x,
    n_y,
    w_ih,
    u_ur,
    u_z,
    bias_hz,
    threshold,
    c,
    y,
    y_active,
    acc,
    hz,
    y_prev,
    shards,
    stats,
):
    """``egru_reset_after_step`` over shards, without a barrier: U_z reads y_{t-1} itself, so
    a unit's gates are all its own (``hz`` [S, widest]; ``y_prev`` as LSTM's ``h_prev``)."""
    bounds, shard_active, shard_n = shards
    hidden = c.shape[0]
    _copy_active(y, y_active, n_y, y_prev)
    for s in numba.prange(bounds.shape[0] - 1):
        lo, size = bounds[s], bounds[s + 1] - bounds[s]
        a, h = acc[s], hz[s]
        _shard_base(a, base, 3, hidden, lo, size)
        _shard_products(a, a, s, w_ih, x, x_active, n_x, u_ur, y_prev, y_active, n_y, stats)
        h[:size] = bias_hz[lo : lo + size]
        w_z = _shard(u_z, s)
        u_z_macs = _scatter(h, 0, w_z[0], w_z[1], w_z[2], y_prev, y_active, n_y)
        stats[s, MACS_RECURRENT + 1] += u_z_macs
        _reset_after_candidate(a, h, size)
        shard_n[s] = _egru_units(a, lo, size, threshold, c, y, shard_active[s])
    _count_inputs(stats[0], n_x, n_y)
    return _merge_active(shard_active, shard_n, y_active)


@njit(cache=True, parallel=True, fastmath=FUSED, error_model="numpy")
def lstm_step_sharded(
    base, x, x_active, n_x, n_h, w_ih, w_hh, c, h, h_active, acc, h_prev, shards, stats
):
    """``lstm_step`` over shards (no barrier: a unit's gates are all its own)."""
    bounds, shard_active, shard_n = shards
    hidden = h.shape[0]
    _copy_active(h, h_active, n_h, h_prev)
    for s in numba.prange(bounds.shape[0] - 1):
        lo, size = bounds[s], bounds[s + 1] - bounds[s]
        a = acc[s]
        _shard_base(a, base, 4, hidden, lo, size)
        _shard_products(a, a, s, w_ih, x, x_active, n_x, w_hh, h_prev, h_active, n_h, stats)
        shard_n[s] = _lstm_units(a, lo, size, c, h, shard_active[s])
    _count_inputs(stats[0], n_x, n_h)
    return _merge_active(shard_active, shard_n, h_active)


@njit(cache=True, parallel=True, fastmath=FUSED, error_model="numpy")
def gru_step_sharded(
    base, x, x_active, n_x, n_h, w_ih, w_hh, bias_hh, h, h_active, gi, gh, h_prev, shards, stats
):
    """``gru_step`` over shards (no barrier); ``gi`` and ``gh`` are [S, 3 · widest]."""
    bounds, shard_active, shard_n = shards
    hidden = h.shape[0]
    _copy_active(h, h_active, n_h, h_prev)
    for s in numba.prange(bounds.shape[0] - 1):
        lo, size = bounds[s], bounds[s + 1] - bounds[s]
        _shard_base(gi[s], base, 3, hidden, lo, size)
        _shard_base(gh[s], bias_hh, 3, hidden, lo, size)
        _shard_products(gi[s], gh[s], s, w_ih, x, x_active, n_x, w_hh, h_prev, h_active, n_h, stats)
        shard_n[s] = _gru_units(gi[s], gh[s], lo, size, h, shard_active[s])
    _count_inputs(stats[0], n_x, n_h)
    return _merge_active(shard_active, shard_n, h_active)


@njit(cache=True, parallel=True, fastmath=FUSED, error_model="numpy")
def decoder_logits_sharded(
    bias, weight_t, col_nnz, x, x_active, n_x, logits, scratch, bounds, part_max, part_sum, stats
):
    """``decoder_logits`` with the vocabulary split at ``bounds`` across threads."""
    for s in numba.prange(bounds.shape[0] - 1):
        lo, hi = bounds[s], bounds[s + 1]
        part_max[s], part_sum[s] = _logits_part(
            logits, lo, hi, bias, weight_t, x, x_active, n_x, scratch
        )
    top = part_max[0]
    for s in range(1, part_max.shape[0]):  # a loop: part_max.max() would be a parallel region
        top = max(top, part_max[s])
    total = 0.0
    for s in range(part_max.shape[0]):
        total += part_sum[s] * math.exp(part_max[s] - top)
    _count_decoder(stats, col_nnz, x_active, n_x)
    return top + math.log(total)
