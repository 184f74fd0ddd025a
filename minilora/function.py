"""Function: the base class of every differentiable op.

An op is a subclass with two static methods written next to each other:

    class Exp(Function):
        @staticmethod
        def forward(ctx, x):            # raw arrays in, one raw array out
            y = ctx.xp.exp(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad):        # d(loss)/d(output) in, d(loss)/d(each input) out
            (y,) = ctx.saved
            return grad * y

`Exp.apply(t)` unwraps the tensors, checks that they share a device and a dtype, runs forward,
and (when a gradient is wanted) records the ctx on the output so `Tensor.backward` can call
backward later. Options that are not tensors (an axis, a probability) are passed as keywords and
reach forward as keywords.
"""

from minilora import backend
from minilora.tensor import Tensor, is_grad_enabled


class Context:
    """What forward leaves for backward: saved arrays, flags, and any attribute it sets."""

    def __init__(self, function, inputs, xp):
        self.function = function
        self.inputs = inputs
        self.xp = xp
        self.needs_input_grad = tuple(t.requires_grad for t in inputs)
        self.saved = ()

    def save_for_backward(self, *arrays):
        self.saved = arrays


class Function:
    """Base class of ops; see the module docstring."""

    # Positions of inputs that hold integer indices (targets, token ids) rather than values:
    # they are exempt from the same-dtype rule and never receive a gradient.
    index_inputs = ()
    # True for ops defined on real numbers only (softmax, GELU, layer norm, ...): an integer or bool
    # tensor is refused with its dtype named, instead of failing inside NumPy's in-place arithmetic.
    float_inputs = False

    @staticmethod
    def forward(ctx, *arrays, **options):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **options):
        for i, t in enumerate(inputs):
            if not isinstance(t, Tensor):
                raise TypeError(f"{cls.__name__}: input {i} must be a Tensor, got {type(t).__name__}")
        _check_same_device_and_dtype(cls, inputs)
        if cls.float_inputs:
            _check_floating(cls, inputs)
        device = inputs[0].device
        ctx = Context(cls, inputs, backend.xp_for(device))
        # NumPy returns a scalar, not an array, for 0-d results (x.sum()): keep Tensor.data an array.
        out = ctx.xp.asarray(cls.forward(ctx, *(t.data for t in inputs), **options))
        _check_output_dtype(cls, inputs, out)
        requires_grad = is_grad_enabled() and any(ctx.needs_input_grad)
        return Tensor(out, requires_grad=requires_grad, _ctx=ctx if requires_grad else None)


def check_tensor(op, name, value):
    """TypeError unless `value` is a Tensor: for the op wrappers that read x.ndim or x.shape (to check
    an axis or a shape) before apply() would check it."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(value).__name__}")
    return value


def _check_same_device_and_dtype(fn, inputs):
    devices = {t.device for t in inputs}
    if len(devices) > 1:
        names = " and ".join(f"{t.device} (input {i})" for i, t in enumerate(inputs))
        raise ValueError(f"{fn.__name__}: inputs are on different devices: {names}; "
                         "move them to one device with .to(device)")
    values = [(i, t) for i, t in enumerate(inputs) if i not in fn.index_inputs]
    dtypes = {t.dtype for _, t in values}
    if len(dtypes) > 1:
        names = " and ".join(f"{t.dtype} (input {i})" for i, t in values)
        raise TypeError(f"{fn.__name__}: inputs have different dtypes: {names}; "
                        "minilora never casts silently, cast one with .to(dtype=...)")


def _check_floating(fn, inputs):
    for i, t in enumerate(inputs):
        if i not in fn.index_inputs and t.dtype.kind != "f":
            raise TypeError(f"{fn.__name__}: input {i} has dtype {t.dtype}, expected a floating tensor "
                            "(float32 or float64); minilora never casts silently, cast it with .to(dtype=...)")


def _check_output_dtype(fn, inputs, out):
    """A float op must return the dtype it was given (NumPy promotion can turn float32 into float64)."""
    values = [t for i, t in enumerate(inputs) if i not in fn.index_inputs]
    if values and values[0].dtype.kind == "f" and out.dtype != values[0].dtype:
        raise TypeError(f"{fn.__name__}.forward returned {out.dtype} for {values[0].dtype} inputs")
