"""Reductions over axes: sum, mean, max (NumPy's `axis` and `keepdims`).

Backward sends the gradient of each output element back to the input elements it was reduced from:
all of them for sum (weight 1) and mean (weight 1/count), only the largest one for max.
"""

import math

from minilora.function import Function, check_tensor
from minilora.ops.axes import check_keepdims, kept_shape, normalize_axes


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        ctx.shape, ctx.axes = x.shape, axes
        return x.sum(axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        # Every summed element moved the total one for one: copy the gradient along the reduced axes.
        grad = grad.reshape(kept_shape(ctx.shape, ctx.axes))
        return ctx.xp.broadcast_to(grad, ctx.shape)


class Mean(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        ctx.shape, ctx.axes = x.shape, axes
        return x.mean(axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        count = math.prod(ctx.shape[a] for a in ctx.axes)
        grad = grad.reshape(kept_shape(ctx.shape, ctx.axes)) / count
        return ctx.xp.broadcast_to(grad, ctx.shape)


class Max(Function):
    """Largest element along the axes. Ties share the gradient equally among the tied elements."""

    @staticmethod
    def forward(ctx, x, axes, keepdims):
        top = x.max(axis=axes, keepdims=True)
        ctx.save_for_backward(x, top)
        ctx.axes = axes
        return top if keepdims else top.reshape([n for i, n in enumerate(x.shape) if i not in axes])

    @staticmethod
    def backward(ctx, grad):
        x, top = ctx.saved
        # Only the winner moved the max. Splitting ties evenly keeps the total gradient equal to
        # `grad` and does not depend on the order of the elements.
        winners = (x == top).astype(x.dtype)
        winners /= winners.sum(axis=ctx.axes, keepdims=True)
        return winners * grad.reshape(top.shape)


def sum(x, axis=None, keepdims=False):
    """Sum over `axis` (int, tuple of ints, or None for every axis). x: any shape."""
    check_tensor("sum", "x", x)
    return Sum.apply(x, axes=normalize_axes(axis, x.ndim), keepdims=check_keepdims(keepdims))


def mean(x, axis=None, keepdims=False):
    """Mean over `axis` (int, tuple of ints, or None for every axis). x: any shape."""
    check_tensor("mean", "x", x)
    return Mean.apply(x, axes=normalize_axes(axis, x.ndim), keepdims=check_keepdims(keepdims))


def max(x, axis=None, keepdims=False):
    """Maximum over `axis`; the gradient goes to the maximal element (split evenly between ties)."""
    check_tensor("max", "x", x)
    return Max.apply(x, axes=normalize_axes(axis, x.ndim), keepdims=check_keepdims(keepdims))
