"""Input checks for the fused LoRA op, shared by every backend, run before any compiled call.

Where it sits: `minilora.kernels.lora_forward` / `lora_backward` (dispatch.py) call these on the
user's arrays, and the thin wrappers around compiled code (cpp.py, cuda.py) call them again on the
2-D arrays they hand over, so that a wrong array becomes a readable TypeError or ValueError naming
the argument, what it is and what was expected, never a crash or a silent cast.

Shapes: x (..., K), W (N, K), A (r, K), B (N, r), bias (N,), u (..., r), dy (..., N).
"""

import math
import numbers

import numpy as np

from minilora import backend

_KIND = {"cpu": "NumPy", "cuda": "CuPy"}


def array_device(name, array):
    """"cpu" for a NumPy array, "cuda" for a CuPy array; TypeError for anything else."""
    if isinstance(array, np.ndarray):
        return "cpu"
    if type(array).__module__.split(".")[0] == "cupy":
        return "cuda"
    raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(array).__name__}")


def check_arrays(named, device=None):
    """Every array in `named` (name -> array): float32 or float64, all of one dtype and on one device
    ("cpu" or "cuda"; `device` when given). Returns ``(dtype, device)``. minilora never casts silently."""
    first, dtype = None, None
    for name, array in named.items():
        where = array_device(name, array)
        if device is None:
            device = where
        if where != device:
            expected = (f"{first} is a {_KIND[device]} array" if first
                        else f"this needs {_KIND[device]} arrays")
            raise ValueError(f"{name} is a {_KIND[where]} array but {expected}; put every array on one "
                             "device")
        if array.dtype not in backend.FLOAT_DTYPES:
            raise TypeError(f"{name} has dtype {array.dtype}, expected float32 or float64")
        if dtype is None:
            first, dtype = name, array.dtype
        elif array.dtype != dtype:
            raise TypeError(f"{name} has dtype {array.dtype} but {first} has {dtype}; all arrays must "
                            "share one dtype (minilora never casts silently: use .astype)")
    return dtype, device


def check_scaling(scaling, dtype=None):
    """The LoRA scaling s = alpha / r as a Python float (a NumPy float64 scalar would turn float32
    results into float64). It must be finite, and finite in `dtype` (float32 or float64) when
    given: the compiled kernels multiply in the arrays' dtype, where 1e300 is already inf, and an
    infinite scaling makes 0·inf = NaN of every zero in B·u, which no backend should be left to
    decide."""
    if isinstance(scaling, bool) or not isinstance(scaling, numbers.Real):
        raise TypeError(f"scaling must be a real number, got {type(scaling).__name__} {scaling!r}")
    scaling = float(scaling)
    if not math.isfinite(scaling):
        raise ValueError(f"scaling must be a finite number (alpha / r), got {scaling!r}")
    largest = float(np.finfo(dtype).max) if dtype is not None else math.inf
    if abs(scaling) > largest:
        raise ValueError(f"scaling {scaling!r} is not representable in {np.dtype(dtype)} (largest "
                         f"{largest:.4g}); the arrays' dtype must hold it")
    return scaling


def check_outputs(out, shapes, dtype, device, inputs):
    """The caller's output buffers `out` (a tuple in the order of `shapes`, name -> shape): arrays
    on `device` of `dtype` and those shapes, C-contiguous, writeable, and overlapping none of
    `inputs` ({name: array}) nor each other. Returns them as a tuple."""
    if not isinstance(out, (tuple, list)) or len(out) != len(shapes):
        got = f"{len(out)} items" if isinstance(out, (tuple, list)) else type(out).__name__
        raise ValueError(f"out must be a tuple of {len(shapes)} arrays {tuple(shapes)}, got {got}")
    given = dict(zip(shapes, out))
    out_dtype, _ = check_arrays(given, device=device)
    if out_dtype != dtype:
        raise TypeError(f"out arrays have dtype {out_dtype}, expected {dtype} like the inputs")
    for name, shape in shapes.items():
        expect_shape(name, given[name], shape)
    check_contiguous(given)
    for name, array in given.items():
        if not getattr(array.flags, "writeable", True):  # CuPy arrays are always writeable
            raise ValueError(f"the output {name} is read-only; pass a writeable array")
    check_no_aliasing(given, inputs)
    return tuple(out)


