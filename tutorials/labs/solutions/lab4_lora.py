"""Lab 4, reference solution: the backward of the LoRA layer, with W frozen; then with dropout.

    u = x·Aᵀ        y = x·Wᵀ + s·u·Bᵀ
    v = dy·B        dx = dy·W + s·v·A        dA = s·vᵀ·x        dB = s·dyᵀ·u

Each line is lab 1's rule applied to one product: the gradient reaching u is s·v, which gives dA
through u = x·Aᵀ; dB comes from s·u·Bᵀ; x gets both of its paths, through W and through A.

With dropout, the adapter sees x_d = x·mask/(1 - p) instead of x: dA and u use x_d, and the
gradient reaching x_d along the LoRA path, s·v·A, passes back through the same mask/(1 - p).
"""


def lora_backward(dy, x, W, A, B, scaling):
    """dy (..., N), x (..., K), W (N, K), A (r, K), B (N, r), scaling a float
    -> (dx (..., K), dA (r, K), dB (N, r))."""
    # Every leading axis of x is one more row sharing A and B: work on (M, ·) matrices.
    N, K = W.shape
    x2 = x.reshape(-1, K)    # (M, K)
    dy2 = dy.reshape(-1, N)  # (M, N)
    u = x2 @ A.T             # (M, r), as in the forward
    v = dy2 @ B              # (M, r): dL/du is scaling·v

    dx = dy2 @ W + scaling * (v @ A)  # (M, K): the path through W plus the path through A
    dA = scaling * (v.T @ x2)         # (r, K)
    dB = scaling * (dy2.T @ u)        # (N, r)
    return dx.reshape(x.shape), dA, dB


def lora_dropout_backward(dy, x, W, A, B, scaling, mask, p):
    """As lora_backward, with dropout on the adapter's input: x_d = x·mask/(1 - p), u = x_d·Aᵀ.
    mask (..., K) of 0s and 1s, p a float -> (dx (..., K), dA (r, K), dB (N, r))."""
    N, K = W.shape
    keep = mask.reshape(-1, K) / (1 - p)  # (M, K): what each element of x is multiplied by on the LoRA path
    x2 = x.reshape(-1, K)
    dy2 = dy.reshape(-1, N)
    x_dropped = x2 * keep    # (M, K), what A saw
    u = x_dropped @ A.T      # (M, r)
    v = dy2 @ B              # (M, r)

    dx = dy2 @ W + scaling * (v @ A) * keep  # the path through A passes back through the dropout
    dA = scaling * (v.T @ x_dropped)
    dB = scaling * (dy2.T @ u)
    return dx.reshape(x.shape), dA, dB
