"""Ways to make a Tensor besides minilora.tensor(): zeros, ones, randn, arange.

Shapes may be given as separate ints or as one tuple (zeros(2, 3) or zeros((2, 3))). Random numbers
come from minilora.random, so minilora.manual_seed makes them reproducible.
"""

from minilora import backend, random
from minilora.ops.axes import as_shape
from minilora.tensor import Tensor


def _float_dtype(dtype):
    dtype = backend.parse_dtype(dtype)
    if dtype not in backend.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def zeros(*shape, dtype="float32", device="cpu", requires_grad=False):
    """A Tensor of zeros of `shape`."""
    xp = backend.xp_for(backend.check_device(device))
    return Tensor(xp.zeros(as_shape(shape, "zeros' shape"), dtype=backend.parse_dtype(dtype)), requires_grad)


def ones(*shape, dtype="float32", device="cpu", requires_grad=False):
    """A Tensor of ones of `shape`."""
    xp = backend.xp_for(backend.check_device(device))
    return Tensor(xp.ones(as_shape(shape, "ones' shape"), dtype=backend.parse_dtype(dtype)), requires_grad)


def randn(*shape, dtype="float32", device="cpu", requires_grad=False):
    """A Tensor of standard normal samples of `shape` (float32 or float64)."""
    shape = as_shape(shape, "randn's shape")
    data = random.randn(shape, dtype=_float_dtype(dtype), device=backend.check_device(device))
    return Tensor(data, requires_grad)


def arange(start, stop=None, step=1, dtype=None, device="cpu"):
    """start, start+step, ... up to but excluding stop, as numpy.arange (arange(n) gives 0..n-1).

    dtype: int64 when start, stop and step are ints, else float32, unless given.
    """
    xp = backend.xp_for(backend.check_device(device))
    if dtype is None:
        dtype = "int64" if all(isinstance(v, int) for v in (start, stop, step) if v is not None) else "float32"
    return Tensor(xp.arange(start, stop, step, dtype=backend.parse_dtype(dtype)))
