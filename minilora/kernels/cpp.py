"""Backend "cpp": the Python side of the C++ fused LoRA op (csrc/lora_cpu.cpp, in minilora._C).

Where it sits: `minilora.kernels.lora_forward` / `lora_backward` call `forward` / `backward` here
with 2-D NumPy arrays. This file checks them again (they are the last Python stop before raw
pointers), allocates the outputs, and calls the compiled loops, which fill every output element.
The compiled functions take the outputs as arguments, so a test can pass NaN-filled buffers
(`out=`) and see any element the loops forgot to write. Everything minilora._C would refuse is
refused here first, with a message naming the argument: call these, not minilora._C directly.

The products are compiled once per instruction set (csrc/cpu/gemm_<isa>.cpp) and the best one this
CPU runs is used, unless the innermost `use_isa(name)` block or else the environment variable
MINILORA_CPU_ISA names another: "baseline", "avx2" or "avx512". Tests use that to check every
compiled path on one machine.
"""

import contextlib
import functools
import os

import numpy as np

from minilora import backend
from minilora.kernels import checks, nf4
from minilora.quant.nf4 import NF4Tensor


def forward(x, W, A, B, scaling, bias=None, out=None):
    """``u = x·Aᵀ`` and ``y = x·Wᵀ + scaling·u·Bᵀ (+ bias)``; returns ``(y, u)``.

    x (M, K), W (N, K), A (r, K), B (N, r), bias (N,) or None: C-contiguous NumPy arrays of one
    float dtype. y (M, N), u (M, r). `out` is None or a pair (y, u) of arrays to write into.
    W may be an NF4Tensor (minilora.kernels.nf4): its panels are dequantized as they are packed.
    """
    quantized = isinstance(W, NF4Tensor)
    named = {"x": x, "W": W, "A": A, "B": B} | ({} if bias is None else {"bias": bias})
    if quantized:
        del named["W"]
    dtype, _ = checks.check_arrays(named, device="cpu")
    checks.expect_2d("x", x, "(M, K)")
    M, K, N, r = checks.lora_sizes(x, W, A, B, bias)
    checks.check_contiguous(named)
    scaling = checks.check_scaling(scaling, dtype)
    y, u = _outputs(out, {"y": (M, N), "u": (M, r)}, dtype, named)
    if quantized:
        packed, absmax, code = nf4.operands(W)
        _extension().lora_forward_nf4_cpu(x, packed, absmax, code, W.block_size, A, B, scaling, bias,
                                          y, u, isa=_isa_arg())
    else:
        _extension().lora_forward_cpu(x, W, A, B, scaling, bias, y, u, isa=_isa_arg())
    return y, u


def backward(dy, x, W, A, B, u, scaling, out=None):
    """With ``v = dy·B``: ``dx = dy·W + scaling·v·A``, ``dA = scaling·vᵀ·x``,
    ``dB = scaling·dyᵀ·u``; returns ``(dx, dA, dB)``.

    dy (M, N), x (M, K), W (N, K), A (r, K), B (N, r), u (M, r): C-contiguous NumPy arrays of one
    float dtype. dx (M, K), dA (r, K), dB (N, r). `out` is None or a triple (dx, dA, dB) to write into.
    W may be an NF4Tensor, as in `forward`.
    """
    quantized = isinstance(W, NF4Tensor)
    named = {"dy": dy, "x": x, "W": W, "A": A, "B": B, "u": u}
    if quantized:
        del named["W"]
    dtype, _ = checks.check_arrays(named, device="cpu")
    checks.expect_2d("x", x, "(M, K)")
    M, K, N, r = checks.lora_sizes(x, W, A, B)
    checks.check_backward_shapes(dy, x, u, N, r)
    checks.check_contiguous(named)
    scaling = checks.check_scaling(scaling, dtype)
    dx, dA, dB = _outputs(out, {"dx": (M, K), "dA": (r, K), "dB": (N, r)}, dtype, named)
    if quantized:
        packed, absmax, code = nf4.operands(W)
        _extension().lora_backward_nf4_cpu(dy, x, packed, absmax, code, W.block_size, A, B, u, scaling,
                                           dx, dA, dB, isa=_isa_arg())
    else:
        _extension().lora_backward_cpu(dy, x, W, A, B, u, scaling, dx, dA, dB, isa=_isa_arg())
    return dx, dA, dB


def status():
    """``(usable, reason)``: is the C++ op built, and if not, why not (one line)."""
    ext, reason = backend.extension_status()
    if ext is None:
        return False, reason
    try:
        current = isa()
    except ValueError as exc:  # MINILORA_CPU_ISA names an instruction set this CPU cannot run
        return False, str(exc)
    threads = ext.cpu_threads()
    return True, (f"C++ fused op in minilora._C, {threads} thread{'s' if threads != 1 else ''}, "
                  f"{current} code")


# ---- instruction sets --------------------------------------------------------------------------
ISAS = ("baseline", "avx2", "avx512")
_isa_chosen = []  # the names given to the use_isa blocks we are inside, innermost last


@functools.cache
def available_isas():
    """The instruction sets this CPU runs the C++ op's code for, best first, e.g. ("avx512", "avx2",
    "baseline")."""
    ext = _extension()
    return tuple(name for name in reversed(ISAS) if ext.cpu_isa_supported(name))


def isa():
    """The instruction set the C++ op runs now: the innermost `use_isa` block, else
    MINILORA_CPU_ISA, else the best this CPU runs."""
    return _isa_arg() or _extension().cpu_best_isa()


def threads():
    """Threads the C++ op's products use (OpenMP's maximum; 1 without OpenMP)."""
    return _extension().cpu_threads()


@contextlib.contextmanager
def use_isa(name):
    """Run the C++ op on the code compiled for instruction set `name` inside the block::

        with minilora.kernels.cpp.use_isa("baseline"):
            y, u = minilora.kernels.lora_forward(x, W, A, B, 2.0, backend="cpp")
    """
    _check_isa(name, "use_isa(name)")
    _isa_chosen.append(name)
    try:
        yield
    finally:
        _isa_chosen.pop()


def _check_isa(name, what):
    if name not in ISAS:
        raise ValueError(f"{what} must be one of {ISAS}, got {name!r}")
    if name not in available_isas():
        raise ValueError(f"{what} is {name!r}, but this CPU runs only {available_isas()}")


def _isa_arg():
    """The name to pass to the compiled functions ("" for the best)."""
    if _isa_chosen:
        return _isa_chosen[-1]
    name = os.environ.get("MINILORA_CPU_ISA", "")
    if name:
        _check_isa(name, "the environment variable MINILORA_CPU_ISA")
    return name


def _outputs(out, shapes, dtype, inputs):
    """Fresh arrays of `shapes` (name -> shape), or the caller's `out` once it passes the checks."""
    if out is None:
        return tuple(np.empty(shape, dtype=dtype) for shape in shapes.values())
    return checks.check_outputs(out, shapes, dtype, "cpu", inputs)


def _extension():
    ext, reason = backend.extension_status()
    if ext is None:
        raise RuntimeError(f"backend 'cpp' needs minilora's compiled extension: {reason}; "
                           "build it with: pip install -e .")
    return ext
