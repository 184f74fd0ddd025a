"""Freed arrays kept for reuse: no fresh pages from the kernel for every activation of every step.

A training step allocates and frees the same activations every step: for the 4-layer, 256-wide
GPT of benchmarks/bench_train.py, arrays of 1 to 8 MB. glibc's malloc gives an allocation above its
mmap threshold (128 KiB to start with) pages of its own and hands them back to the kernel when it is
freed; one below the threshold comes from the heap, whose free top is also handed back once it
exceeds the trim threshold. Pages handed back must be zeroed by the kernel before the next array can
use them: that zeroing (clear_page_erms in `perf`) and the page faults around it took a tenth of
such a step on a 2-core VM, and raising the two thresholds made the step 1.2x faster (230 -> 190
ms). PyTorch keeps freed memory for the same reason.

So, when the compiled ops load (backend.py), minilora raises them with mallopt on Linux (glibc):
arrays up to MMAP_THRESHOLD come from the heap, and the heap gives memory back to the system only
when more than TRIM_THRESHOLD of it is free at its top. The cost is a process that keeps what its
largest step needed. It is skipped where the user chose (MALLOC_MMAP_THRESHOLD_ or
MALLOC_TRIM_THRESHOLD_ set, glibc's own variables) or MINILORA_MALLOC=default asks for glibc's
defaults, and where there is no glibc mallopt (macOS, Windows, musl).
"""

import ctypes
import os
import sys

MMAP_THRESHOLD = 64 * 2**20
TRIM_THRESHOLD = 256 * 2**20

# The parameter numbers of mallopt, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_status = None


def reuse_freed_memory():
    """Raise malloc's thresholds (the module docstring says why), once; return one line saying what
    was done, for `minilora info`."""
    global _status
    if _status is None:
        _status = _set_thresholds()
    return _status


def _set_thresholds():
    if os.environ.get("MINILORA_MALLOC") == "default":
        return "glibc's defaults (MINILORA_MALLOC=default)"
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return "as set by MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_"
    if not sys.platform.startswith("linux"):
        return f"the system's allocator as it is ({sys.platform})"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "the system's allocator as it is (no glibc mallopt)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "the system's allocator as it is (mallopt refused the thresholds)"
    return (f"freed arrays up to {MMAP_THRESHOLD >> 20} MiB reused, up to {TRIM_THRESHOLD >> 20} MiB "
            "kept (glibc mallopt; MINILORA_MALLOC=default for glibc's defaults)")
