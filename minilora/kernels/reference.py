"""The fused LoRA op written as plain matrix products: the ground truth every other backend is
tested against, and backend "numpy" of `minilora.kernels.lora_forward` / `lora_backward`.

    forward   u = x·Aᵀ                 y = x·Wᵀ + s·u·Bᵀ (+ bias)
    backward  v = dy·B                 dx = dy·W + s·v·A
              dA = s·vᵀ·x              dB = s·dyᵀ·u          (W is frozen: no dW)

Works on NumPy or CuPy arrays alike (only `@`, `.T`, `*` and `+`). Not fused: each product is a
separate pass, which is exactly what the C++ and CUDA versions avoid.
"""


def lora_forward(x, W, A, B, scaling, bias=None):
    """Returns ``(y, u)``.

    x (M, K), W (N, K), A (r, K), B (N, r), bias (N,) or None, scaling a Python float.
    y (M, N) is the layer's output; u = x·Aᵀ (M, r) is kept for the backward.
    """
    u = x @ A.T
    y = x @ W.T + scaling * (u @ B.T)
    if bias is not None:
        y = y + bias
    return y, u


def lora_backward(dy, x, W, A, B, u, scaling):
    """Returns ``(dx, dA, dB)``, the gradients of the loss with respect to x, A and B.

    dy (M, N) is the gradient with respect to y; x, W, A, B as in the forward; u (M, r) from it.
    dx (M, K), dA (r, K), dB (N, r).
    """
    v = dy @ B
    dx = dy @ W + scaling * (v @ A)
    dA = scaling * (v.T @ x)
    dB = scaling * (dy.T @ u)
    return dx, dA, dB
