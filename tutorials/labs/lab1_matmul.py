"""Lab 1: the backward of a matrix product.

Every linear layer, every attention score and every LoRA update is a matrix product, so this is
the gradient you will use most. You write it twice: for two matrices, then with batch axes.

Part 1: matmul_backward(grad, a, b)
    c = a @ b            a (M, K), b (K, N), c (M, N)
    grad = dL/dc         (M, N), the gradient flowing in from the rest of the network
    return (grad_a, grad_b) = (dL/da, dL/db), of shapes (M, K) and (K, N)

    Derive it from one element: c_ij = Σ_k a_ik·b_kj, so a_ik reaches L through every c_ij of
    row i, and dL/da_ik = Σ_j grad_ij·b_kj. Write that sum as a product of two matrices; do the
    same for b_kj. Check your answer's shapes: (M, N) times what gives (M, K)?

Part 2: batched_matmul_backward(grad, a, b)
    The same product with NumPy's batch rules: a (..., M, K), b (..., K, N), c (..., M, N).
    The leading "batch" axes broadcast, e.g.
        a (B, M, K) @ b (K, N)        one b shared by all B matrices of a
        a (B, 1, M, K) @ b (C, K, N)  every matrix of a times every matrix of b: c (B, C, M, N)
    grad has c's shape. Return grad_a and grad_b with exactly the shapes of a and b.

    Each batch element is an ordinary product, so part 1 applies to each (np.swapaxes(x, -1, -2)
    transposes the last two axes of a stack of matrices). Then: when b was broadcast (used by
    every matrix of a), its gradient is the sum of the gradients of all its copies. Sum over the
    axes that broadcasting added (leading axes b does not have) and over axes where b has size 1
    (keepdims=True keeps them).

Check your work (the checker draws random shapes, compares with numerical gradients, and says
what is wrong and where):

    minilora lab check matmul
    minilora lab check matmul --file path/to/your/lab1_matmul.py --seed 3
"""

import numpy as np  # noqa: F401 (your code will use it)


def matmul_backward(grad, a, b):
    """c = a @ b for matrices. grad (M, N), a (M, K), b (K, N) -> (grad_a (M, K), grad_b (K, N))."""
    raise NotImplementedError("TODO: return grad_a, grad_b for c = a @ b")


def batched_matmul_backward(grad, a, b):
    """c = a @ b with broadcasting batch axes. grad (..., M, N), a (..., M, K), b (..., K, N)
    -> (grad_a, grad_b) with the shapes of a and b."""
    raise NotImplementedError("TODO: return grad_a, grad_b, each summed back to its input's shape")
