"""How far a correct kernel of the fused LoRA op may be from the float64 reference, element by element.

A tolerance on the relative norm, ‖out − ref‖ / ‖ref‖ <= 1e-5, can fail a correct float32 kernel:
where the terms of a sum cancel, ‖ref‖ is small next to the rounding of the terms themselves (at
M = 66, N = 1, K = 1, r = 18 every rung is 2.2e-5 off by that measure, and 4.4e-8 of the terms'
size). Rounding error is bounded by the size of the terms, not of their sum: a sum of n products
computed in any order, split into partial sums or not, with or without fused multiply-adds, is within
γ(n) · Σ|a·b| of the exact sum, γ(n) = n·u / (1 − n·u), u the unit roundoff (2^-24 in float32).
So each output gets the bound

    y   γ(2K + r + c) · (|x|·|W|ᵀ + s·(|x|·|A|ᵀ)·|B|ᵀ + |bias|)   (y reads the kernels' rounded u)
    u   γ(K + c)      · |x|·|A|ᵀ
    dx  γ(2N + r + c) · (|dy|·|W| + s·(|dy|·|B|)·|A|)           (dx and dA read the rounded v = dy·B)
    dA  γ(M + N + c)  · s·(|dy|·|B|)ᵀ·|x|
    dB  γ(M + c)      · s·|dy|ᵀ·|u|

where c = 2·EXTRA_ROUNDINGS covers the scalings, the bias and the pass that adds split partial sums,
and u is that of the kernel's dtype plus float64's (the reference rounds too). A wrong kernel (a
term dropped or read twice, a wrong index, a stale value) is off by the size of a whole term, far
more than γ of all of them. The GPU tests, the emulated tests and benchmarks/sanitize_kernels.py
all compare with `check`.

The bf16 rung (operands="bfloat16") reads every operand rounded to bfloat16, and its products of
two bf16 values are exact in float32 and summed in float32. Given inputs that are bf16 values
already (the reference is computed from the rounded inputs), the only new roundings are those of
the intermediates a second product reads: s·u in y, s·v in dx, v in dA and u in dB, each within
2^-8 of itself (minilora.kernels.bf16.UNIT_ROUNDOFF). With u = x·Aᵀ and v = dy·B computed exactly
(in float64), the bounds above gain

    y   2^-8 · s·|u|·|B|ᵀ       dx  2^-8 · s·|v|·|A|
    dA  2^-8 · s·|v|ᵀ·|x|       dB  2^-8 · s·|dy|ᵀ·|u|

and u keeps its float32 bound. A wrong kernel (a term dropped or read twice, a wrong index) is
still off by whole terms. Finer mistakes, such as rounding an operand to fewer bits than bf16 has,
can hide inside the allowance for the rounded intermediates; the rounding itself is checked bit
for bit instead (tests/test_emulated_mma.py).
"""

import numpy as np

from minilora.kernels.bf16 import UNIT_ROUNDOFF as BF16_UNIT

# More roundings than the products themselves: s·u, alpha, bias, and at most 64 partial sums added
# by the second pass of a split product (csrc/cuda/matmul.cu).
EXTRA_ROUNDINGS = 72


def gamma(n, dtype):
    """γ(n): the relative bound on n roundings in `dtype` and in the float64 reference."""
    unit = np.finfo(dtype).eps / 2 + np.finfo(np.float64).eps / 2
    return n * unit / (1 - n * unit)


def _staged_unit(operands):
    """The relative rounding of an intermediate read as an operand: 0 for the arrays' own dtype."""
    if operands is None:
        return 0.0
    if operands != "bfloat16":
        raise ValueError(f"operands must be None or 'bfloat16', got {operands!r}")
    return BF16_UNIT


def forward_bounds(x, W, A, B, scaling, bias, dtype, operands=None):
    """``(y_bound, u_bound)`` for the forward of x (M, K), W (N, K), A (r, K), B (N, r), bias (N,)
    or None: float64 arrays of shapes (M, N) and (M, r). operands="bfloat16" for a kernel that
    reads its operands as bfloat16 (x, W, A, B must then be bf16 values; see the module docstring)."""
    K, r = x.shape[1], A.shape[0]
    ax, aA = np.abs(x), np.abs(A)
    u_terms = ax @ aA.T
    aB = np.abs(B)
    y_terms = ax @ np.abs(W).T + abs(scaling) * (u_terms @ aB.T)
    if bias is not None:
        y_terms = y_terms + np.abs(bias)
    c = 2 * EXTRA_ROUNDINGS
    y = gamma(2 * K + r + c, dtype) * y_terms
    if operands is not None:
        y = y + _staged_unit(operands) * abs(scaling) * (np.abs(x @ A.T) @ aB.T)
    return y, gamma(K + c, dtype) * u_terms


def backward_bounds(dy, x, W, A, B, u, scaling, dtype, operands=None):
    """``(dx_bound, dA_bound, dB_bound)`` for the backward of dy (M, N), x (M, K), W (N, K),
    A (r, K), B (N, r), u (M, r): float64 arrays of shapes (M, K), (r, K), (N, r). operands as for
    forward_bounds (dy, x, W, A, B bf16 values; u need not be)."""
    M, N, r = dy.shape[0], dy.shape[1], A.shape[0]
    s, ady = abs(scaling), np.abs(dy)
    v_terms = ady @ np.abs(B)
    c = 2 * EXTRA_ROUNDINGS
    aA, ax = np.abs(A), np.abs(x)
    dB_terms = s * (ady.T @ np.abs(u))
    dx = gamma(2 * N + r + c, dtype) * (ady @ np.abs(W) + s * (v_terms @ aA))
    dA = gamma(M + N + c, dtype) * (s * (v_terms.T @ ax))
    dB = gamma(M + c, dtype) * dB_terms
    if operands is not None:
        staged, v = _staged_unit(operands), np.abs(dy @ B)
        dx, dA, dB = dx + staged * s * (v @ aA), dA + staged * s * (v.T @ ax), dB + staged * dB_terms
    return dx, dA, dB


def check(name, out, ref, bound):
    """None when every element of `out` is within `bound` of `ref` (a NaN never is); otherwise one
    line saying how many elements are not and showing the worst one."""
    out = np.asarray(out)
    if out.shape != ref.shape:
        return f"{name} has shape {out.shape}, expected {ref.shape}"
    error = np.abs(out.astype(np.float64) - ref)
    bad = ~(error <= bound)
    if not bad.any():
        return None
    excess = np.where(np.isnan(error), np.inf, error / np.maximum(bound, np.finfo(np.float64).tiny))
    worst = np.unravel_index(np.argmax(excess), out.shape)
    return (f"{name}: {int(bad.sum())} of {out.size} elements are further from the float64 reference "
            f"than rounding allows; worst at {tuple(int(i) for i in worst)}: {out[worst]!r}, expected "
            f"{ref[worst]!r} ± {bound[worst]:.3g}")
