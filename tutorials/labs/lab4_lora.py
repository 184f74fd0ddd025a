"""Lab 4: the backward of the LoRA layer.

LoRA keeps a pretrained weight W frozen and learns a low-rank update B·A next to it:

    u = x·Aᵀ                      (..., r)   the input squeezed down to rank r
    y = x·Wᵀ + s·u·Bᵀ             (..., N)   s = scaling = alpha / r
    x (..., K), W (N, K) frozen, A (r, K), B (N, r), dy = dL/dy (..., N)

lora_backward(dy, x, W, A, B, scaling) returns (dx, dA, dB): the gradients for x (..., K), for
A (r, K) and for B (N, r). W is frozen, so it gets no gradient.

Derive them with lab 1's rule for c = a @ b (grad_a = grad @ bᵀ, grad_b = aᵀ @ grad), one product
at a time, walking back from y:
  1. y = x·Wᵀ + s·u·Bᵀ: the gradient reaching u is s·dy·B. Call v = dy·B (..., r).
  2. dB from the term s·u·Bᵀ, and dA from u = x·Aᵀ with the gradient s·v reaching u.
  3. x reaches y along two paths, directly through W and through u: dx adds both.
  4. x may have leading axes, e.g. (batch, time, K): every row is one more example using the
     same A and B, so dA and dB sum over all of them. Reshape x, dy and u to 2-D, (M, K) with
     M = the number of rows, before the products that give dA and dB.

A LoRA layer starts with B = 0. Then dA = 0 exactly, whatever mistake you made in it, so the
checker always uses a non-zero B.

Check your work:

    minilora lab check lora
    minilora lab check lora --file path/to/your/lab4_lora.py --seed 3
"""

import numpy as np  # noqa: F401 (your code will use it)


def lora_backward(dy, x, W, A, B, scaling):
    """dy (..., N), x (..., K), W (N, K), A (r, K), B (N, r), scaling a float
    -> (dx (..., K), dA (r, K), dB (N, r))."""
    raise NotImplementedError("TODO: return dx, dA, dB")
