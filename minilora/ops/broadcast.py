"""Helpers shared by ops whose inputs may broadcast against each other."""

from minilora import backend
from minilora.tensor import Tensor


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting.

    Broadcasting copies an input along new leading axes and along axes of size 1, so each copy's
    gradient must be added back into the one element it came from.
    """
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def as_tensor(value, like):
    """Wrap a Python number (or array) as a constant Tensor with `like`'s dtype and device."""
    if isinstance(value, Tensor):
        return value
    xp = backend.xp_of(like.data)
    return Tensor(xp.asarray(value, dtype=like.dtype))
