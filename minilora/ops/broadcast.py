"""Helpers shared by ops whose inputs may broadcast against each other."""

import numbers

from minilora import backend
from minilora.tensor import NUMERIC_KINDS, Tensor, numeric_kind


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
    # Checked first: np.asarray(None, dtype=float32) is NaN, and a string may parse as a number.
    if isinstance(value, numbers.Real):
        kind = "b" if isinstance(value, bool) else "i" if isinstance(value, numbers.Integral) else "f"
    elif hasattr(value, "dtype"):
        kind = value.dtype.kind
        if kind not in NUMERIC_KINDS:
            raise TypeError(f"the other operand must be a Tensor, a number or a numeric array, got an "
                            f"array of dtype {value.dtype}")
    elif isinstance(value, (list, tuple)):
        kind = numeric_kind(value, "the other operand")
    else:
        raise TypeError(f"the other operand must be a Tensor, a number or a numeric array, got "
                        f"{type(value).__name__} {value!r}")
    if like.dtype.kind in "iub" and kind == "f":
        # Casting 0.5 to an integer dtype would silently give 0.
        raise TypeError(f"cannot combine the float {value!r} with a {like.dtype} tensor; "
                        "cast the tensor first with .to(dtype='float32')")
    if like.dtype.kind == "b" and kind != "b":
        # Casting 3 to bool would silently give True: a mask times 3 would still be the mask.
        raise TypeError(f"cannot combine {value!r} with a bool tensor (a mask); cast the mask first, "
                        "with .to(dtype='int64') or .to(dtype='float32')")
    try:
        return Tensor(xp.asarray(value, dtype=like.dtype))
    except OverflowError:
        raise ValueError(f"the operand {value!r} does not fit in the tensor's dtype {like.dtype}") from None


def as_tensor_pair(a, b):
    """Let one side of a binary op be a Python number: it takes the tensor side's dtype and device."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"at least one operand must be a Tensor, got {type(a).__name__} and {type(b).__name__}")
    like = a if isinstance(a, Tensor) else b
    return as_tensor(a, like), as_tensor(b, like)
