"""Lab 7: the backward of the DoRA layer, with the norm detached.

DoRA (Liu et al., 2024) splits the adapted weight into a magnitude and a direction. Each output
row of W + s·B·A is rescaled to the length m of a trainable vector:

    V = W + s·B·A                   (N, K)   LoRA's adapted weight, s = scaling
    n = ‖V‖ per output row          (N,)     the norm of each row, over the input axis
    y = (m / n) ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ)       (..., N)   x·Vᵀ, rescaled per output column
    x (..., K), W (N, K) frozen, A (r, K), B (N, r), m (N,), dy = dL/dy (..., N)

dora_backward(dy, x, W, A, B, m, scaling) returns (dx, dA, dB, dm): the gradients for x (..., K),
A (r, K), B (N, r) and m (N,). W is frozen, so it gets no gradient.

The norm is detached: in the backward, n is a constant. It is computed from A and B, but the
gradient is not passed through it, as the DoRA paper suggests (it saves memory and time and
changes accuracy little) and as PEFT and minilora's own DoRA layer do. (The checker's numerical
gradient holds n fixed where it was, so the detached gradient is the one it expects.) You get W,
A, B and scaling, not n: compute it yourself.

Derive it in steps:
  1. Name the bracket z = x·Wᵀ + s·(x·Aᵀ)·Bᵀ (..., N): it is exactly lab 4's LoRA output.
  2. y = (m / n) ⊙ z multiplies each column of z by a number. What gradient reaches z? Call it g.
  3. From z back to x, A and B is lab 4's backward, with g as its incoming gradient.
  4. m enters y only through m / n: what is dy/dm for one element? m is shared by every row of
     every sequence, so dm sums over all of them, like dA and dB.

Check your work:

    minilora lab check dora                                  # lab7_dora.py in this folder
    minilora lab check dora --file path/to/your/lab7_dora.py --seed 3
"""

import numpy as np  # noqa: F401 (your code will use it)


def dora_backward(dy, x, W, A, B, m, scaling):
    """dy (..., N), x (..., K), W (N, K), A (r, K), B (N, r), m (N,), scaling a float
    -> (dx (..., K), dA (r, K), dB (N, r), dm (N,))."""
    raise NotImplementedError("TODO: return dx, dA, dB, dm, with n = ‖W + s·B·A‖ detached")
