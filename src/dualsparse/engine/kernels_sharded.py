"""Kernels for two (or more) threads over rows: each thread owns some units of a layer.

A layer's units are split into shards; shard s owns units bounds[s]:bounds[s+1] and the
rows of every gate block that belong to them, stored as its own CSC columns (row indices
local to the shard, ``col_ptr[s]`` pointing into values shared by all shards). Every shard
reads every active input column, so threads never write the same accumulator. EGRU needs
one barrier inside the step: U_z reads r ⊙ y_{t-1} at all active units, and r of a unit
is known only to its shard; the threads meet there inside the step's one parallel region
(``_claim``: a second region would cost another fork and join, several µs). LSTM, GRU
and the reset-after EGRU (whose U_z reads y_{t-1} itself) need none (they read a copy of
h_{t-1}).
Active lists are merged in shard order, so they stay sorted and the arithmetic is the
single-threaded arithmetic, entry for entry.

The kernels here are built from the helpers of ``kernels.py``: after editing one, delete
``src/dualsparse/engine/__pycache__`` (``engine.jit`` says why).
"""

from __future__ import annotations

import math

import numpy as np

from dualsparse.engine.jit import (
    FUSED,
    atomic_add,
    atomic_read,
    njit,
    numba,
    sleep_briefly,
    spin_pause,
)
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


# Threads meeting inside one parallel region. Its loop runs one iteration per thread (w);
# each iteration claims the shards of a phase one at a time, its own shard w first (so
# that a shard's accumulator and state stay in one core's cache when all threads are
# there), then any other unclaimed one, and runs them; before the next phase it waits
# until every shard of this one is done. A thread only ever waits for shards that another
# thread has claimed and is running, so the region finishes however the threading layer
# assigns the iterations (all of them to one thread included), and shard s computes the
# same numbers whichever thread runs it. ``sync`` [PHASES · (S + 1)] holds a claim flag
# per phase and shard, then a done counter per phase.
PHASES = 2
SPINS = 100_000  # about as long as an OpenMP barrier spins before it sleeps (milliseconds)


def sync_size(shards: int) -> int:
    return PHASES * (shards + 1)


@njit(cache=True, inline="always")
def _start_phases(sync):
    for k in range(sync.shape[0]):
        sync[k] = 0


@njit(cache=True, inline="always")
def _claim(sync, phase, count, own):
    """Shard ``own`` of ``phase`` if no thread has claimed it, else the next unclaimed one;
    -1 once all ``count`` are claimed."""
    for k in range(count):
        s = own + k if own + k < count else own + k - count
        if atomic_add(sync, phase * count + s, 1) == 0:
            return s
    return -1


@njit(cache=True, inline="always")
def _done(sync, phase, count):
    atomic_add(sync, PHASES * count + phase, 1)


@njit(cache=True, inline="always")
def _wait_done(sync, phase, count):
    """Spin (a shard takes microseconds); after SPINS turns, sleep at every turn: the thread
    being waited for may be queued behind this one, or behind another process."""
    turns = 0
    while atomic_read(sync, PHASES * count + phase) < count:
        if turns < SPINS:
            spin_pause()
            turns += 1
        else:
            sleep_briefly()


# The kernels.*_step arguments, plus ``shards`` = (bounds [S + 1], shard_active [S, widest],
# shard_n [S], sync [sync_size(S)] int64); ``acc`` is [S, gates · widest], ``stats``
# [S, LAYER_STATS] (one row per shard; the layer's active inputs are counted once, in shard
# 0's row), ``h_prev`` a copy of h_{t-1} at its active units. Shard s owns units
# bounds[s]:bounds[s+1].


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
    """``egru_step`` over shards, in one parallel region: U_z reads r ⊙ y_{t-1} at all
    active units and a unit's r is known only to its shard (``r_pre``), so the threads meet
    once inside the region (``_claim``) instead of in a second region."""
    bounds, shard_active, shard_n, sync = shards
    count, hidden = bounds.shape[0] - 1, c.shape[0]
    _start_phases(sync)
    for w in numba.prange(count):
        s = _claim(sync, 0, count, w)
        while s >= 0:  # W_ih·x, U_ur·y_{t-1}, and r ⊙ y_{t-1} at the shard's active units
            lo, size = bounds[s], bounds[s + 1] - bounds[s]
            a = acc[s]
            _shard_base(a, base, 3, hidden, lo, size)
            _shard_products(a, a, s, w_ih, x, x_active, n_x, u_ur, y, y_active, n_y, stats)
            r_pre[lo : lo + size] = a[size : 2 * size]
            first = np.searchsorted(y_active[:n_y], lo)
            last = np.searchsorted(y_active[:n_y], lo + size)
            _reset_gated(r_pre, y, y_active[first:last], last - first, ry)
            _done(sync, 0, count)
            s = _claim(sync, 0, count, w)
        _wait_done(sync, 0, count)
        s = _claim(sync, 1, count, w)
        while s >= 0:  # U_z·(r ⊙ y_{t-1}) and the cell
            lo, size = bounds[s], bounds[s + 1] - bounds[s]
            a = acc[s]
            w_z = _shard(u_z, s)
            u_z_macs = _scatter(a, 2 * size, w_z[0], w_z[1], w_z[2], ry, y_active, n_y)
            stats[s, MACS_RECURRENT + 1] += u_z_macs
            shard_n[s] = _egru_units(a, lo, size, threshold, c, y, shard_active[s])
            s = _claim(sync, 1, count, w)
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
    bounds, shard_active, shard_n, _ = shards
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
    bounds, shard_active, shard_n, _ = shards
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
    bounds, shard_active, shard_n, _ = shards
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
