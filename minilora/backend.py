"""Array backends and devices: which array module (NumPy or CuPy) holds a tensor's data.

Every op works on raw arrays through ``xp``, the array module of the device the tensor lives on:
``numpy`` on "cpu", ``cupy`` on "cuda". This file is the only place that imports CuPy, so the rest
of minilora runs (and every error message stays readable) on a machine that has no GPU.
"""

import importlib
import os

import numpy as np

from minilora import memory

DEVICES = ("cpu", "cuda")
FLOAT_DTYPES = (np.dtype("float32"), np.dtype("float64"))

_cupy = None
_cupy_error = None


def _import_cupy():
    """Import CuPy once; remember why it failed so `minilora info` can say so."""
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy

            _cupy = cupy
        except Exception as exc:  # ImportError, or a CUDA library that fails to load
            _cupy_error = f"CuPy is not importable ({type(exc).__name__}: {exc})"
    return _cupy


def cuda_status():
    """Return ``(usable, reason)``: whether CuPy sees a GPU, and if not, why not (one line)."""
    cupy = _import_cupy()
    if cupy is None:
        return False, _cupy_error
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no usable GPU: CUDA driver or runtime error ({exc})"
    if count == 0:
        return False, "no usable GPU: the CUDA driver reports 0 devices"
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else name
    return True, f"{count} device(s), device 0 is {name}"


def cuda_available():
    """True when arrays can be put on "cuda" (CuPy is installed and sees a GPU)."""
    return cuda_status()[0]


# ---- the compiled extension minilora._C ----------------------------------------------------------
_extension = None
_extension_error = None


def _import_extension():
    """Import minilora._C once; remember why it failed, so every path can fall back to NumPy."""
    global _extension, _extension_error
    if _extension is None and _extension_error is None:
        # Between parallel regions OpenMP's threads spin for a short while, then sleep: a training
        # step runs about a hundred compiled ops back to back, and waking a sleeping thread for each
        # made a step of the demo's model 1.4x slower (sleeping at once, OMP_WAIT_POLICY=PASSIVE);
        # spinning for ever (ACTIVE) would hold a core whenever Python runs between ops or waits
        # for the user. The products of a step run on these threads too (kernels/compiled.py), so
        # there is no second pool of BLAS threads waiting for the cores. Read once, when OpenMP
        # loads with _C; values the user set win. GCC's libgomp counts its spin in iterations
        # (300,000: about a millisecond), LLVM's libomp in milliseconds.
        os.environ.setdefault("GOMP_SPINCOUNT", "300000")
        os.environ.setdefault("KMP_BLOCKTIME", "1")
        memory.reuse_freed_memory()
        try:
            _extension = importlib.import_module("minilora._C")
        except ImportError as exc:  # not built, or built for another Python or with a missing library
            _extension_error = f"minilora._C is not importable ({type(exc).__name__}: {exc})"
    return _extension


def extension_status():
    """Return ``(module, reason)``: the compiled extension minilora._C and a one-line description,
    or ``(None, why it could not be loaded)``. Imported once; the package works without it."""
    ext = _import_extension()
    if ext is None:
        return None, _extension_error
    return ext, f"built {'with' if ext.with_cuda else 'without'} CUDA ({ext.__file__})"


def check_device(device):
    """Normalise a device name; raise a clear error for anything else."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not cuda_available():
        raise RuntimeError(f"device 'cuda' is not usable here: {cuda_status()[1]}")
    return device


def xp_for(device):
    """The array module for a device: numpy for "cpu", cupy for "cuda"."""
    return np if device == "cpu" else _import_cupy()


def device_of(array):
    """"cuda" for a CuPy array, "cpu" for anything else."""
    return "cuda" if _cupy is not None and isinstance(array, _cupy.ndarray) else "cpu"


def xp_of(array):
    """The array module that owns ``array``."""
    return xp_for(device_of(array))


def to_device(array, device):
    """Copy an array to ``device`` (no copy if it is already there)."""
    if device_of(array) == device:
        return array
    if device == "cpu":
        return _cupy.asnumpy(array)
    return xp_for("cuda").asarray(array)


def to_numpy(array):
    """A NumPy view or copy of any backend array."""
    return to_device(array, "cpu")


def scatter_add(target, index, values):
    """``target[index] += values`` in place, where every repeat of an index adds its own share.

    Plain ``target[index] += values`` keeps only one contribution per repeated index; ``add.at`` keeps
    them all (NumPy; CuPy >= 12 implements it with atomic adds, like ``cupyx.scatter_add``).
    Used by the backward of indexing and of embedding lookups.
    """
    xp_of(target).add.at(target, index, values)


def parse_dtype(dtype, argname="dtype"):
    """Accept a NumPy dtype, a dtype-like name ("float32") or a Python type; return np.dtype."""
    try:
        return np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{argname} must be a NumPy dtype or its name (e.g. 'float32'), got {dtype!r}") from exc


def parse_float_dtype(dtype, argname="dtype"):
    """parse_dtype, for the dtypes minilora computes in: float32 or float64 (TypeError otherwise)."""
    dtype = parse_dtype(dtype, argname)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{argname} must be float32 or float64, got {dtype}")
    return dtype
