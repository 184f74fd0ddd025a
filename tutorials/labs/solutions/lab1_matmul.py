"""Lab 1, reference solution: the backward of a matrix product, for matrices and with batch axes.

    c = a @ b        grad_a = grad @ bᵀ        grad_b = aᵀ @ grad

From c_ij = Σ_k a_ik·b_kj: dL/da_ik = Σ_j grad_ij·b_kj = (grad @ bᵀ)_ik and
dL/db_kj = Σ_i a_ik·grad_ij = (aᵀ @ grad)_kj. With batch axes the same holds for each matrix of
the stack, and an operand that broadcasting copied gets the sum over its copies.
"""

import numpy as np


def matmul_backward(grad, a, b):
    """c = a @ b for matrices. grad (M, N), a (M, K), b (K, N) -> (grad_a (M, K), grad_b (K, N))."""
    grad_a = grad @ b.T  # (M, N) @ (N, K)
    grad_b = a.T @ grad  # (K, M) @ (M, N)
    return grad_a, grad_b


def batched_matmul_backward(grad, a, b):
    """c = a @ b with broadcasting batch axes. grad (..., M, N), a (..., M, K), b (..., K, N)
    -> (grad_a, grad_b) with the shapes of a and b."""
    grad_a = grad @ np.swapaxes(b, -1, -2)  # (..., M, K), with c's batch axes
    grad_b = np.swapaxes(a, -1, -2) @ grad  # (..., K, N), with c's batch axes
    return sum_to_shape(grad_a, a.shape), sum_to_shape(grad_b, b.shape)


def sum_to_shape(grad, shape):
    """Undo broadcasting: add up the gradients of every copy of an input of `shape`."""
    # Axes that broadcasting put in front of the input.
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    # Axes where the input has size 1 and was stretched.
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True)
