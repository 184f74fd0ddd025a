"""Elementwise arithmetic with broadcasting: add, sub, mul, div, neg, pow (scalar exponent).

The binary ops compute a gradient only for the sides that need one (ctx.needs_input_grad): a
constant side (a Python number, a mask, a frozen weight) costs no product and no reduction.
"""

import numbers

from minilora.function import Function
from minilora.ops.broadcast import as_tensor_pair, unbroadcast


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        return a + b

    @staticmethod
    def backward(ctx, grad):
        a_shape, b_shape = ctx.shapes
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(grad, a_shape) if need_a else None,
                unbroadcast(grad, b_shape) if need_b else None)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        return a - b

    @staticmethod
    def backward(ctx, grad):
        a_shape, b_shape = ctx.shapes
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(grad, a_shape) if need_a else None,
                unbroadcast(-grad, b_shape) if need_b else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(grad * b, a.shape) if need_a else None,
                unbroadcast(grad * a, b.shape) if need_b else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        return (unbroadcast(grad / b, a.shape) if need_a else None,
                unbroadcast(-grad * a / (b * b), b.shape) if need_b else None)


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Pow(Function):
    """a ** exponent for a Python-number exponent."""

    @staticmethod
    def forward(ctx, a, exponent):
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        return a ** exponent

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved
        if ctx.exponent == 0:  # a ** 0 is 1 everywhere; 0 · a ** -1 would be NaN at a = 0
            return ctx.xp.zeros_like(a)
        return grad * ctx.exponent * a ** (ctx.exponent - 1)


def add(a, b):
    """a + b with broadcasting. a, b: Tensors or Python numbers."""
    return Add.apply(*as_tensor_pair(a, b))


def sub(a, b):
    """a - b with broadcasting."""
    return Sub.apply(*as_tensor_pair(a, b))


def mul(a, b):
    """a * b with broadcasting."""
    return Mul.apply(*as_tensor_pair(a, b))


def div(a, b):
    """a / b with broadcasting."""
    return Div.apply(*as_tensor_pair(a, b))


def neg(a):
    """-a."""
    return Neg.apply(a)


def pow(a, exponent):
    """a ** exponent, where exponent is a real number (not a Tensor; NumPy's scalars are taken)."""
    if isinstance(exponent, bool) or not isinstance(exponent, numbers.Real):
        raise TypeError(f"pow: exponent must be an int or a float, got {type(exponent).__name__} {exponent!r}")
    # As a Python number: a NumPy float64 exponent would turn a float32 tensor into float64.
    exponent = int(exponent) if isinstance(exponent, numbers.Integral) else float(exponent)
    return Pow.apply(a, exponent=exponent)
