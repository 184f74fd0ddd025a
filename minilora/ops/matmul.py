"""Matrix product with NumPy's rules: batch dimensions broadcast, 1-D operands are vectors.

For C = A·B the gradients are dA = dC·Bᵀ and dB = Aᵀ·dC (transposing the last two axes), then
summed over any batch dimensions that broadcasting added. A 1-D operand is treated as a matrix
with one row (on the left) or one column (on the right), so one formula covers every case.
The products go through kernels.compiled.matmul (the C++ GEMM for NumPy float arrays, reading
transposed views as they are; a batch of small products split over the threads).
"""

import numpy as np

from minilora.function import Function
from minilora.kernels import compiled
from minilora.ops.broadcast import as_tensor_pair, unbroadcast


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        # a: (..., n, k) or (k,) -> (..., n, k) or (1, k);  b: (..., k, m) or (k,) -> (..., k, m) or (k, 1)
        a2 = a.reshape(1, -1) if a.ndim == 1 else a
        b2 = b.reshape(-1, 1) if b.ndim == 1 else b
        ctx.save_for_backward(a2, b2)
        return compiled.matmul(a, b)  # (1-D operands: the array module's matmul)

    @staticmethod
    def backward(ctx, grad):
        a2, b2 = ctx.saved
        a_shape, b_shape = ctx.shapes
        xp = ctx.xp
        # Put back the row/column axis that the product removed for a 1-D operand.
        out_shape = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1])
        grad = grad.reshape(out_shape)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = unbroadcast(compiled.matmul(grad, xp.swapaxes(b2, -1, -2)), a2.shape).reshape(a_shape)
        if ctx.needs_input_grad[1]:
            grad_b = unbroadcast(compiled.matmul(xp.swapaxes(a2, -1, -2), grad), b2.shape).reshape(b_shape)
        return grad_a, grad_b


def matmul(a, b):
    """a @ b. a: (..., n, k) or (k,); b: (..., k, m) or (k,); batch dimensions broadcast.

    Returns (..., n, m), with the n axis dropped when a is 1-D and the m axis dropped when b is 1-D.
    One side may be a plain array (a constant).
    """
    a, b = as_tensor_pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs operands with at least 1 dimension, got shapes {a.shape} and "
                         f"{b.shape}; multiply by a scalar with * instead")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: inner dimensions differ: a has shape {a.shape} (last axis {k_a}), "
                         f"b has shape {b.shape} ({'its length' if b.ndim == 1 else 'second-to-last axis'} {k_b})")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions do not broadcast: a has shape {a.shape}, "
                         f"b has shape {b.shape}") from None
    return MatMul.apply(a, b)
