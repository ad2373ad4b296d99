"""Compiled (numba) kernels of one streaming step: event-driven products and the cells.

The products are column scatters over compressed sparse columns: for every
*active* input j (a_j ≠ 0, listed in ``active[:n_active]``) add a_j · W[:, j]
into the accumulator, reading only the stored nonzeros of that column. This is
exactly the event-driven cost Σ_j [a_j ≠ 0] · nnz(W[:, j]) that ``sparsity.macs``
counts, and every kernel returns or accumulates that count, so the engine's MAC
numbers are measured on the work it actually did.

Each cell kernel does a whole layer for one token (all gates: input product,
recurrent products, nonlinearities, state update) and writes the list of its
nonzero outputs, which is the ``active`` list of the next layer and of its own
recurrent product at the next token. Nothing here allocates: accumulators and
state are preallocated by ``runtime``.

What the kernels count goes into ``stats``, int64 counters summed over tokens, laid out
by the constants below (``MACS_INPUT`` …) so that ``runtime.Engine.counts`` reads them by
name.

The arithmetic follows the PyTorch layers operation for operation (σ, tanh,
ĉ = c + u (z − c), reset by subtraction; LSTM and GRU in torch's gate order) in
float32, so log-probabilities agree to float rounding (the summation order of
the products differs).
"""

from __future__ import annotations

import math

from dualsparse.engine.jit import FUSED, njit, prefetch
from dualsparse.engine.scalar_math import exp, sigmoid, tanh

# A layer's counters (``stats``, int64 [LAYER_STATS]; one row per shard when sharded):
MACS_INPUT = 0  # event MACs of the input product W_ih
MACS_RECURRENT = 1  # of the recurrent products: the k-th (architecture.Cell.recurrent) at + k
ACTIVE_INPUTS = 3  # nonzero entries of the layer's input
ACTIVE_RECURRENT = 4  # nonzero entries of its previous output
LAYER_STATS = 5
# A head product's counters (projection, decoder; int64 [HEAD_STATS]):
HEAD_MACS = 0  # event MACs
HEAD_ACTIVE_INPUTS = 1  # nonzero entries of its input
HEAD_STATS = 2


