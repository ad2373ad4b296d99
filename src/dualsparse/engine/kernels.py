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

``stats`` of a layer (int64 [5]): event MACs of the input product, of the
recurrent product(s) (EGRU: U_ur, U_z; LSTM/GRU: W_hh, 0), active inputs summed
over tokens, active recurrent inputs summed over tokens.

The arithmetic follows the PyTorch layers operation for operation (σ, tanh,
ĉ = c + u (z − c), reset by subtraction; LSTM and GRU in torch's gate order) in
float32, so log-probabilities agree to float rounding (the summation order of
the products differs).
"""

from __future__ import annotations

import math

from dualsparse.errors import DualsparseError

try:
    import numba
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # the engine refuses to start (require_numba); importing stays possible
    numba = None

    def njit(*args, **kwargs):
        if args and callable(args[0]):
            return args[0]
        return lambda function: function

    intrinsic = njit


# Fused multiply-add only (no reassociation, no NaN/inf assumptions): a*b + c in one
# rounding is as exact as PyTorch's own kernels and saves an instruction per nonzero.
# The step kernels also take error_model="numpy": a division by zero gives inf as in
# numpy instead of a ZeroDivisionError check, which kept the loops over units from
# vectorising (21 vs 3 us for a 1350-unit EGRU cell).
FUSED = {"contract"}


def require_numba() -> None:
    if numba is None:
        raise DualsparseError(
            "the inference engine needs numba, which is not installed; "
            "install it with: pip install 'dualsparse[engine]'"
        )


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the cache for the line holding ``array[index]`` (llvm.prefetch; no fault if the
    index is out of range, nothing is read into a register)."""

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        data = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(
            context, builder, array_type, data, [args[1]], wraparound=False
        )
        pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32]),
            "llvm.prefetch.p0",
        )
        builder.call(function, [pointer, i32(0), i32(3), i32(1)])  # read, keep, data
        return context.get_dummy_value()

    return types.none(array, index), codegen


