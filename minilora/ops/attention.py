"""causal_softmax: attention's weights from its scores, softmax(scale · scores) under a causal mask.

    weights[..., t, j] = softmax_j(scale · scores[..., t, :])   over the keys j <= t only,
    weights[..., t, j] = 0                                      for the future keys j > t

It is the three steps scale, masked_fill(future, -inf) and softmax as one op: the same numbers,
one (batch, heads, T, T) array made instead of three, and one backward, the softmax's times scale:
    dscores = scale · y · (grad - Σ_j grad_j · y_j)
(the masked entries have y = 0, so they get no gradient, as masked_fill's backward gives them).
For NumPy float arrays the compiled twin runs (csrc/cpu/op_softmax.cpp, which never computes a
masked entry); the code below is the reference it is tested against.
"""

from minilora.checks import check_number
from minilora.function import Function, check_tensor
from minilora.kernels import compiled
from minilora.ops.softmax import softmax_array, softmax_backward_array


class CausalSoftmax(Function):
    float_inputs = True

    @staticmethod
    def forward(ctx, scores, scale):
        # scores (..., T, T_k): query t sees the keys j <= t
        ctx.scale = scale
        if compiled.runs(scores):
            weights = compiled.softmax_forward(scores, scale, causal=True)
        else:
            xp = ctx.xp
            future = xp.triu(xp.ones(scores.shape[-2:], dtype=bool), k=1)  # (T, T_k), True = hidden
            weights = softmax_array(xp, xp.where(future, -xp.inf, scores * scale), -1)
        ctx.save_for_backward(weights)
        return weights

    @staticmethod
    def backward(ctx, grad):
        (weights,) = ctx.saved
        if compiled.runs(grad, weights):
            return compiled.softmax_backward(grad, weights, ctx.scale)
        dscores = softmax_backward_array(grad, weights, -1)
        dscores *= ctx.scale
        return dscores


def causal_softmax(scores, scale):
    """softmax(scale · scores) over the last axis, each query t (axis -2) seeing keys j <= t only.

    scores: (..., T, T_k) attention scores q·kᵀ; scale: a number > 0 (1/sqrt(head_dim)).
    Returns the weights, same shape, 0 on the future keys. Equal to
    ``softmax((scores * scale).masked_fill(triu(ones(T, T_k), k=1), -inf))``.
    """
    check_tensor("causal_softmax", "scores", scores)
    if scores.ndim < 2:
        raise ValueError(f"causal_softmax: scores must have shape (..., T, T_k), got {scores.shape}")
    check_number("causal_softmax: scale", scale, above=0)
    return CausalSoftmax.apply(scores, scale=float(scale))