@njit(cache=True, inline="always")
def _prefetch_column(values, rows, start, stop):
    """Every cache line of one stored column, values and row indices."""
    for k in range(start, stop, 64 // values.itemsize):
        prefetch(values, k)
    for k in range(start, stop, 64 // rows.itemsize):
        prefetch(rows, k)


@njit(cache=True, inline="always")
def _scatter(acc, offset, values, rows, col_ptr, x, active, n_active):
    """acc[offset + i] += Σ_{active j} W[i, j] · x[j]; returns the MACs done.

    Indexing a slice with the unsigned row index (instead of ``acc[offset + row]``)
    lets the compiler drop the negative-index check from the inner loop. A column whose
    rows form one contiguous run is a dense axpy without index reads, which vectorises.
    In a pruned matrix the next active column is prefetched whole while this one is
    added: which columns come next is known, but not to the hardware prefetcher. Dense
    and long columns are not: prefetching them slowed the dense LSTM. (docs/engine.md,
    "Speed levers", has the measurements.)
    """
    target = acc[offset:]
    macs = 0
    for a in range(n_active):
        j = active[a]
        xj = x[j]
        start, stop = col_ptr[j], col_ptr[j + 1]
        count = stop - start
        column, column_rows = values[start:stop], rows[start:stop]
        if count > 0 and column_rows[count - 1] - column_rows[0] == count - 1:
            # the stored rows are one contiguous run (an unpruned column, or an unpruned
            # stretch): a dense axpy without index reads, which the compiler vectorises
            run = target[column_rows[0] : column_rows[0] + count]
            for k in range(count):
                run[k] += column[k] * xj
        else:
            if a + 1 < n_active:  # a pruned matrix: short columns, fetch the next one
                following = active[a + 1]
                begin, end = col_ptr[following], col_ptr[following + 1]
                if end - begin <= 2048:  # longer ones the hardware prefetcher picks up
                    _prefetch_column(values, rows, begin, end)
            # k counts from 0 over the column's slices, so it is known to be nonnegative:
            # no wrap-around arithmetic per nonzero
            for k in range(count):
                target[column_rows[k]] += column[k] * xj
        macs += count
    return macs


@njit(cache=True, inline="always")
def _compact(out, lo, size, active):
    """The units lo .. lo + size whose output is nonzero, into ``active``; returns how many.
    Branch-free (always write, advance on a nonzero): at 10-25% activity a branch per unit
    mispredicts often."""
    n = 0
    part = out[lo : lo + size]
    for i in range(size):
        active[n] = lo + i
        n += part[i] != 0.0
    return n


@njit(cache=True)
def find_active(x, active):
    """Indices of the nonzero entries of ``x`` into ``active``; returns how many."""
    return _compact(x, 0, x.shape[0], active)


@njit(cache=True, inline="always")
def _products(acc, acc_hh, w_ih, x, x_active, n_x, w_hh, h, h_active, n_h, stats):
    """acc += W_ih·x and acc_hh += W_hh·h over the active inputs (one array, except for the
    GRU's n gate, which needs W_hn·h apart), their MACs counted. A matrix is the tuple
    (values, row_indices, col_ptr)."""
    stats[MACS_INPUT] += _scatter(acc, 0, w_ih[0], w_ih[1], w_ih[2], x, x_active, n_x)
    stats[MACS_RECURRENT] += _scatter(acc_hh, 0, w_hh[0], w_hh[1], w_hh[2], h, h_active, n_h)


@njit(cache=True, inline="always")
def _count_inputs(stats, n_x, n_h):
    stats[ACTIVE_INPUTS] += n_x
    stats[ACTIVE_RECURRENT] += n_h


# The cells, over units lo .. lo + size: ``acc`` holds their gate pre-activations in blocks
# of ``size`` (the whole layer with lo = 0 on one thread, a shard's units in
# ``kernels_sharded``); each writes the units' new state and output, lists the nonzero
# outputs in ``out_active`` and returns how many. The loop over units has no branch and no
# library call, so the compiler runs it several units per instruction; listing the
# outputs is apart.
# State is indexed through slices from ``lo`` with a counter from 0: indexing ``c[lo + i]``
# kept the shards' loops scalar (the compiler cannot rule out a negative index).


@njit(cache=True, inline="always")
def _egru_units(acc, lo, size, threshold, c, y, out_active):
    """u = σ(acc_u), ĉ = c + u (z − c), y = ĉ·H(ĉ − θ), c = ĉ − θ·H(ĉ − θ) (DEVELOPERS.md,
    "EGRU cell"); ``acc`` holds u's and z's pre-activations."""
    cs, ys, thetas = c[lo : lo + size], y[lo : lo + size], threshold[lo : lo + size]
    u_pre, z_pre = acc[:size], acc[2 * size : 3 * size]
    for i in range(size):
        u_pre[i] = sigmoid(u_pre[i])  # u, rounded to the engine's precision as in PyTorch
        u = u_pre[i]
        z = tanh(z_pre[i])
        c_prev, theta = cs[i], thetas[i]
        c_pre = c_prev + u * (z - c_prev)
        fired = c_pre > theta
        ys[i] = c_pre if fired else 0.0
        cs[i] = c_pre - theta if fired else c_pre
    return _compact(y, lo, size, out_active)


@njit(cache=True, inline="always")
def _lstm_units(acc, lo, size, c, h, out_active):
    """Gates i, f, g, o in torch's order."""
    cs, hs = c[lo : lo + size], h[lo : lo + size]
    i_pre, f_pre = acc[:size], acc[size : 2 * size]
    g_pre, o_pre = acc[2 * size : 3 * size], acc[3 * size : 4 * size]
    for i in range(size):
        gate_i = sigmoid(i_pre[i])
        gate_f = sigmoid(f_pre[i])
        gate_g = tanh(g_pre[i])
        gate_o = sigmoid(o_pre[i])
        cs[i] = gate_f * cs[i] + gate_i * gate_g
        hs[i] = gate_o * tanh(cs[i])
    return _compact(h, lo, size, out_active)


@njit(cache=True, inline="always")
def _gru_units(gi, gh, lo, size, h, out_active):
    """Gates r, z, n in torch's order: n = tanh(W_in x + b_in + r (W_hn h + b_hn)); ``gi`` and
    ``gh`` hold W_ih·x + b_ih and W_hh·h + b_hh."""
    hs = h[lo : lo + size]
    r_i, z_i, n_i = gi[:size], gi[size : 2 * size], gi[2 * size : 3 * size]
    r_h, z_h, n_h = gh[:size], gh[size : 2 * size], gh[2 * size : 3 * size]
    for i in range(size):
        r = sigmoid(r_i[i] + r_h[i])
        z = sigmoid(z_i[i] + z_h[i])
        cand = tanh(n_i[i] + r * n_h[i])
        hs[i] = (1.0 - z) * cand + z * hs[i]
    return _compact(h, lo, size, out_active)


@njit(cache=True, inline="always")
def _reset_gated(r_pre, y, y_active, n_y, ry):
    """ry = σ(r) ⊙ y_{t-1}, the input of U_z: nonzero exactly where y_{t-1} is, so r is
    needed (and σ evaluated) only there."""
    for a in range(n_y):
        j = y_active[a]
        ry[j] = sigmoid(r_pre[j]) * y[j]


@njit(cache=True, inline="always")
def _reset_after_candidate(acc, hz, size):
    """Reset-after (``model.reset_after``): acc_z += σ(acc_r) ⊙ hz, hz = U_z·y_{t-1} + b_hz,
    so that tanh(acc_z) is tanh(W_z x + b_z + r ⊙ (U_z y + b_hz)). A pass of its own over
    all units (r is needed at every unit here), branch-free, before ``_egru_units``."""
    r_pre, z_pre = acc[size : 2 * size], acc[2 * size : 3 * size]
    for i in range(size):
        r = sigmoid(r_pre[i])  # rounded to the engine's precision, as PyTorch stores r
        z_pre[i] += r * hz[i]


# One layer, one token. ``base`` is the bias (EGRU b; LSTM b_ih + b_hh; GRU b_ih) or the
# row of the first-layer table W_ih·E + b (then n_x = 0: the input product is done);
# ``n_y``/``n_h`` is how many outputs were active at the last token. They return the new count.


@njit(cache=True, fastmath=FUSED, error_model="numpy")
def egru_step(
    base, x, x_active, n_x, n_y, w_ih, u_ur, u_z, threshold, c, y, y_active, acc, ry, stats
):
    """One EGRU layer (DEVELOPERS.md, "EGRU cell"); ``acc`` [3H] holds u, r, z."""
    hidden = c.shape[0]
    acc[:] = base
    _products(acc, acc, w_ih, x, x_active, n_x, u_ur, y, y_active, n_y, stats)
    _count_inputs(stats, n_x, n_y)
    _reset_gated(acc[hidden:], y, y_active, n_y, ry)
    u_z_macs = _scatter(acc, 2 * hidden, u_z[0], u_z[1], u_z[2], ry, y_active, n_y)
    stats[MACS_RECURRENT + 1] += u_z_macs
    return _egru_units(acc, 0, hidden, threshold, c, y, y_active)


@njit(cache=True, fastmath=FUSED, error_model="numpy")
def egru_reset_after_step(
    base, x, x_active, n_x, n_y, w_ih, u_ur, u_z, bias_hz, threshold, c, y, y_active, acc, hz, stats
):
    """One reset-after EGRU layer: U_z reads y_{t-1} itself, into ``hz`` [H] = U_z·y + b_hz."""
    hidden = c.shape[0]
    acc[:] = base
    _products(acc, acc, w_ih, x, x_active, n_x, u_ur, y, y_active, n_y, stats)
    _count_inputs(stats, n_x, n_y)
    hz[:] = bias_hz
    stats[MACS_RECURRENT + 1] += _scatter(hz, 0, u_z[0], u_z[1], u_z[2], y, y_active, n_y)
    _reset_after_candidate(acc, hz, hidden)
    return _egru_units(acc, 0, hidden, threshold, c, y, y_active)


@njit(cache=True, fastmath=FUSED, error_model="numpy")
def lstm_step(base, x, x_active, n_x, n_h, w_ih, w_hh, c, h, h_active, acc, stats):
    """One LSTM layer; ``base`` = b_ih + b_hh or a table row."""
    acc[:] = base
    _products(acc, acc, w_ih, x, x_active, n_x, w_hh, h, h_active, n_h, stats)
    _count_inputs(stats, n_x, n_h)
    return _lstm_units(acc, 0, h.shape[0], c, h, h_active)


@njit(cache=True, fastmath=FUSED, error_model="numpy")
def gru_step(base, x, x_active, n_x, n_h, w_ih, w_hh, bias_hh, h, h_active, gi, gh, stats):
    """One GRU layer."""
    gi[:] = base
    gh[:] = bias_hh
    _products(gi, gh, w_ih, x, x_active, n_x, w_hh, h, h_active, n_h, stats)
    _count_inputs(stats, n_x, n_h)
    return _gru_units(gi, gh, 0, h.shape[0], h, h_active)


@njit(cache=True, fastmath=FUSED, error_model="numpy")
def sparse_product(out, values, rows, col_ptr, x, x_active, n_x, out_active, stats):
    """out = W·x for the projection, then the active list of ``out``; returns its length."""
    out[:] = 0.0
    stats[HEAD_MACS] += _scatter(out, 0, values, rows, col_ptr, x, x_active, n_x)
    stats[HEAD_ACTIVE_INPUTS] += n_x
    return find_active(out, out_active)


@njit(cache=True, inline="always")
def _add_columns(logits, lo, hi, weight_t, x, x_active, n_x):
    """logits[lo:hi] += Σ_{active j} x_j · D[lo:hi, j] from the transposed decoder
    ``weight_t`` [E, V]: a dense column gather (the decoder is not pruned), four columns per
    pass so the logits are read and written a quarter as often.
    Through slices from ``lo`` (as the cells), so a shard's loop vectorises too."""
    out = logits[lo:hi]
    width = hi - lo
    a = 0
    while a + 3 < n_x:
        j1, j2, j3, j4 = x_active[a], x_active[a + 1], x_active[a + 2], x_active[a + 3]
        r1, r2 = weight_t[j1, lo:hi], weight_t[j2, lo:hi]
        r3, r4 = weight_t[j3, lo:hi], weight_t[j4, lo:hi]
        x1, x2, x3, x4 = x[j1], x[j2], x[j3], x[j4]
        for v in range(width):
            out[v] += (r1[v] * x1 + r2[v] * x2) + (r3[v] * x3 + r4[v] * x4)
        a += 4
    while a < n_x:
        row, xj = weight_t[x_active[a], lo:hi], x[x_active[a]]
        for v in range(width):
            out[v] += row[v] * xj
        a += 1


@njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _total(values):
    """Σ values in whatever order vectorises (a function of its own, so that the
    reordering licence reaches nothing else)."""
    total = 0.0
    for v in range(values.shape[0]):
        total += values[v]
    return total


@njit(cache=True, inline="always")
def _shifted_exp_sum(logits, lo, hi, scratch):
    """(max, Σ exp(logits − max)) over lo:hi, in double; ``scratch`` [V] float64."""
    part, exps = logits[lo:hi], scratch[lo:hi]
    top = part[0]
    for v in range(1, hi - lo):
        if part[v] > top:
            top = part[v]
    for v in range(hi - lo):
        exps[v] = exp(float(part[v]) - top)
    return float(top), _total(exps)


@njit(cache=True, inline="always")
def _logits_part(logits, lo, hi, bias, weight_t, x, x_active, n_x, scratch):
    """logits[lo:hi] = b + D·x over the active entries of x; returns (max, Σ exp(logits −
    max)) over lo:hi (the whole vocabulary, or one thread's part of it)."""
    logits[lo:hi] = bias[lo:hi]
    _add_columns(logits, lo, hi, weight_t, x, x_active, n_x)
    return _shifted_exp_sum(logits, lo, hi, scratch)


@njit(cache=True, inline="always")
def _count_decoder(stats, col_nnz, x_active, n_x):
    """The decoder's MACs (exact zeros of D count as none, as in sparsity.macs) and active
    inputs."""
    for a in range(n_x):
        stats[HEAD_MACS] += col_nnz[x_active[a]]
    stats[HEAD_ACTIVE_INPUTS] += n_x


@njit(cache=True, fastmath=FUSED, error_model="numpy")
def decoder_logits(bias, weight_t, col_nnz, x, x_active, n_x, logits, scratch, stats):
    """logits = b + D·x over the active entries of x; returns log Σ exp(logits)."""
    vocab = logits.shape[0]
    top, total = _logits_part(logits, 0, vocab, bias, weight_t, x, x_active, n_x, scratch)
    _count_decoder(stats, col_nnz, x_active, n_x)
    return top + math.log(total)
