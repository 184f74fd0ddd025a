"""Elementwise functions of one tensor: exp, log, tanh, relu, gelu.

Each backward multiplies the incoming gradient by the derivative at each element, using whatever
the forward saved (often the output itself: d exp(x)/dx = exp(x), d tanh(x)/dx = 1 - tanh(x)²).
"""

import math

import numpy as np

from minilora.function import Function
from minilora.kernels import compiled
from minilora.ops.blocks import cache_blocks


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
    forward and backward work in place on arrays they have just allocated, 7 passes forward and 10
    backward with one temporary besides the result, piece by piece so that the passes after the
    first read from cache. x, the saved array and the incoming gradient are never written to.
    For NumPy float arrays its compiled twin runs instead (csrc/cpu/op_gelu.cpp: one loop, one
    read of each value, vector exp, values over the threads), saving the same x and e.
    """

    float_inputs = True

    @staticmethod
    def forward(ctx, x):
        if compiled.runs(x):
            y, e = compiled.gelu_forward(x)
            ctx.save_for_backward(x, e)
            return y
        xp = ctx.xp
        e, y = xp.empty_like(x), xp.empty_like(x)
        # e = 1 + exp(-2z), with -2z = x·(-2C - 2CK·x²), then y = x / e; piece by piece, so the
        # seven passes stay in cache (ops/blocks.py).
        for xb, eb, yb in cache_blocks(x, e, y):
            xp.multiply(xb, xb, out=eb)
            eb *= -2 * GELU_C * GELU_K
            eb -= 2 * GELU_C
            eb *= xb
            with np.errstate(over="ignore"):  # e = inf for x below about -9: then y = x / inf = -0
                xp.exp(eb, out=eb)
            eb += 1
            xp.divide(xb, eb, out=yb)
        ctx.save_for_backward(x, e)
        return y

    @staticmethod
    def backward(ctx, grad):
        xp = ctx.xp
        x, e = ctx.saved
        if compiled.runs(grad, x):
            return compiled.gelu_backward(grad, x, e)
        # With s = σ(2z) = 1/e: d(x·s)/dx = s + x·s·(1 - s)·2·dz/dx = s·(1 + x·g·(1 - s)), where
        # g = 2·dz/dx = 2C·(1 + 3K·x²), and 1 - s = 1 - 1/e.
        d, one_minus_s = xp.empty_like(x), xp.empty_like(e)
        for xb, eb, gb, db, sb in cache_blocks(x, e, grad, d, one_minus_s):
            xp.multiply(xb, xb, out=db)
            db *= 6 * GELU_C * GELU_K
            db += 2 * GELU_C
            db *= xb                                    # x·g
            xp.divide(-1, eb, out=sb)
            sb += 1                                     # 1 - s
            db *= sb
            db += 1
            db /= eb                                    # s·(1 + x·g·(1 - s))
            db *= gb
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
