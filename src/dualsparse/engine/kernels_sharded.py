"""Kernels for two (or more) threads over rows: each thread owns some units of a layer.

A layer's units are split into shards; shard s owns units bounds[s]:bounds[s+1] and the
rows of every gate block that belong to them, stored as its own CSC columns (row indices
local to the shard, ``col_ptr[s]`` pointing into values shared by all shards). Every shard
reads every active input column, so threads never write the same accumulator. EGRU needs
one barrier inside the step: U_z reads r ⊙ y_{t-1} at all active units, and r of a unit
is known only to its shard; LSTM and GRU need none (they read a copy of h_{t-1}).
Active lists are merged in shard order, so they stay sorted and the arithmetic is the
single-threaded arithmetic, entry for entry.
"""

from __future__ import annotations

import math

from dualsparse.engine.kernels import (
    FUSED,
    _add_columns,
    _scatter,
    _sigmoid,
    _tanh,
    njit,
    numba,
)


@njit(cache=True, inline="always")
def _shard_base(a, base, gates, hidden, lo, size):
    """The shard's rows of ``base`` (its units in every gate block), in shard order."""
    for g in range(gates):
        for i in range(size):
            a[g * size + i] = base[g * hidden + lo + i]


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


@njit(cache=True, parallel=True, fastmath=FUSED)
def egru_step_sharded(
    base,
    x,
    x_active,
    n_x,
    wih_v,
    wih_r,
    wih_p,
    uur_v,
    uur_r,
    uur_p,
    uz_v,
    uz_r,
    uz_p,
    bounds,
    threshold,
    c,
    y,
    y_active,
    n_y,
    acc,
    r_full,
    ry,
    shard_active,
    shard_n,
    stats,
):
    """``egru_step`` over shards in parallel; ``acc`` [S, 3·max shard size], ``stats`` [S, 5]."""
    hidden = c.shape[0]
    shards = bounds.shape[0] - 1
    for s in numba.prange(shards):
        lo, h = bounds[s], bounds[s + 1] - bounds[s]
        a = acc[s]
        _shard_base(a, base, 3, hidden, lo, h)
        stats[s, 0] += _scatter(a, 0, wih_v, wih_r, wih_p[s], x, x_active, n_x)
        stats[s, 1] += _scatter(a, 0, uur_v, uur_r, uur_p[s], y, y_active, n_y)
        for i in range(h):
            a[i] = _sigmoid(a[i])
            r_full[lo + i] = a[h + i]  # r's pre-activation; σ only where y_{t-1} is active
    for q in range(n_y):
        j = y_active[q]
        ry[j] = _sigmoid(r_full[j]) * y[j]
    for s in numba.prange(shards):
        lo, h = bounds[s], bounds[s + 1] - bounds[s]
        a = acc[s]
        stats[s, 2] += _scatter(a, 2 * h, uz_v, uz_r, uz_p[s], ry, y_active, n_y)
        n = 0
        for i in range(h):
            unit = lo + i
            z = _tanh(a[2 * h + i])
            c_pre = c[unit] + a[i] * (z - c[unit])
            if c_pre > threshold[unit]:
                y[unit] = c_pre
                c[unit] = c_pre - threshold[unit]
                shard_active[s, n] = unit
                n += 1
            else:
                y[unit] = 0.0
                c[unit] = c_pre
        shard_n[s] = n
    stats[0, 3] += n_x
    stats[0, 4] += n_y
    return _merge_active(shard_active, shard_n, y_active)


