"""Tensor: an array plus what is needed to differentiate through it.

A Tensor holds `data` (a numpy.ndarray on "cpu", a cupy.ndarray on "cuda"), `requires_grad`, and,
when it was made by an op while gradients were wanted, `_ctx`: the op's Context, which remembers the
op, its input tensors and whatever the forward saved. `backward()` walks these contexts from the
output back to the leaves in reverse topological order, calling each op's backward once and adding
up the gradients of tensors that were used more than once.
"""

import contextlib
import numbers

import numpy as np

from minilora import backend

_grad_enabled = True


def is_grad_enabled():
    """False inside a `no_grad()` block."""
    return _grad_enabled


@contextlib.contextmanager
def no_grad():
    """Run ops without recording a graph (evaluation, optimizer updates, merging weights)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


class Tensor:
    # Makes `ndarray + Tensor` call Tensor.__radd__ instead of NumPy broadcasting over a Tensor.
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False, _ctx=None):
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"requires_grad=True needs a floating dtype, got {data.dtype}; "
                            "integer tensors (indices, targets) never require grad")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = _ctx

    # ---- what a tensor is -------------------------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return int(self.data.size)

    @property
    def is_leaf(self):
        return self._ctx is None

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor: it has no first axis (its one value is .item())")
        return self.shape[0]

    def __bool__(self):
        """The truth of a one-element tensor, so that `if loss < best:` means what it says; more
        elements are ambiguous, as in NumPy (without this, Python would use len() instead)."""
        if self.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous: compare "
                             "one element (.item()), or reduce the mask first (.numpy().any(), .all())")
        return bool(self.data.reshape(()).item())

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        return f"tensor({backend.to_numpy(self.data)!r}{grad}{dev})"

    def numpy(self):
        """The data as a NumPy array (copied from the GPU if needed)."""
        return backend.to_numpy(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """The same data, cut from the graph (no gradient flows through it)."""
        return Tensor(self.data)

    def to(self, device=None, dtype=None):
        """A copy on `device` and/or cast to `dtype`; `self` when nothing changes. Cuts the graph."""
        data = self.data
        if device is not None:
            data = backend.to_device(data, backend.check_device(device))
        if dtype is not None:
            dtype = backend.parse_dtype(dtype)
            if dtype.kind not in NUMERIC_KINDS:
                raise TypeError(f"dtype must be a numeric or bool dtype (e.g. 'float64'), got {dtype}")
            data = data.astype(dtype, copy=False)
        if data is self.data:
            return self
        return Tensor(data, requires_grad=self.requires_grad and data.dtype.kind == "f")

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"requires_grad_ needs a floating dtype, got {self.dtype}")
        self.requires_grad = requires_grad
        return self

    # ---- backward ------------------------------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) · grad into the `.grad` of every leaf that requires grad.

        grad: an array (or Tensor) of self's shape; may be omitted when self has one element.

        The graph keeps the arrays forward saved, not copies (copies would double the memory of a
        step): a tensor's .data changed in place between forward and backward (an optimizer step,
        an edit by hand) gives the gradient at the new values, without an error. So call backward
        before changing any input, as a training step does.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad: none of its "
                               "inputs has requires_grad=True, or it was computed under no_grad()")
        xp = backend.xp_of(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() on a non-scalar tensor of shape {self.shape} needs a "
                                   "gradient: pass grad= of that shape, or reduce it first (e.g. .sum())")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            if not hasattr(grad, "dtype"):
                numeric_kind(grad, "backward(grad=...)")  # None is not a gradient (NumPy would make it NaN)
            elif grad.dtype.kind not in NUMERIC_KINDS:
                raise TypeError(f"backward(grad=...) needs a numeric array, got dtype {grad.dtype}")
            grad = xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward(grad=...) needs shape {self.shape}, got {tuple(grad.shape)}")

        grads = {id(self): grad}
        for t in reversed(self._topological_order()):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            if t._ctx is None:
                # Always a fresh array: `g` may be shared with another input's gradient (add passes
                # the same array to both sides), be a read-only broadcast view, or a NumPy scalar.
                t.grad = xp.array(g if t.grad is None else t.grad + g)
                continue
            ctx = t._ctx
            input_grads = ctx.function.backward(ctx, g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(ctx.inputs):
                raise RuntimeError(f"{ctx.function.__name__}.backward returned {len(input_grads)} "
                                   f"gradients for {len(ctx.inputs)} inputs")
            for parent, pg in zip(ctx.inputs, input_grads):
                if pg is None or not parent.requires_grad:
                    continue
                _check_grad(ctx.function, parent, pg)
                grads[id(parent)] = grads[id(parent)] + pg if id(parent) in grads else pg

    def _topological_order(self):
        """Tensors that need grad, each after all of its inputs (iterative: deep graphs are fine)."""
        order, seen = [], set()
        stack = [(self, False)]
        while stack:
            t, inputs_done = stack.pop()
            if inputs_done:
                order.append(t)
                continue
            if id(t) in seen:
                continue
            seen.add(id(t))
            stack.append((t, True))
            if t._ctx is not None:
                stack.extend((p, False) for p in t._ctx.inputs if p.requires_grad and id(p) not in seen)
        return order

    # ---- operators and methods (each is an op in minilora.ops) ---------------------------------
    def __add__(self, other):
        return F.add(self, other)

    def __radd__(self, other):
        return F.add(other, self)

    def __sub__(self, other):
        return F.sub(self, other)

    def __rsub__(self, other):
        return F.sub(other, self)

    def __mul__(self, other):
        return F.mul(self, other)

    def __rmul__(self, other):
        return F.mul(other, self)

    def __truediv__(self, other):
        return F.div(self, other)

    def __rtruediv__(self, other):
        return F.div(other, self)

    def __neg__(self):
        return F.neg(self)

    def __pow__(self, exponent):
        return F.pow(self, exponent)

    def __matmul__(self, other):
        return F.matmul(self, other)

    def __rmatmul__(self, other):
        return F.matmul(other, self)

    def __getitem__(self, index):
        return F.getitem(self, index)

    # Comparisons give plain boolean tensors (masks), never part of the graph.
    def __lt__(self, other):
        return Tensor(self.data < _raw(other))

    def __le__(self, other):
        return Tensor(self.data <= _raw(other))

    def __gt__(self, other):
        return Tensor(self.data > _raw(other))

    def __ge__(self, other):
        return Tensor(self.data >= _raw(other))

    def __eq__(self, other):
        return Tensor(self.data == _raw(other))

    def __ne__(self, other):
        return Tensor(self.data != _raw(other))

    # Defining __eq__ would drop hashing; a Tensor stays hashable by identity, so dicts and sets
    # of parameters work as before (and never compare values).
    __hash__ = object.__hash__

    def sum(self, axis=None, keepdims=False):
        return F.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return F.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return F.max(self, axis=axis, keepdims=keepdims)

    def exp(self):
        return F.exp(self)

    def log(self):
        return F.log(self)

    def tanh(self):
        return F.tanh(self)

    def relu(self):
        return F.relu(self)

    def reshape(self, *shape):
        return F.reshape(self, *shape)

    def transpose(self, *axes):
        return F.transpose(self, *axes)

    def permute(self, *axes):
        return F.permute(self, *axes)

    @property
    def T(self):
        return F.transpose(self)

    def masked_fill(self, mask, value):
        return F.masked_fill(self, mask, value)


def _check_grad(function, tensor, grad):
    """A backward must return, for each input, an array of that input's shape and dtype."""
    if tuple(grad.shape) != tensor.shape:
        raise RuntimeError(f"{function.__name__}.backward returned a gradient of shape {tuple(grad.shape)} "
                           f"for an input of shape {tensor.shape}")
    if grad.dtype != tensor.dtype:
        raise RuntimeError(f"{function.__name__}.backward returned a {grad.dtype} gradient "
                           f"for a {tensor.dtype} input")


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def tensor(data, requires_grad=False, dtype=None, device="cpu"):
    """Make a Tensor from a list, a scalar or an array.

    dtype: defaults to float32 for Python floats, int64 for Python ints, and the array's own dtype
    for NumPy/CuPy arrays (so a float64 array stays float64, as gradient checks need).
    device: "cpu" (NumPy) or "cuda" (CuPy).
    """
    xp = backend.xp_for(backend.check_device(device))
    if isinstance(data, Tensor):
        data = data.data
    if hasattr(data, "dtype"):
        data = backend.to_device(data, device)
    if dtype is not None:
        dtype = backend.parse_dtype(dtype)
        if dtype.kind not in NUMERIC_KINDS:
            raise TypeError(f"dtype must be a numeric or bool dtype (e.g. 'float32', 'int64'), got {dtype}")
    if not hasattr(data, "dtype"):
        # Checked even with a dtype given: NumPy would turn None into NaN, and "1.5" into 1.5.
        kind = numeric_kind(data, big_ints=dtype is not None)
        if dtype is None:
            dtype = backend.parse_dtype("float32" if kind == "f" else ("int64" if kind in "iu" else "bool"))
    try:
        array = xp.array(data, dtype=dtype)  # always a copy: the tensor owns its data
    except OverflowError as exc:
        raise ValueError(f"tensor(data): a value does not fit in {dtype} ({exc})") from None
    if array.dtype.kind not in NUMERIC_KINDS:
        raise TypeError(f"tensor(data) needs numbers or bools, got {_describe(data)} (dtype {array.dtype})")
    return Tensor(array, requires_grad=requires_grad)


