"""`minilora info`: what this installation can do, and for what cannot run, exactly why.

Prints the versions (minilora, Python, NumPy, CuPy), whether the compiled extension minilora._C is
built and with CUDA, and one line per backend of the fused LoRA op: "yes" with what it is, or
"no" with the reason (the extension's import error, built without CUDA, no CuPy, no driver, no
GPU), followed by the instruction set the C++ op runs (AVX-512, AVX2 or the baseline) and the
backend each kind of array gets by default, and whether the compiled ops around the fused one
(products, layer norm, softmax, GELU) run, and how freed memory is kept (minilora/memory.py).
"""

import platform
import sys

import numpy as np

import minilora
from minilora import backend, kernels, memory
from minilora.kernels import compiled, cpp


def add_arguments(parser):
    """`minilora info` takes no options."""


def run(args):
    for line in report_lines():
        print(line)
    return 0


def report_lines():
    """The report, one string per line."""
    ext, ext_reason = backend.extension_status()
    lines = [
        f"minilora   {minilora.__version__}",
        f"Python     {platform.python_version()} ({sys.executable})",
        f"NumPy      {np.__version__}",
        f"CuPy       {_cupy_version()}",
        f"extension  {'minilora._C ' + ext_reason if ext is not None else 'not built: ' + ext_reason}",
        "",
        "backends of the fused LoRA op (minilora.kernels):",
    ]
    for name in kernels.BACKENDS:
        usable, reason = kernels.backend_status(name)
        lines.append(f"  {name:<6} {'yes' if usable else 'no ':<4} {reason}")
    lines += ["", _isa_line(ext),
        f"default for NumPy arrays: {kernels.default_backend('cpu')} "
        f"(numpy unless M >= {kernels.dispatch.CPP_MIN_ROWS} rows and >= K, N; K, N >= {kernels.dispatch.CPP_MIN_FEATURES} "
        f"and M·K·N >= {kernels.dispatch.CPP_MIN_WORK:,}); "
        f"for CuPy arrays: {kernels.default_backend('cuda')} "
        "(override with MINILORA_BACKEND or minilora.kernels.use_backend)",
    ]
    lines.append(f"compiled ops around it, for NumPy arrays (minilora.kernels.compiled): {compiled.status()}")
    if ext is not None and ext.with_cuda and kernels.default_backend("cuda") != "cuda":
        lines.append(f"  (not cuda: the CUDA kernels are built but cannot run here: "
                     f"{kernels.backend_status('cuda')[1]})")
    lines.append(f"with W in NF4 (a QLoRA base): {kernels.nf4.default_backend('cpu')} for NumPy arrays (numpy "
                 f"unless K, N >= {kernels.nf4.CPP_MIN_FEATURES}); for CuPy arrays the CUDA rung "
                 f"'{kernels.nf4.VARIANT}' where the kernels run, else cupy")
    if ext is not None:
        lines.append(f"memory (minilora/memory.py): {memory.reuse_freed_memory()}")
    return lines


def _isa_line(ext):
    """Which instruction set the C++ op's code runs, and which others this CPU could run."""
    if ext is None:
        return "instruction set of the C++ op: none (minilora._C is not built)"
    usable, reason = cpp.status()
    if not usable:
        return f"instruction set of the C++ op: none ({reason})"
    return (f"instruction set of the C++ op: {cpp.isa()} (this CPU runs {', '.join(cpp.available_isas())}; "
            "force one with MINILORA_CPU_ISA=baseline|avx2|avx512)")


def _cupy_version():
    cupy = backend.xp_for("cuda")  # None when CuPy cannot be imported
    if cupy is None:
        return f"not available: {backend.cuda_status()[1]}"
    return cupy.__version__
