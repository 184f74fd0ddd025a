"""Lab 6, reference solution: the backward of the mean cross-entropy with ignore_index.

For a kept row with target t, d(-log p_t)/dlogits = p - onehot(t) (softmax's Jacobian, lab 2).
The loss averages over the n kept rows, so each gets 1/n of grad; ignored rows get nothing.
"""

import numpy as np


def cross_entropy_backward(grad, logits, targets, ignore_index):
    """grad () = dL/dloss, logits (..., C), targets (...) integers, ignore_index an int
    -> grad_logits (..., C)."""
    kept = targets != ignore_index                           # (...), True where the target counts
    shifted = logits - logits.max(axis=-1, keepdims=True)    # softmax without overflow
    p = np.exp(shifted)
    p /= p.sum(axis=-1, keepdims=True)
    # onehot(t) for kept rows; ignored rows match no class (their target may be -100, or a class).
    onehot = np.arange(logits.shape[-1]) == np.where(kept, targets, -1)[..., None]
    # int(): a NumPy integer would promote float32 to float64.
    return grad * (p - onehot) * kept[..., None] / int(kept.sum())
