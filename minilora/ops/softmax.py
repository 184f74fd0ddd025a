"""softmax and log_softmax along one axis, computed stably.

exp(x) overflows for x around 90 in float32, so both subtract the largest value along the axis
first; the result is unchanged because softmax(x) = softmax(x - c) for any constant c.
Softmax along the last axis of NumPy float arrays runs its compiled twin (csrc/cpu/op_softmax.cpp:
one read of each row, vector exp, rows over the threads); the code below is the reference.
"""

from minilora.function import Function, check_tensor
from minilora.kernels import compiled
from minilora.ops.axes import normalize_axis


def log_softmax_array(xp, x, axis):
    """log(softmax(x)) on a raw array: (x - max) - log(sum(exp(x - max)))."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class Softmax(Function):
    float_inputs = True

    @staticmethod
    def forward(ctx, x, axis):
        ctx.axis = axis
        if axis == x.ndim - 1 and compiled.runs(x):
            y = compiled.softmax_forward(x)
            ctx.save_for_backward(y)
            return y
        y = softmax_array(ctx.xp, x, axis)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        if ctx.axis == y.ndim - 1 and compiled.runs(grad, y):
            return compiled.softmax_backward(grad, y)
        return softmax_backward_array(grad, y, ctx.axis)


def softmax_array(xp, x, axis):
    """softmax(x) along `axis` on a raw array: one fresh array, exponentiated and normalised in
    place, with no temporary per step."""
    y = x - x.max(axis=axis, keepdims=True)
    xp.exp(y, out=y)
    y /= y.sum(axis=axis, keepdims=True)
    return y


def softmax_backward_array(grad, y, axis):
    """The Jacobian of softmax, diag(y) - y·yᵀ, applied to grad without building it:
    y·(grad - <grad, y>) along `axis`. A fresh array."""
    dot = (grad * y).sum(axis=axis, keepdims=True)
    dx = grad - dot
    dx *= y
    return dx


class LogSoftmax(Function):
    float_inputs = True

    @staticmethod
    def forward(ctx, x, axis):
        out = log_softmax_array(ctx.xp, x, axis)
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        # d/dx_j of (x_i - log Σ exp x) is δ_ij - softmax_j, so each input gets grad_j - softmax_j·Σ grad.
        return grad - ctx.xp.exp(out) * grad.sum(axis=ctx.axis, keepdims=True)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis` (default: the last). Same shape as x."""
    check_tensor("softmax", "x", x)
    return Softmax.apply(x, axis=normalize_axis(axis, x.ndim))


def log_softmax(x, axis=-1):
    """log(softmax(x)) along `axis`, without the underflow of taking log of a tiny softmax."""
    check_tensor("log_softmax", "x", x)
    return LogSoftmax.apply(x, axis=normalize_axis(axis, x.ndim))