@njit(cache=True, inline="always")
def _prefetch_column(values, rows, start, stop):
    """Every cache line of one stored column, values and row indices."""
    for k in range(start, stop, 64 // values.itemsize):
        _prefetch(values, k)
    for k in range(start, stop, 64 // rows.itemsize):
        _prefetch(rows, k)


@njit(cache=True, inline="always")
def _scatter(acc, offset, values, rows, col_ptr, x, active, n_active):
    """acc[offset + i] += Σ_{active j} W[i, j] · x[j]; returns the MACs done.

    Indexing a slice with the unsigned row index (instead of ``acc[offset + row]``)
    lets the compiler drop the negative-index check from the inner loop: about 1.5x
    fewer ns per stored nonzero (benchmarked on a 4050x1350 matrix at 85% sparsity).
    A column whose rows form one contiguous run is a dense axpy: 3x faster per MAC on
    an unpruned 4600x1550 LSTM matrix (0.14 vs 0.42 ns), faster than torch.addmv there.
    In a pruned matrix the next active column is prefetched whole while this one is
    added: which columns come next is known, but not to the hardware prefetcher (1.0 vs
    0.6 ns per nonzero when the weights come from L3, as they do in a stream of tokens).
    Dense and long columns are not: prefetching them made the dense LSTM slower.
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
            # no wrap-around arithmetic per nonzero, 1.25x faster than k in start..stop
            for k in range(count):
                target[column_rows[k]] += column[k] * xj
        macs += count
    return macs


@intrinsic
def _double_from_bits(typingctx, bits):
    """The float64 whose IEEE bits are the int64 ``bits`` (a register move, no memory)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


_LOG2_E = 1.4426950408889634
_LN2_HIGH, _LN2_LOW = 6.93147180369123816490e-01, 1.90821492927058770002e-10
# 1/k! for k = 2 .. 13: e^r on |r| <= ln(2)/2 to float64 rounding (truncation 4e-18)
_F2, _F3, _F4, _F5, _F6, _F7, _F8, _F9, _F10, _F11, _F12, _F13 = (
    1.0 / math.factorial(k) for k in range(2, 14)
)


@njit(cache=True, inline="always")
def _exp(v):
    """e^v in float64 without a library call, so loops over units vectorise (libm's exp
    does not: 3.5 vs 0.6 ns per value here). v = n ln 2 + r, e^r by its Taylor
    polynomial, 2^n from the exponent bits; within one float64 ulp of math.exp for
    |v| <= 700 (tests/engine/test_kernels.py); NaN stays NaN."""
    v = -700.0 if v < -700.0 else v  # beyond ±700 every gate is saturated in float32
    v = 700.0 if v > 700.0 else v
    n = math.floor(v * _LOG2_E + 0.5)
    r = (v - n * _LN2_HIGH) - n * _LN2_LOW
    p = ((((((_F13 * r + _F12) * r + _F11) * r + _F10) * r + _F9) * r + _F8) * r + _F7) * r
    p = ((((((p + _F6) * r + _F5) * r + _F4) * r + _F3) * r + _F2) * r + 1.0) * r + 1.0
    return p * _double_from_bits((numba.int64(n) + 1023) << 52)


@njit(cache=True, inline="always")
def _sigmoid(v):
    return 1.0 / (1.0 + _exp(-v))


@njit(cache=True, inline="always")
def _tanh(v):
    """tanh through one exp in double precision: faster than math.tanh and closer to the
    exact value (3e-8 vs 9e-8 in float32); a layer evaluates H..2H of them per token."""
    e = _exp(-2.0 * abs(v))
    t = (1.0 - e) / (1.0 + e)
    return t if v >= 0 else -t


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
    GRU's n gate, which needs W_hn·h apart); stats[0], stats[1] += their MACs. A matrix is
    the tuple (values, row_indices, col_ptr)."""
    stats[0] += _scatter(acc, 0, w_ih[0], w_ih[1], w_ih[2], x, x_active, n_x)
    stats[1] += _scatter(acc_hh, 0, w_hh[0], w_hh[1], w_hh[2], h, h_active, n_h)


@njit(cache=True, inline="always")
def _count_inputs(stats, n_x, n_h):
    stats[3] += n_x
    stats[4] += n_h


# The cells, over units lo .. lo + size: ``acc`` holds their gate pre-activations in blocks
# of ``size`` (the whole layer with lo = 0 on one thread, a shard's units in
# ``kernels_sharded``); each writes the units' new state and output, lists the nonzero
# outputs in ``out_active`` and returns how many. The loop over units has no branch and no
# library call, so the compiler runs it 8 units at a time; listing the outputs is apart.
# State is indexed through slices from ``lo`` with a counter from 0: indexing ``c[lo + i]``
# kept the shards' loops scalar (the compiler cannot rule out a negative index).


@njit(cache=True, inline="always")
def _egru_units(acc, lo, size, threshold, c, y, out_active):
    """u = σ(acc_u), ĉ = c + u (z − c), y = ĉ·H(ĉ − θ), c = ĉ − θ·H(ĉ − θ) (DEVELOPERS.md,
    "EGRU cell"); ``acc`` holds u's and z's pre-activations."""
    cs, ys, thetas = c[lo : lo + size], y[lo : lo + size], threshold[lo : lo + size]
    u_pre, z_pre = acc[:size], acc[2 * size : 3 * size]
    for i in range(size):
        u_pre[i] = _sigmoid(u_pre[i])  # u, rounded to the engine's precision as in PyTorch
        u = u_pre[i]
        z = _tanh(z_pre[i])
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
        gate_i = _sigmoid(i_pre[i])
        gate_f = _sigmoid(f_pre[i])
        gate_g = _tanh(g_pre[i])
        gate_o = _sigmoid(o_pre[i])
        cs[i] = gate_f * cs[i] + gate_i * gate_g
        hs[i] = gate_o * _tanh(cs[i])
    return _compact(h, lo, size, out_active)


@njit(cache=True, inline="always")
def _gru_units(gi, gh, lo, size, h, out_active):
    """Gates r, z, n in torch's order: n = tanh(W_in x + b_in + r (W_hn h + b_hn)); ``gi`` and
    ``gh`` hold W_ih·x + b_ih and W_hh·h + b_hh."""
    hs = h[lo : lo + size]
    r_i, z_i, n_i = gi[:size], gi[size : 2 * size], gi[2 * size : 3 * size]
    r_h, z_h, n_h = gh[:size], gh[size : 2 * size], gh[2 * size : 3 * size]
    for i in range(size):
        r = _sigmoid(r_i[i] + r_h[i])
        z = _sigmoid(z_i[i] + z_h[i])
        cand = _tanh(n_i[i] + r * n_h[i])
        hs[i] = (1.0 - z) * cand + z * hs[i]
    return _compact(h, lo, size, out_active)


@njit(cache=True, inline="always")
def _reset_gated(r_pre, y, y_active, n_y, ry):
    """ry = σ(r) ⊙ y_{t-1}, the input of U_z: nonzero exactly where y_{t-1} is, so r is
    needed (and σ evaluated) only there."""
    for a in range(n_y):
        j = y_active[a]
        ry[j] = _sigmoid(r_pre[j]) * y[j]


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
    stats[2] += _scatter(acc, 2 * hidden, u_z[0], u_z[1], u_z[2], ry, y_active, n_y)
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
    stats[0] += _scatter(out, 0, values, rows, col_ptr, x, x_active, n_x)
    stats[1] += n_x
    return find_active(out, out_active)


@njit(cache=True, inline="always")
def _add_columns(logits, lo, hi, weight_t, x, x_active, n_x):
    """logits[lo:hi] += Σ_{active j} x_j · D[lo:hi, j] from the transposed decoder
    ``weight_t`` [E, V]: a dense column gather (the decoder is not pruned), four columns per
    pass so the logits are read and written a quarter as often (1.8x faster at V = 10k).
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
    reordering licence reaches nothing else): 0.6 vs 11 us for 10k positive terms."""
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
        exps[v] = _exp(float(part[v]) - top)
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
    """stats[0] += the decoder's MACs (exact zeros of D count as none, as in sparsity.macs),
    stats[1] += its active inputs."""
    for a in range(n_x):
        stats[0] += col_nnz[x_active[a]]
    stats[1] += n_x


@njit(cache=True, fastmath=FUSED, error_model="numpy")
def decoder_logits(bias, weight_t, col_nnz, x, x_active, n_x, logits, scratch, stats):
    """logits = b + D·x over the active entries of x; returns log Σ exp(logits)."""
    vocab = logits.shape[0]
    top, total = _logits_part(logits, 0, vocab, bias, weight_t, x, x_active, n_x, scratch)
    _count_decoder(stats, col_nnz, x_active, n_x)
    return top + math.log(total)