@njit(cache=True, parallel=True, fastmath=FUSED)
def lstm_step_sharded(
    base,
    x,
    x_active,
    n_x,
    wih_v,
    wih_r,
    wih_p,
    whh_v,
    whh_r,
    whh_p,
    bounds,
    c,
    h,
    h_prev,
    h_active,
    n_h,
    acc,
    shard_active,
    shard_n,
    stats,
):
    """``lstm_step`` over shards in parallel (no barrier: a unit's gates are all its own)."""
    hidden = c.shape[0]
    _copy_active(h, h_active, n_h, h_prev)
    for s in numba.prange(bounds.shape[0] - 1):
        lo, k = bounds[s], bounds[s + 1] - bounds[s]
        a = acc[s]
        _shard_base(a, base, 4, hidden, lo, k)
        stats[s, 0] += _scatter(a, 0, wih_v, wih_r, wih_p[s], x, x_active, n_x)
        stats[s, 1] += _scatter(a, 0, whh_v, whh_r, whh_p[s], h_prev, h_active, n_h)
        n = 0
        for i in range(k):
            unit = lo + i
            gate_i = _sigmoid(a[i])
            gate_f = _sigmoid(a[k + i])
            gate_g = _tanh(a[2 * k + i])
            gate_o = _sigmoid(a[3 * k + i])
            c[unit] = gate_f * c[unit] + gate_i * gate_g
            h[unit] = gate_o * _tanh(c[unit])
            if h[unit] != 0.0:
                shard_active[s, n] = unit
                n += 1
        shard_n[s] = n
    stats[0, 3] += n_x
    stats[0, 4] += n_h
    return _merge_active(shard_active, shard_n, h_active)


@njit(cache=True, parallel=True, fastmath=FUSED)
def gru_step_sharded(
    base,
    bias_hh,
    x,
    x_active,
    n_x,
    wih_v,
    wih_r,
    wih_p,
    whh_v,
    whh_r,
    whh_p,
    bounds,
    h,
    h_prev,
    h_active,
    n_h,
    acc,
    acc_hh,
    shard_active,
    shard_n,
    stats,
):
    """``gru_step`` over shards in parallel (no barrier: a unit's gates are all its own)."""
    hidden = h.shape[0]
    _copy_active(h, h_active, n_h, h_prev)
    for s in numba.prange(bounds.shape[0] - 1):
        lo, k = bounds[s], bounds[s + 1] - bounds[s]
        gi, gh = acc[s], acc_hh[s]
        _shard_base(gi, base, 3, hidden, lo, k)
        _shard_base(gh, bias_hh, 3, hidden, lo, k)
        stats[s, 0] += _scatter(gi, 0, wih_v, wih_r, wih_p[s], x, x_active, n_x)
        stats[s, 1] += _scatter(gh, 0, whh_v, whh_r, whh_p[s], h_prev, h_active, n_h)
        n = 0
        for i in range(k):
            unit = lo + i
            r = _sigmoid(gi[i] + gh[i])
            z = _sigmoid(gi[k + i] + gh[k + i])
            cand = _tanh(gi[2 * k + i] + r * gh[2 * k + i])
            h[unit] = (1.0 - z) * cand + z * h[unit]
            if h[unit] != 0.0:
                shard_active[s, n] = unit
                n += 1
        shard_n[s] = n
    stats[0, 3] += n_x
    stats[0, 4] += n_h
    return _merge_active(shard_active, shard_n, h_active)


@njit(cache=True, parallel=True, fastmath=FUSED)
def decoder_logits_sharded(
    bias, weight_t, col_nnz, x, x_active, n_x, logits, bounds, part_max, part_sum, stats
):
    """``decoder_logits`` with the vocabulary split at ``bounds`` across threads."""
    for s in numba.prange(bounds.shape[0] - 1):
        lo, hi = bounds[s], bounds[s + 1]
        for v in range(lo, hi):
            logits[v] = bias[v]
        _add_columns(logits, lo, hi, weight_t, x, x_active, n_x)
        top = logits[lo]
        for v in range(lo + 1, hi):
            if logits[v] > top:
                top = logits[v]
        total = 0.0
        for v in range(lo, hi):
            total += math.exp(float(logits[v]) - top)
        part_max[s] = top
        part_sum[s] = total
    top = part_max.max()
    total = 0.0
    for s in range(part_max.shape[0]):
        total += part_sum[s] * math.exp(part_max[s] - top)
    for a in range(n_x):
        stats[0] += col_nnz[x_active[a]]
    stats[1] += n_x
    return top + math.log(total)
