"""Lab 2, reference solution: the backward of softmax over the last axis.

    ds_i/dx_j = s_i·(δ_ij - s_j)
    dL/dx_j = Σ_i grad_i·s_i·(δ_ij - s_j) = s_j·grad_j - s_j·Σ_i grad_i·s_i = s_j·(grad_j - Σ_i grad_i·s_i)

The N×N Jacobian is never built: one elementwise product and one sum along the row.
"""

import numpy as np


def softmax_backward(grad, s):
    """grad (..., N) = dL/ds, s (..., N) = softmax(x) along the last axis -> grad_x (..., N)."""
    # Σ_i grad_i·s_i for each row, kept as a column (..., 1) so it broadcasts against the row.
    dot = np.sum(grad * s, axis=-1, keepdims=True)
    return s * (grad - dot)
