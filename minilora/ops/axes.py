"""Checking and normalising `axis` and shape arguments, shared by reductions, softmax and the shape ops.

Axes follow NumPy: an int (negative counts from the end), a tuple of ints, or None for all axes.
"""

import numpy as np


def normalize_axis(axis, ndim, argname="axis"):
    """One axis as an int in [0, ndim)."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{argname} must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{argname}={axis} is out of range for a tensor with {ndim} dimension(s); "
                         f"expected {-ndim} <= {argname} < {ndim}")
    return int(axis) % ndim


def normalize_axes(axis, ndim, argname="axis"):
    """None (every axis), an int or a tuple/list of ints, as a sorted tuple of distinct axes in [0, ndim)."""
    if axis is None:
        return tuple(range(ndim))
    given = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    axes = tuple(sorted(normalize_axis(a, ndim, argname) for a in given))
    if len(set(axes)) != len(axes):
        raise ValueError(f"{argname} names the same axis twice: {axis!r}")
    return axes


def kept_shape(shape, axes):
    """`shape` with every axis in `axes` set to 1: the shape of a reduction with keepdims=True."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def as_shape(args, what):
    """Accept f(x, 2, 3), f(x, (2, 3)) and f(x, [2, 3]); return a tuple of ints. what: names the argument."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    for a in args:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{what} must be ints, got {args!r}")
    return tuple(int(a) for a in args)


def check_keepdims(keepdims):
    """keepdims is a bool (NumPy would read any object by its truth value)."""
    if not isinstance(keepdims, (bool, np.bool_)):
        raise TypeError(f"keepdims must be a bool, got {keepdims!r}")
    return bool(keepdims)
