"""Lab 4: the backward of the LoRA layer, then with LoRA's dropout.

LoRA keeps a pretrained weight W frozen and learns a low-rank update B·A next to it:

    u = x·Aᵀ                      (..., r)   the input squeezed down to rank r
    y = x·Wᵀ + s·u·Bᵀ             (..., N)   s = scaling = alpha / r
    x (..., K), W (N, K) frozen, A (r, K), B (N, r), dy = dL/dy (..., N)

Part 1: lora_backward(dy, x, W, A, B, scaling) returns (dx, dA, dB): the gradients for x (..., K),
for A (r, K) and for B (N, r). W is frozen, so it gets no gradient.

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

Part 2: lora_dropout_backward(dy, x, W, A, B, scaling, mask, p)
    LoRA applies dropout to the adapter's input only. In training, each value of x is dropped
    with probability p and the kept ones are scaled up by 1/(1 - p), so the adapter sees
        x_d = x·mask/(1 - p)          mask (..., K): 1 where a value is kept, 0 where dropped
        u = x_d·Aᵀ                    y = x·Wᵀ + s·u·Bᵀ
    Return (dx, dA, dB) as in part 1. Walk back as before, asking for each product which x it
    saw: the path through W saw x itself, the path through A saw x_d. The mask is not learned,
    so it gets no gradient; it does decide which elements of x the LoRA path reaches.

Check your work:

    minilora lab check lora                                  # lab4_lora.py in this folder
    minilora lab check lora --file path/to/your/lab4_lora.py --seed 3
"""

import numpy as np  # noqa: F401 (your code will use it)


def lora_backward(dy, x, W, A, B, scaling):
    """dy (..., N), x (..., K), W (N, K), A (r, K), B (N, r), scaling a float
    -> (dx (..., K), dA (r, K), dB (N, r))."""
    raise NotImplementedError("TODO: return dx, dA, dB")


def lora_dropout_backward(dy, x, W, A, B, scaling, mask, p):
    """As lora_backward, with dropout on the adapter's input: x_d = x·mask/(1 - p), u = x_d·Aᵀ.
    mask (..., K) of 0s and 1s, p a float -> (dx (..., K), dA (r, K), dB (N, r))."""
    raise NotImplementedError("TODO: return dx, dA, dB with the dropout on the LoRA path")