def check_no_aliasing(outputs, inputs):
    """Output buffers handed to compiled code must not overlap any input or each other: the loops
    write an output while still reading the inputs, so an overlap silently gives wrong values.
    outputs, inputs: {name: array} (None values are skipped)."""
    named = [(name, a) for name, a in (*outputs.items(), *inputs.items()) if a is not None]
    for i, (out_name, out) in enumerate(named[:len(outputs)]):
        for other_name, other in named[i + 1:]:
            if backend.xp_of(out).may_share_memory(out, other):
                raise ValueError(f"the output {out_name} shares memory with {other_name}; compiled code "
                                 "writes outputs while it reads its inputs, so pass a separate, "
                                 "freshly allocated array for each output")


def lora_sizes(x, W, A, B, bias=None):
    """Check the shapes of x (..., K), W (N, K), A (r, K), B (N, r), bias (N,) or None against each
    other; return ``(M, K, N, r)`` with M the number of rows of x (the product of its leading dims).
    M may be 0 (an empty batch gives empty outputs); every other size must be at least 1."""
    if x.ndim < 1:
        raise ValueError("x must have shape (..., K), got a 0-d array")
    for name, array, meaning in (("W", W, "(N, K)"), ("A", A, "(r, K)"), ("B", B, "(N, r)")):
        if array.ndim != 2:
            raise ValueError(f"{name} must be 2-D {meaning}, got shape {tuple(array.shape)}")
    K, (N, r) = x.shape[-1], (W.shape[0], A.shape[0])
    M = math.prod(x.shape[:-1])  # math.prod: a tenth of np.prod's time on a short tuple
    if r < 1:
        raise ValueError(f"the LoRA rank r = A.shape[0] is {r}; it must be at least 1 "
                         f"(A has shape {tuple(A.shape)}, expected (r, K))")
    if K < 1 or N < 1:
        raise ValueError(f"x has shape {tuple(x.shape)} and W has shape {tuple(W.shape)}; K and N "
                         f"must be at least 1, got K = {K}, N = {N}")
    expect_shape("W", W, (N, K), f"(N, K) with K = x.shape[-1] = {K}")
    expect_shape("A", A, (r, K), f"(r, K) with K = x.shape[-1] = {K}")
    expect_shape("B", B, (N, r), f"(N, r) with N = W.shape[0] = {N} and r = A.shape[0] = {r}")
    if bias is not None:
        expect_shape("bias", bias, (N,), f"(N,) with N = W.shape[0] = {N}")
    return M, K, N, r


def check_backward_shapes(dy, x, u, N, r):
    """dy (..., N) and u (..., r) with the leading dims of x (..., K)."""
    lead = tuple(x.shape[:-1])
    expect_shape("dy", dy, lead + (N,), f"x.shape[:-1] + (N,) with N = W.shape[0] = {N}")
    expect_shape("u", u, lead + (r,), f"x.shape[:-1] + (r,) with r = A.shape[0] = {r}, "
                 "as returned by lora_forward")


def expect_shape(name, array, shape, meaning=""):
    if tuple(array.shape) != tuple(shape):
        meaning = f" ({meaning})" if meaning else ""
        raise ValueError(f"{name} has shape {tuple(array.shape)}, expected {tuple(shape)}{meaning}")


def expect_2d(name, array, meaning):
    """Compiled entry points take 2-D arrays; lora_forward / lora_backward flatten leading dims."""
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D {meaning} here, got shape {tuple(array.shape)}; "
                         "minilora.kernels.lora_forward / lora_backward accept leading batch dims")


def check_contiguous(named):
    """Compiled code reads raw row-major memory: every array must be C-contiguous."""
    for name, array in named.items():
        if not array.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (row-major) for compiled code, got strides "
                             f"{array.strides} for shape {tuple(array.shape)}; make a contiguous copy "
                             "first, or call minilora.kernels.lora_forward / lora_backward, which do")
