"""Lab 7, reference solution: the backward of the DoRA layer, with the norm detached.

    V = W + s·B·A        n = ‖V‖ per output row        y = (m / n) ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ)
    g = dy ⊙ (m / n)     dx = g·W + s·(g·B)·A     dA = s·(g·B)ᵀ·x     dB = s·gᵀ·(x·Aᵀ)
    dm = Σ_rows dy ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) / n

The bracket is lab 4's LoRA output, and the gradient that reaches it is dy scaled per output
column by m / n: lab 4's backward on g gives dx, dA and dB. n is a constant of the backward
(detached), so nothing more flows into A and B through it.
"""

import numpy as np


def dora_backward(dy, x, W, A, B, m, scaling):
    """dy (..., N), x (..., K), W (N, K), A (r, K), B (N, r), m (N,), scaling a float
    -> (dx (..., K), dA (r, K), dB (N, r), dm (N,))."""
    N, K = W.shape
    x2 = x.reshape(-1, K)    # (M, K): every leading axis is one more row sharing A, B and m
    dy2 = dy.reshape(-1, N)  # (M, N)
    V = W + scaling * (B @ A)                  # (N, K), the adapted weight
    n = np.sqrt((V * V).sum(axis=1))           # (N,), the norm of each output row; detached
    u = x2 @ A.T                               # (M, r)
    z = x2 @ W.T + scaling * (u @ B.T)         # (M, N), the bracket: LoRA's output

    g = dy2 * (m / n)                          # (M, N), the gradient reaching the bracket
    v = g @ B                                  # (M, r)
    dx = g @ W + scaling * (v @ A)             # (M, K)
    dA = scaling * (v.T @ x2)                  # (r, K)
    dB = scaling * (g.T @ u)                   # (N, r)
    dm = (dy2 * z).sum(axis=0) / n             # (N,), summed over every row
    return dx.reshape(x.shape), dA, dB, dm
