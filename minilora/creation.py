"""Ways to make a Tensor besides minilora.tensor(): zeros, ones, randn, arange.

Shapes may be given as separate ints or as one tuple (zeros(2, 3) or zeros((2, 3))). Random numbers
come from minilora.random, so minilora.manual_seed makes them reproducible.
"""

from minilora import backend, random
from minilora.checks import check_number
from minilora.ops.axes import as_shape
from minilora.tensor import NUMERIC_KINDS, Tensor


def _numeric_dtype(dtype):
    dtype = backend.parse_dtype(dtype)
    if dtype.kind not in NUMERIC_KINDS:
        raise TypeError(f"dtype must be a numeric or bool dtype (e.g. 'float32', 'int64'), got {dtype}")
    return dtype


def _sizes(shape, what):
    shape = as_shape(shape, what)
    if any(n < 0 for n in shape):
        raise ValueError(f"{what} must be sizes >= 0, got {shape}")
    return shape


def zeros(*shape, dtype="float32", device="cpu", requires_grad=False):
    """A Tensor of zeros of `shape`."""
    xp = backend.xp_for(backend.check_device(device))
    return Tensor(xp.zeros(_sizes(shape, "zeros' shape"), dtype=_numeric_dtype(dtype)), requires_grad)


def ones(*shape, dtype="float32", device="cpu", requires_grad=False):
    """A Tensor of ones of `shape`."""
    xp = backend.xp_for(backend.check_device(device))
    return Tensor(xp.ones(_sizes(shape, "ones' shape"), dtype=_numeric_dtype(dtype)), requires_grad)


def randn(*shape, dtype="float32", device="cpu", requires_grad=False):
    """A Tensor of standard normal samples of `shape` (float32 or float64)."""
    shape = _sizes(shape, "randn's shape")
    data = random.randn(shape, dtype=backend.parse_float_dtype(dtype), device=backend.check_device(device))
    return Tensor(data, requires_grad)


def arange(start, stop=None, step=1, dtype=None, device="cpu"):
    """start, start+step, ... up to but excluding stop, as numpy.arange (arange(n) gives 0..n-1).

    start, stop, step: finite numbers (stop may be None), step not 0.
    dtype: int64 when start, stop and step are ints, else float32, unless given.
    """
    xp = backend.xp_for(backend.check_device(device))
    for name, value in (("start", start), ("stop", stop), ("step", step)):
        if value is not None or name != "stop":
            check_number(f"arange: {name}", value)
    if step == 0:
        raise ValueError("arange: step must not be 0")
    if dtype is None:
        dtype = "int64" if all(isinstance(v, int) for v in (start, stop, step) if v is not None) else "float32"
    return Tensor(xp.arange(start, stop, step, dtype=_numeric_dtype(dtype)))
