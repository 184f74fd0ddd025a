"""Elementwise functions of one tensor: exp, log, tanh, relu, gelu.

Each backward multiplies the incoming gradient by the derivative at each element, using whatever
the forward saved (often the output itself: d exp(x)/dx = exp(x), d tanh(x)/dx = 1 - tanh(x)²).
"""

import math

import numpy as np

from minilora.function import Function


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad * y


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.log(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        return grad / x


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad * (1 - y * y)


class Relu(Function):
    """max(x, 0). At x == 0 exactly the gradient is taken as 0."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x > 0)
        return ctx.xp.maximum(x, 0)

    @staticmethod
    def backward(ctx, grad):
        (positive,) = ctx.saved
        return grad * positive


GELU_C = math.sqrt(2 / math.pi)
GELU_K = 0.044715


class Gelu(Function):
    """GELU with the tanh approximation: 0.5·x·(1 + tanh(z)), z = √(2/π)·(x + 0.044715·x³).

    Computed as x·σ(2z) = x / (1 + e^(-2z)), the same function (0.5·(1 + tanh(z)) = σ(2z)) with
    one exponential and no tanh. GELU runs on the widest activation of a GPT block (batch, time,
    4·n_embd), where each pass over the array costs about as much as the arithmetic in it, so
    forward and backward work in place on arrays they have just allocated: 7 passes forward and 10
    backward, with one temporary besides the result. x, the saved array and the incoming gradient
    are never written to.
    """

    @staticmethod
    def forward(ctx, x):
        xp = ctx.xp
        # e = 1 + exp(-2z), with -2z = x·(-2C - 2CK·x²). (out=: a 0-d input would otherwise give a
        # NumPy scalar, which cannot be written in place.)
        e = xp.multiply(x, x, out=xp.empty_like(x))
        e *= -2 * GELU_C * GELU_K
        e -= 2 * GELU_C
        e *= x
        with np.errstate(over="ignore"):  # e = inf for x below about -9: then y = x / inf = -0
            xp.exp(e, out=e)
        e += 1
        ctx.save_for_backward(x, e)
        return xp.divide(x, e, out=xp.empty_like(x))

    @staticmethod
    def backward(ctx, grad):
        xp = ctx.xp
        x, e = ctx.saved
        # With s = σ(2z) = 1/e: d(x·s)/dx = s + x·s·(1 - s)·2·dz/dx = s·(1 + x·g·(1 - s)), where
        # g = 2·dz/dx = 2C·(1 + 3K·x²), and 1 - s = 1 - 1/e.
        d = xp.multiply(x, x, out=xp.empty_like(x))
        d *= 6 * GELU_C * GELU_K
        d += 2 * GELU_C
        d *= x                                          # x·g
        one_minus_s = xp.divide(-1, e, out=xp.empty_like(e))
        one_minus_s += 1
        d *= one_minus_s
        d += 1
        d /= e                                          # s·(1 + x·g·(1 - s))
        d *= grad
        return d


def exp(x):
    """e ** x, elementwise."""
    return Exp.apply(x)


def log(x):
    """Natural logarithm, elementwise (x > 0)."""
    return Log.apply(x)


def tanh(x):
    """Hyperbolic tangent, elementwise."""
    return Tanh.apply(x)


def relu(x):
    """max(x, 0), elementwise."""
    return Relu.apply(x)


def gelu(x):
    """GELU (tanh approximation, as in GPT-2), elementwise."""
    return Gelu.apply(x)