# bool, signed and unsigned ints, floats: what NumPy and CuPy compute with (no objects, strings,
# complex numbers or dates).
NUMERIC_KINDS = "biuf"


def numeric_kind(data, what="tensor(data)", big_ints=False):
    """The dtype kind NumPy infers for `data` (a number or nested lists of them); TypeError or
    ValueError for what makes no tensor: None, a string, a ragged list, and an int beyond int64
    (which NumPy keeps as a Python object) unless big_ints (a dtype is given to convert it to).
    what: names the argument in the messages."""
    try:
        kind = np.asarray(data).dtype.kind
    except (ValueError, TypeError) as exc:  # a ragged nested list
        raise ValueError(f"{what} needs a rectangular nested list of numbers, got {_describe(data)} "
                         f"({exc})") from None
    if kind == "O" and _only_real_numbers(data):  # so some int is beyond int64
        if not big_ints:
            raise ValueError(f"{what}: an int is too large for int64, got {_describe(data)}; "
                             "pass floats (or dtype='float64') for values that large")
        kind = "i"
    if kind not in NUMERIC_KINDS:
        raise TypeError(f"{what} needs numbers or bools, got {_describe(data)}")
    return kind


def _only_real_numbers(data):
    if isinstance(data, (list, tuple)):
        return all(_only_real_numbers(d) for d in data)
    return isinstance(data, numbers.Real)


def _describe(data):
    text = repr(data)
    return f"{type(data).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


# Imported last: functional's ops need the Tensor class defined above.
from minilora import functional as F  # noqa: E402
