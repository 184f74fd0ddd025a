"""Ops that move elements without changing them: reshape, transpose/permute, concatenate, split, stack.

Their backward only moves the gradient back to where each element came from: reshape it back,
apply the inverse permutation, or cut it into the pieces that were joined.
"""

import math

import numpy as np

from minilora.function import Function, check_tensor
from minilora.ops.axes import as_shape, normalize_axis
from minilora.ops.select import getitem
from minilora.tensor import Tensor


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape)


class Transpose(Function):
    """Permute the axes: output axis i is input axis axes[i]."""

    @staticmethod
    def forward(ctx, x, axes):
        ctx.axes = axes
        return x.transpose(axes)

    @staticmethod
    def backward(ctx, grad):
        # The inverse permutation puts every axis back where it came from.
        return grad.transpose(tuple(np.argsort(ctx.axes).tolist()))


class Concatenate(Function):
    @staticmethod
    def forward(ctx, *arrays, axis):
        ctx.axis = axis
        ctx.offsets = np.cumsum([a.shape[axis] for a in arrays])[:-1].tolist()
        return ctx.xp.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        # Each input gets back the slab of the gradient that its elements occupied.
        return tuple(ctx.xp.split(grad, ctx.offsets, axis=ctx.axis))


def reshape(x, *shape):
    """The same elements in a new shape; one dimension may be -1 (inferred). x.reshape(2, -1) works too."""
    check_tensor("reshape", "x", x)
    shape = as_shape(shape, "reshape's shape")
    known = math.prod(n for n in shape if n != -1)
    if -1 in shape:
        fits = shape.count(-1) == 1 and known > 0 and x.size % known == 0
    else:
        fits = known == x.size
    if not fits or any(n < -1 for n in shape):
        raise ValueError(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) into shape {shape}")
    return Reshape.apply(x, shape=shape)


def transpose(x, *axes):
    """Permute the axes, as numpy.transpose: no axes reverses them (x.T); else a permutation of range(ndim)."""
    check_tensor("transpose", "x", x)
    axes = as_shape(axes, "transpose's axes") or tuple(reversed(range(x.ndim)))
    if sorted(normalize_axis(a, x.ndim, "transpose's axes") for a in axes) != list(range(x.ndim)):
        raise ValueError(f"transpose's axes must be a permutation of {tuple(range(x.ndim))} for a tensor of "
                         f"shape {x.shape}, got {axes}")
    return Transpose.apply(x, axes=tuple(a % x.ndim for a in axes))


def permute(x, *axes):
    """Permute the axes: output axis i is input axis axes[i]. Every axis must be named."""
    check_tensor("permute", "x", x)
    if not as_shape(axes, "permute's axes"):
        raise ValueError(f"permute needs a permutation of {tuple(range(x.ndim))}, got none")
    return transpose(x, *axes)


def swapaxes(x, axis1, axis2):
    """Exchange two axes, e.g. swapaxes(k, -2, -1) turns (..., T, d) into (..., d, T)."""
    check_tensor("swapaxes", "x", x)
    axes = list(range(x.ndim))
    i, j = normalize_axis(axis1, x.ndim, "axis1"), normalize_axis(axis2, x.ndim, "axis2")
    axes[i], axes[j] = axes[j], axes[i]
    return transpose(x, *axes)


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis. tensors: a list of Tensors with equal shapes except on `axis`."""
    tensors = _check_tensor_list(tensors, "concatenate")
    first = tensors[0]
    axis = normalize_axis(axis, first.ndim)

    def outside_axis(shape):
        return shape[:axis] + shape[axis + 1:]

    for i, t in enumerate(tensors):
        if t.ndim != first.ndim or outside_axis(t.shape) != outside_axis(first.shape):
            raise ValueError(f"concatenate along axis {axis}: tensor {i} has shape {t.shape}, which does not "
                             f"match tensor 0's shape {first.shape} outside that axis")
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    """Join tensors of one shape along a new axis: n tensors of shape S give shape S with n inserted at `axis`."""
    tensors = _check_tensor_list(tensors, "stack")
    shape = tensors[0].shape
    for i, t in enumerate(tensors):
        if t.shape != shape:
            raise ValueError(f"stack needs tensors of one shape: tensor 0 has shape {shape}, "
                             f"tensor {i} has {t.shape}")
    axis = normalize_axis(axis, len(shape) + 1)
    expanded = shape[:axis] + (1,) + shape[axis:]
    return concatenate([reshape(t, expanded) for t in tensors], axis=axis)


def split(x, sections_or_indices, axis=0):
    """Cut x along `axis` into pieces, as numpy.split; returns a tuple of Tensors.

    sections_or_indices: an int n (n equal pieces; the axis length must divide by n) or a list of
    indices where the cuts go ([2, 5] gives x[:2], x[2:5], x[5:]). Each piece is a slice of x, so
    the gradient of each piece flows back into its own part of x (and a piece not used gets none).
    """
    check_tensor("split", "x", x)
    axis = normalize_axis(axis, x.ndim)
    length = x.shape[axis]
    if isinstance(sections_or_indices, (int, np.integer)) and not isinstance(sections_or_indices, bool):
        n = int(sections_or_indices)
        if n <= 0 or length % n:
            raise ValueError(f"split into {n} equal pieces needs an axis length divisible by {n}; "
                             f"axis {axis} of shape {x.shape} has length {length}")
        cuts = [length // n * i for i in range(1, n)]
    elif isinstance(sections_or_indices, (list, tuple)):
        cuts = list(as_shape(sections_or_indices, "split's indices"))
    else:
        raise TypeError(f"split needs an int or a list of indices, got {sections_or_indices!r}")
    bounds = [0] + cuts + [length]
    before = (slice(None),) * axis
    return tuple(getitem(x, before + (slice(start, stop),)) for start, stop in zip(bounds[:-1], bounds[1:]))


def _check_tensor_list(tensors, what):
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise ValueError(f"{what} needs a non-empty list of Tensors, got {tensors!r}")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}: item {i} must be a Tensor, got {type(t).__name__}")
    return list(tensors)
