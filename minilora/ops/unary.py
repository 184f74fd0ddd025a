"""Elementwise functions of one tensor: exp, log, tanh, relu, gelu.

Each backward multiplies the incoming gradient by the derivative at each element, using whatever
the forward saved (often the output itself: d exp(x)/dx = exp(x), d tanh(x)/dx = 1 - tanh(x)²).
"""

import math

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
    """GELU with the tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).

    GELU runs on the widest activation of a GPT block (batch, time, 4·n_embd), so forward and
    backward work in place on arrays they have just allocated: one or two temporaries instead of
    one per arithmetic step. x, the saved t and the incoming gradient are never written to.
    """

    @staticmethod
    def forward(ctx, x):
        xp = ctx.xp
        # Each chain starts in an array of its own (out=: a 0-d input would otherwise give a
        # NumPy scalar, which cannot be written in place).
        t = xp.multiply(x, GELU_K, out=xp.empty_like(x))  # becomes tanh(√(2/π)·(x + 0.044715·x³))
        t *= x
        t *= x
        t += x
        t *= GELU_C
        xp.tanh(t, out=t)
        ctx.save_for_backward(x, t)
        y = xp.add(t, 1, out=xp.empty_like(t))
        y *= x
        y *= 0.5
        return y

    @staticmethod
    def backward(ctx, grad):
        xp = ctx.xp
        x, t = ctx.saved
        # Product rule on 0.5·x·(1 + t), with dt/dx = (1 - t²)·√(2/π)·(1 + 3·0.044715·x²):
        # d(gelu)/dx = 0.5·(1 + t) + 0.5·x·dt/dx.
        d = xp.multiply(t, t, out=xp.empty_like(t))
        xp.subtract(1, d, out=d)       # 1 - t²
        d *= GELU_C
        s = xp.multiply(x, 3 * GELU_K, out=xp.empty_like(x))
        s *= x
        s += 1                         # 1 + 3·0.044715·x²
        d *= s                         # dt/dx
        d *= x
        d *= 0.5                       # 0.5·x·dt/dx
        xp.add(t, 1, out=s)
        s *= 0.5                       # 0.5·(1 + t)
        d += s
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
