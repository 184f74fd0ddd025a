"""Lab 2: the backward of softmax over the last axis.

Attention turns its scores into weights with softmax, and cross-entropy is built on it.

    s = softmax(x),  s_i = exp(x_i) / Σ_j exp(x_j)      along the last axis
    x, s, grad: (..., N)   (any number of leading axes; each row is its own softmax)

softmax_backward(grad, s) gets grad = dL/ds and the forward's output s (you never need x), and
returns grad_x = dL/dx, of the same shape.

Derive it for one row:
  1. Differentiate s_i with respect to x_j by the quotient rule. You should find
     ds_i/dx_j = s_i·(δ_ij - s_j), with δ_ij = 1 when i = j and 0 otherwise. Note that every s_i
     depends on every x_j, through the sum in the denominator.
  2. Apply the chain rule: dL/dx_j = Σ_i grad_i·ds_i/dx_j. Simplify until no N×N matrix is left:
     the result is one elementwise product and one sum along the last axis.
  3. With leading axes, the sum runs along the last axis only; keepdims=True keeps it as a
     column that broadcasts against the row.

Check your work:

    minilora lab check softmax
    minilora lab check softmax --file path/to/your/lab2_softmax.py --seed 3
"""

import numpy as np  # noqa: F401 (your code will use it)


def softmax_backward(grad, s):
    """grad (..., N) = dL/ds, s (..., N) = softmax(x) along the last axis -> grad_x (..., N)."""
    raise NotImplementedError("TODO: return grad_x, using s and one sum along the last axis")
