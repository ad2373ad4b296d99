"""e^v, σ and tanh for the compiled loops over units, without library calls.

A call into libm's exp keeps a loop scalar; these are plain arithmetic, so a loop over a
layer's units (or over the vocabulary, for the log-normaliser) runs several values per
instruction. They compute in float64: a float32 engine rounds their results once, as
PyTorch's float32 kernels do. docs/engine.md ("Speed levers") has the measured gain.
"""

from __future__ import annotations

import math

from dualsparse.engine.jit import double_from_bits, njit, numba

_LOG2_E = 1.4426950408889634
_LN2_HIGH, _LN2_LOW = 6.93147180369123816490e-01, 1.90821492927058770002e-10
# 1/k! for k = 2 .. 13: e^r on |r| <= ln(2)/2 to float64 rounding (truncation 4e-18)
_F2, _F3, _F4, _F5, _F6, _F7, _F8, _F9, _F10, _F11, _F12, _F13 = (
    1.0 / math.factorial(k) for k in range(2, 14)
)


@njit(cache=True, inline="always")
def exp(v):
    """e^v in float64: v = n ln 2 + r (Cody–Waite, ln 2 in two parts), e^r by its Taylor
    polynomial, 2^n from the exponent bits; within one float64 ulp of math.exp for
    |v| <= 700 (tests/engine/test_kernels.py); NaN stays NaN."""
    v = -700.0 if v < -700.0 else v  # beyond ±700 every gate is saturated in float32
    v = 700.0 if v > 700.0 else v
    n = math.floor(v * _LOG2_E + 0.5)
    r = (v - n * _LN2_HIGH) - n * _LN2_LOW
    p = ((((((_F13 * r + _F12) * r + _F11) * r + _F10) * r + _F9) * r + _F8) * r + _F7) * r
    p = ((((((p + _F6) * r + _F5) * r + _F4) * r + _F3) * r + _F2) * r + 1.0) * r + 1.0
    return p * double_from_bits((numba.int64(n) + 1023) << 52)


@njit(cache=True, inline="always")
def sigmoid(v):
    return 1.0 / (1.0 + exp(-v))


@njit(cache=True, inline="always")
def tanh(v):
    """tanh through one exp in double precision: faster than math.tanh and closer to the
    exact value (3e-8 vs 9e-8 in float32); a layer evaluates H..2H of them per token."""
    e = exp(-2.0 * abs(v))
    t = (1.0 - e) / (1.0 + e)
    return t if v >= 0 else -t
