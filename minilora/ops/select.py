"""Picking elements: indexing (x[...]), where(cond, a, b) and masked_fill.

Indexing follows NumPy: ints, slices, None, Ellipsis, integer arrays (or integer Tensors) and
boolean masks. Its backward scatters the gradient back into a zero array of the input's shape;
an element picked twice (x[[0, 0]]) gets both contributions.
"""

import numpy as np

from minilora import backend
from minilora.function import Function, check_tensor
from minilora.ops.broadcast import as_tensor, as_tensor_pair, unbroadcast
from minilora.tensor import Tensor


class GetItem(Function):
    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.index = x.shape, index
        return x[index]

    @staticmethod
    def backward(ctx, grad):
        grad_x = ctx.xp.zeros(ctx.shape, dtype=grad.dtype)
        if any(_is_integer_array(item) for item in ctx.index):
            backend.scatter_add(grad_x, ctx.index, grad)  # an integer array may repeat an index
        else:
            grad_x[ctx.index] = grad  # slices, ints and masks pick each element at most once
        return grad_x


class Where(Function):
    """cond ? a : b elementwise, with broadcasting; cond is a boolean array (no gradient)."""

    index_inputs = (0,)

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        ctx.shapes = a.shape, b.shape
        return ctx.xp.where(cond, a, b)

    @staticmethod
    def backward(ctx, grad):
        (cond,) = ctx.saved
        a_shape, b_shape = ctx.shapes
        zero = ctx.xp.zeros((), dtype=grad.dtype)
        grad_a = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_a = unbroadcast(ctx.xp.where(cond, grad, zero), a_shape)
        if ctx.needs_input_grad[2]:
            grad_b = unbroadcast(ctx.xp.where(cond, zero, grad), b_shape)
        return None, grad_a, grad_b


def _is_integer_array(item):
    return hasattr(item, "dtype") and item.dtype.kind in "iu" and item.ndim > 0


def _as_index(index, x):
    """An index in the form the array module takes: a tuple whose arrays live on x's device."""
    items = index if isinstance(index, tuple) else (index,)
    return tuple(_as_index_item(item, x) for item in items)


def _as_index_item(item, x):
    """Ints, slices, None and ... pass through; Tensors, lists and arrays become integer or boolean arrays."""
    if item is None or item is Ellipsis or isinstance(item, (int, np.integer, slice)):
        return item
    if isinstance(item, Tensor):
        array = item.data
    elif backend.device_of(item) == "cuda":
        array = item
    else:
        array = np.asarray(item)
        if array.size == 0:
            array = array.astype(np.int64)  # x[[]] selects nothing; NumPy reads [] as a float array
        array = backend.to_device(array, x.device)
    if backend.device_of(array) != x.device:
        raise ValueError(f"the index is on {backend.device_of(array)} but the indexed tensor is on {x.device}")
    if array.dtype.kind not in "iub":
        raise TypeError(f"an index must hold integers or booleans, got {array.dtype} ({item!r})")
    return array


def getitem(x, index):
    """x[index] with NumPy semantics (basic slicing, ints, None, ..., integer arrays, boolean masks)."""
    check_tensor("getitem", "x", x)
    return GetItem.apply(x, index=_as_index(index, x))


def where(cond, a, b):
    """Elementwise cond ? a : b with broadcasting. cond: a boolean Tensor; a, b: Tensors or numbers."""
    a, b = as_tensor_pair(a, b)
    if not isinstance(cond, Tensor) or cond.dtype != np.bool_:
        got = cond.dtype if isinstance(cond, Tensor) else type(cond).__name__
        raise TypeError(f"where: cond must be a boolean Tensor (e.g. x > 0), got {got}")
    return Where.apply(cond, a, b)


def masked_fill(x, mask, value):
    """x with `value` wherever mask is True. mask: a boolean Tensor that broadcasts to x's shape.

    Attention uses it to set future positions to -inf before the softmax; no gradient flows to the
    filled positions.
    """
    check_tensor("masked_fill", "x", x)
    if not isinstance(mask, Tensor) or mask.dtype != np.bool_:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"masked_fill: mask must be a boolean Tensor, got {got}")
    try:
        fits = np.broadcast_shapes(mask.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to x's shape {x.shape}")
    return where(mask, as_tensor(value, x), x)
