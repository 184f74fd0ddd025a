"""The CUDA kernel ladder run on the CPU: the kernels of csrc/cuda/ compiled by g++ against a stand-in
for the CUDA runtime (csrc/emulation/, whose README says what this catches and what it cannot).

Every CUDA thread becomes a fiber (or, for ThreadSanitizer, an OS thread), every block runs in turn,
and `__syncthreads()` is a real barrier, so a kernel's indexing, bounds, barriers and split sums are
checked on a machine without a GPU, with the host code of csrc/cuda/lora_layer.cu unchanged:

    from minilora.kernels import emulated
    emulator = emulated.load()            # compiles once into build/emulation/, cached by content
    y, u = emulator.forward(x, W, A, B, scaling, bias, variant="tiled")
    dx, dA, dB = emulator.backward(dy, x, W, A, B, u, scaling, variant="tiled", shuffle=7)

`emulator.mma(...)` and `emulator.round(...)` run one tensor-core instruction of csrc/cuda/mma.cuh
(mma.sync as a warp collective, the TF32 / bf16 conversions) on values given from Python;
`emulator.tma_box(...)` and `emulator.wgmma(...)` the sm_90 TMA copy and wgmma of hopper.cuh.

Arrays are NumPy arrays (float32 or float64; the tensor-core rungs "tf32x3", "bf16" and "wgmma" float32). Every output and the workspace start as NaN, with as
many NaN guard elements on each side of every array as it has: an element a kernel forgets to write
stays NaN, a read past an array's end brings NaN in, and a write past it (or into an input) raises
EmulationError. (A write further off than that lands in other memory and may crash the process, as
it would fault on a GPU: the ASan build below names it.)
`shuffle=None` runs threads and blocks in index order; an int shuffles them with that seed.

It needs a source checkout (csrc/ next to the package) and g++ (or $CXX). Sanitizer runs, not part
of the tests (each a few minutes):

    python -m minilora.kernels.emulated --sanitize address   # ASan + UBSan over the fiber build
    python -m minilora.kernels.emulated --sanitize thread    # TSan, one OS thread per CUDA thread
"""

import argparse
import ctypes
import functools
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from minilora.kernels import accuracy, checks, reference
from minilora.kernels.bf16 import round_to_bfloat16
# The rungs of the ladder, the same on the emulator.
from minilora.kernels.cuda import FLOAT32_ONLY, VARIANTS, check_variant_dtype, operands_of
REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "csrc"
BUILD = Path(os.environ.get("MINILORA_EMULATION_BUILD") or REPO / "build" / "emulation")

# Per build: compiler flags, and the sanitizer runtime that must be loaded before the library.
SANITIZERS = {
    None: (["-O2"], None),
    "address": (["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                 "-fno-sanitize-recover=all", "-DMINILORA_EMULATION_STACK_KIB=256"], "libasan.so"),
    "thread": (["-O1", "-g", "-fsanitize=thread", "-DMINILORA_EMULATION_THREADS=1"], "libtsan.so"),
}
COMMON_FLAGS = ["-std=c++17", "-fPIC", "-fvisibility=hidden", "-Wno-unknown-pragmas"]
# Poisoned elements on each side of every array: as many as the array has (at least 64), so that
# an index off by a whole row or column still lands in them, not in some other Python object.
MIN_GUARD = 64


class EmulationError(RuntimeError):
    """A kernel failed on the emulator, or wrote where it must not."""


class EmulatorUnavailable(RuntimeError):
    """No source checkout or no C++ compiler here."""


# ---- building ---------------------------------------------------------------------------------------
def compiler():
    """The C++ compiler as a command (a list): $CXX, else g++ on PATH. EmulatorUnavailable when
    there is none."""
    cxx = shlex.split(os.environ.get("CXX", "")) or ([shutil.which("g++")] if shutil.which("g++") else [])
    if not cxx:
        raise EmulatorUnavailable("the CUDA emulator needs a C++ compiler: install g++ or set $CXX")
    if not (CSRC / "cuda").is_dir():
        raise EmulatorUnavailable(f"the CUDA emulator compiles the kernel sources, but {CSRC / 'cuda'} "
                                  "is missing (it needs a source checkout of minilora)")
    return cxx


@functools.lru_cache(maxsize=None)
def _compiler_version(cxx):
    """Part of every cache key, so that a new compiler rebuilds everything."""
    return subprocess.run([*cxx, "--version"], capture_output=True, text=True, check=False).stdout


def kernel_sources():
    """{name: text} of the files the emulator is built from: csrc/cuda/*.cu (every rung, the host
    code of the layer) and csrc/emulation/*.cpp."""
    files = sorted((CSRC / "cuda").glob("*.cu")) + sorted((CSRC / "emulation").glob("*.cpp"))
    return {path.name: path.read_text() for path in files}


def kernel_headers():
    """{name: text} of the headers those files include: csrc/cuda/*.cuh and csrc/emulation/*.h."""
    files = sorted((CSRC / "cuda").glob("*.cuh")) + sorted((CSRC / "emulation").glob("*.h"))
    return {path.name: path.read_text() for path in files}


def mutant(name, old, new):
    """{name: text}: csrc/cuda/<name> (a .cu file or a .cuh header) with the one occurrence of `old`
    replaced by `new`, for `load(replace=...)`. ValueError when `old` does not occur exactly once."""
    text = (CSRC / "cuda" / name).read_text()
    if text.count(old) != 1:
        raise ValueError(f"{name} contains {old!r} {text.count(old)} times, expected exactly once")
    return {name: text.replace(old, new)}


_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.MULTILINE)


def _included(text, headers):
    """The names of `headers` that `text` includes, directly or through another of them."""
    found, todo = set(), _INCLUDE.findall(text)
    while todo:
        name = todo.pop()
        if name in headers and name not in found:
            found.add(name)
            todo += _INCLUDE.findall(headers[name])
    return sorted(found)


def _digest(*parts):
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def build(sanitize=None, replace=None, jobs=None):
    """Compile the emulator (each object cached by the hash of its flags, its source and the headers
    it includes) and return the path of the shared library. `replace` maps a file name of
    kernel_sources() or kernel_headers() to the text to compile instead (a mutant); the objects it
    does not reach are reused."""
    cxx = compiler()
    flags = COMMON_FLAGS + SANITIZERS[sanitize][0]
    version = _compiler_version(tuple(cxx))
    sources, headers = kernel_sources(), kernel_headers()
    for name, text in (replace or {}).items():
        if name not in sources and name not in headers:
            raise ValueError(f"replace names {name!r}, expected one of {sorted(sources) + sorted(headers)}")
        (sources if name in sources else headers)[name] = text
    objects, jobs_to_run = [], []
    for name, text in sources.items():
        included = _included(text, headers)
        key = _digest(version, *flags, name, text, *(part for h in included for part in (h, headers[h])))
        obj = BUILD / "obj" / f"{Path(name).stem}-{key}.o"
        objects.append(obj)
        if obj.exists():
            continue
        source = CSRC / ("emulation" if name.endswith(".cpp") else "cuda") / name
        if any(n in (replace or {}) for n in (name, *included)):
            # A mutant: compiled from a copy beside copies of the headers it includes, which its
            # includes then find before the originals.
            source = BUILD / "src" / key / name
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text(text)
            for h in included:
                (source.parent / h).write_text(headers[h])
        jobs_to_run.append((source, obj))
    _compile_all(cxx, flags, jobs_to_run, jobs or os.cpu_count() or 2)
    library = BUILD / f"libminilora_emulated-{_digest(version, *flags, *(o.name for o in objects))}.so"
    if not library.exists():
        _run([*cxx, "-shared", *flags, *map(str, objects), "-o", "{out}", "-lpthread"], library)
    return library


def _compile_all(cxx, flags, jobs_to_run, jobs):
    running = []
    for source, obj in jobs_to_run:
        # The source's own folder first: a mutant's copied headers, found even by #include <...>.
        include = ["-I", str(source.parent), "-I", str(CSRC / "emulation"), "-I", str(CSRC / "cuda")]
        command = [*cxx, *flags, *include, "-x", "c++", "-c", str(source), "-o", "{out}"]
        running.append(_start(command, obj))
        if len(running) >= jobs:
            _finish(*running.pop(0))
    for job in running:
        _finish(*job)


def _start(command, out):
    """Start `command` writing a temporary file that becomes `out` once it succeeds (so a build that
    is interrupted, or runs twice at once, never leaves a broken file under the final name)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=out.suffix)
    os.close(fd)
    command = [tmp if part == "{out}" else part for part in command]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, command, Path(tmp), out


def _finish(process, command, tmp, out):
    output = process.communicate()[0]
    if process.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise EmulationError(f"building the CUDA emulator failed:\n$ {' '.join(command)}\n{output[-6000:]}")
    os.replace(tmp, out)


def _run(command, out):
    _finish(*_start(command, out))


# ---- running ---------------------------------------------------------------------------------------
_loaded = {}


def load(sanitize=None, replace=None):
    """The emulator built from this checkout's kernel sources (see `build`), loaded once per build."""
    library = build(sanitize, replace)
    if library not in _loaded:
        runtime = SANITIZERS[sanitize][1]
        if runtime and runtime not in os.environ.get("LD_PRELOAD", ""):
            raise EmulatorUnavailable(f"a --sanitize {sanitize} build needs {runtime} loaded first: run "
                                      f"python -m minilora.kernels.emulated --sanitize {sanitize}")
        _loaded[library] = Emulator(library)
    return _loaded[library]


class _Guarded:
    """An array with poisoned guard elements on each side, all bytes 0xff (a NaN in float32 and
    float64); `values` fill the middle, else it is poisoned too."""

    def __init__(self, shape, dtype, values=None):
        count = int(np.prod(shape, dtype=np.int64))
        self.guard = max(MIN_GUARD, count)
        self.buffer = np.empty(count + 2 * self.guard, dtype=dtype)
        self.buffer.view(np.uint8)[:] = 0xFF
        self.array = self.buffer[self.guard:self.guard + count].reshape(shape)
        if values is not None:
            self.array[...] = values
        self.written_to = self.buffer.copy() if values is not None else None  # inputs: compare all
        self.pointer = self.buffer.ctypes.data + self.guard * self.buffer.itemsize

    def damage(self, name):
        """What the kernels did to this array that they must not: None, or one line."""
        raw = self.buffer.view(np.uint8)
        width = self.guard * self.buffer.itemsize
        if not (raw[:width] == 0xFF).all() or not (raw[-width:] == 0xFF).all():
            return f"the kernels wrote outside {name} (into the {self.guard} elements around it)"
        if self.written_to is not None and not np.array_equal(raw, self.written_to.view(np.uint8)):
            return f"the kernels wrote into the input {name}"
        return None


class Emulator:
    """The entry points of one build of the emulator (csrc/emulation/runner.cpp)."""

    def __init__(self, library):
        self.path = Path(library)
        lib = ctypes.CDLL(str(library))
        p, i64, msg = ctypes.c_void_p, ctypes.c_int64, (ctypes.c_char_p, ctypes.c_size_t)
        lib.minilora_emulated_workspace.argtypes = [ctypes.c_char_p, ctypes.c_int, i64, i64, i64, i64,
                                                    ctypes.c_int, ctypes.POINTER(i64), *msg]
        lib.minilora_emulated_forward.argtypes = [ctypes.c_char_p, ctypes.c_int, *[p] * 8, i64,
                                                  i64, i64, i64, i64, ctypes.c_double, *msg]
        lib.minilora_emulated_backward.argtypes = [ctypes.c_char_p, ctypes.c_int, *[p] * 10, i64,
                                                   i64, i64, i64, i64, ctypes.c_double, *msg]
        lib.minilora_emulation_schedule.argtypes = [ctypes.c_int, ctypes.c_uint64]
        lib.minilora_emulation_trace.argtypes = [p, i64, i64, p, p]
        lib.minilora_emulation_launches.restype = i64
        lib.minilora_emulated_warp_tiles.argtypes = [ctypes.c_int, *msg]
        lib.minilora_emulated_warp_tiles_for.argtypes = [ctypes.c_int, ctypes.c_int,
                                                         ctypes.POINTER(ctypes.c_int), *msg]
        lib.minilora_emulated_mma.argtypes = [ctypes.c_int, ctypes.c_int, p, p, p, p, ctypes.c_int,
                                              ctypes.c_int, *msg]
        lib.minilora_emulated_round.argtypes = [ctypes.c_int, p, p, i64]
        lib.minilora_emulated_tma_box.argtypes = [p, ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64,
                                                  ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32,
                                                  ctypes.c_int, ctypes.c_int, ctypes.c_int, p,
                                                  ctypes.POINTER(ctypes.c_int)]
        lib.minilora_emulated_wgmma.argtypes = [p, ctypes.c_size_t, ctypes.c_uint64, ctypes.c_uint64,
                                                ctypes.c_int, p, *msg]
        self._lib = lib
        # The scheduler's state (order, trace, last error) is global, and ctypes lets other Python
        # threads run during a call: one call, with its settings, at a time.
        self._one_at_a_time = threading.RLock()
        self.os_threads = bool(lib.minilora_emulation_os_threads())

    def launches(self):
        """Kernels launched so far by this build (a refused launch does not count)."""
        return int(self._lib.minilora_emulation_launches())

    def warp_tiles(self):
        """The names of the warp rung's tile configurations, largest block tile first."""
        name = ctypes.create_string_buffer(64)
        count = self._lib.minilora_emulated_warp_tiles(-1, name, len(name))
        names = []
        for index in range(count):
            self._lib.minilora_emulated_warp_tiles(index, name, len(name))
            names.append(name.value.decode())
        return tuple(names)

    def warp_tiles_for(self, rows, cols):
        """The configuration the warp rung runs a rows × cols product with: $MINILORA_WARP_TILES
        when set, else the choice per shape (csrc/cuda/lora_warp.cu)."""
        index = ctypes.c_int()
        self._call(self._lib.minilora_emulated_warp_tiles_for, rows, cols, ctypes.byref(index))
        return self.warp_tiles()[index.value]

    def mma(self, instruction, a, b, c, threads=32, absent=None, absent_at_barrier=False):
        """One warp-wide mma.sync of csrc/cuda/mma.cuh: instruction "tf32" (m16n8k8) or "bf16"
        (m16n8k16), every lane's registers given: a (32, 4) and b (32, 2) uint32, c (32, 4) float32.
        Returns d (32, 4) float32, lane by lane. `threads` < 32 leaves the warp incomplete; lane
        `absent` returns (or, absent_at_barrier, waits at __syncthreads()) instead: EmulationError."""
        if instruction not in ("tf32", "bf16"):
            raise ValueError(f"instruction must be 'tf32' or 'bf16', got {instruction!r}")
        a, b = (np.ascontiguousarray(v, dtype=np.uint32) for v in (a, b))
        c = np.ascontiguousarray(c, dtype=np.float32)
        for name, v, shape in (("a", a, (32, 4)), ("b", b, (32, 2)), ("c", c, (32, 4))):
            checks.expect_shape(name, v, shape)
        d = np.full((32, 4), np.nan, dtype=np.float32)
        with self._one_at_a_time:
            self._schedule(None)
            self._call(self._lib.minilora_emulated_mma, int(instruction == "bf16"), threads,
                       a.ctypes.data, b.ctypes.data, c.ctypes.data, d.ctypes.data,
                       -1 if absent is None else absent, int(absent_at_barrier))
        return d

    def round(self, to, values):
        """The bits (uint32) of mma.cuh's to_tf32 (to="tf32") or to_bf16 (to="bf16") of each float32
        value."""
        if to not in ("tf32", "bf16"):
            raise ValueError(f"to must be 'tf32' or 'bf16', got {to!r}")
        values = np.ascontiguousarray(values, dtype=np.float32)
        out = np.empty(values.shape, dtype=np.uint32)
        self._lib.minilora_emulated_round(int(to == "bf16"), values.ctypes.data, out.ctypes.data,
                                          values.size)
        return out

    def tma_box(self, tensor, box, x, y, swizzle_128=True, misalign=0):
        """One emulated TMA copy (cp.async.bulk.tensor.2d, hopper.h) of the box `box` = (columns,
        rows) at column x, row y of `tensor`, a 2-D float32 or uint16 (bf16 bits) array whose rows
        may be apart (a slice of a wider array; its columns contiguous). Returns the shared memory the
        box lands in: a uint8 array of columns · rows · itemsize bytes, starting on a 1024-byte
        boundary plus `misalign` bytes. ValueError with the CUresult when cuTensorMapEncodeTiled
        refuses the map; EmulationError when the destination is not 128-byte aligned."""
        if tensor.ndim != 2 or tensor.dtype not in (np.float32, np.uint16) or \
                tensor.strides[1] != tensor.itemsize:
            raise ValueError("tensor must be a 2-D float32 or uint16 array with contiguous columns, "
                             f"got {tensor.dtype} of shape {tensor.shape}, strides {tensor.strides}")
        size = int(box[0]) * int(box[1]) * tensor.itemsize
        shared = _aligned_bytes(size + misalign)[misalign:]
        shared[:] = 0xFF  # NaN poison, as the emulator's shared memory: a byte the copy skips shows
        result = ctypes.c_int()
        code = self._lib.minilora_emulated_tma_box(
            tensor.ctypes.data, tensor.itemsize, tensor.shape[1], tensor.shape[0], tensor.strides[0],
            int(box[0]), int(box[1]), int(swizzle_128), int(x), int(y), shared.ctypes.data,
            ctypes.byref(result))
        if code == 1:
            raise ValueError(f"cuTensorMapEncodeTiled refused the map: CUresult {result.value}")
        if code == 2:
            raise EmulationError("cp.async.bulk.tensor: the shared-memory destination is not "
                                 "128-byte aligned")
        return shared

    def wgmma(self, window, descriptor_a, descriptor_b, n, c):
        """One emulated wgmma.mma_async m64nNk16 with bf16 operands (hopper.h): `window` is shared
        memory (a uint8 array; the descriptors' addresses are offsets into it, 1024-byte aligned as
        shared memory is), c the warpgroup's fp32 accumulators (128, n / 2), thread by thread.
        Returns d = c + A·B in the same layout; EmulationError for a descriptor the emulator refuses."""
        window = np.ascontiguousarray(window, dtype=np.uint8)
        aligned = _aligned_bytes(window.size)
        aligned[:] = window
        d = np.array(c, dtype=np.float32, order="C")
        checks.expect_shape("c", d, (128, n // 2))
        self._call(self._lib.minilora_emulated_wgmma, aligned.ctypes.data, aligned.size,
                   int(descriptor_a), int(descriptor_b), int(n), d.ctypes.data)
        return d

    def workspace_size(self, variant, dtype, M, N, K, r, backward):
        """Elements of scratch the forward (backward=False) or backward needs, from the kernels' plan."""
        size = ctypes.c_int64()
        self._call(self._lib.minilora_emulated_workspace, variant.encode(), _is_float64(dtype),
                   M, N, K, r, int(backward), ctypes.byref(size))
        return size.value

    def forward(self, x, W, A, B, scaling, bias=None, variant="fused", shuffle=None):
        """``(y, u)`` of the LoRA forward (shapes as minilora.kernels.lora_forward, 2-D x)."""
        return self._forward(x, W, A, B, scaling, bias, variant, shuffle)[:2]

    def forward_traced(self, x, W, A, B, scaling, bias=None, variant="fused"):
        """``(y, u, block, thread)``: the forward in index order, and for every element of y the
        linear index (x fastest) of the block and of the thread in it that wrote it last."""
        if self.os_threads:
            raise EmulatorUnavailable("the OS-thread build cannot say which thread wrote an element")
        return self._forward(x, W, A, B, scaling, bias, variant, None, trace=True)

    def backward(self, dy, x, W, A, B, u, scaling, variant="fused", shuffle=None):
        """``(dx, dA, dB)`` of the LoRA backward (shapes as minilora.kernels.lora_backward, 2-D)."""
        named = {"dy": dy, "x": x, "W": W, "A": A, "B": B, "u": u}
        dtype, M, K, N, r, scaling = _check(variant, named, scaling)
        checks.check_backward_shapes(dy, x, u, N, r)
        inputs = {name: _Guarded(a.shape, dtype, a) for name, a in named.items()}
        outputs = {name: _Guarded(shape, dtype) for name, shape in
                   (("dx", (M, K)), ("dA", (r, K)), ("dB", (N, r)))}
        size = self.workspace_size(variant, dtype, M, N, K, r, True)
        workspace = _Guarded((size,), dtype)
        with self._one_at_a_time:
            self._schedule(shuffle)
            self._call(self._lib.minilora_emulated_backward, variant.encode(), _is_float64(dtype),
                       *(g.pointer for g in inputs.values()), *(g.pointer for g in outputs.values()),
                       workspace.pointer, size, M, N, K, r, scaling)
        self._check_damage({**inputs, **outputs, "workspace": workspace})
        return tuple(g.array for g in outputs.values())

    def _forward(self, x, W, A, B, scaling, bias, variant, shuffle, trace=False):
        named = {"x": x, "W": W, "A": A, "B": B} | ({} if bias is None else {"bias": bias})
        dtype, M, K, N, r, scaling = _check(variant, named, scaling, bias)
        inputs = {name: _Guarded(a.shape, dtype, a) for name, a in named.items()}
        y, u = _Guarded((M, N), dtype), _Guarded((M, r), dtype)
        size = self.workspace_size(variant, dtype, M, N, K, r, False)
        workspace = _Guarded((size,), dtype)
        owners = np.full((2, M, N), -1, dtype=np.int32)
        with self._one_at_a_time:
            self._schedule(shuffle)
            if trace:
                self._lib.minilora_emulation_trace(y.pointer, M * N, y.buffer.itemsize,
                                                   owners[0].ctypes.data, owners[1].ctypes.data)
            try:
                self._call(self._lib.minilora_emulated_forward, variant.encode(), _is_float64(dtype),
                           *(inputs[n].pointer for n in ("x", "W", "A", "B")),
                           inputs["bias"].pointer if bias is not None else None, y.pointer, u.pointer,
                           workspace.pointer, size, M, N, K, r, scaling)
            finally:
                if trace:
                    self._lib.minilora_emulation_trace(None, 0, 0, None, None)
        self._check_damage({**inputs, "y": y, "u": u, "workspace": workspace})
        return y.array, u.array, owners[0], owners[1]

    def _schedule(self, shuffle):
        self._lib.minilora_emulation_schedule(0 if shuffle is None else 1, 0 if shuffle is None else shuffle)

    def _call(self, function, *args):
        message = ctypes.create_string_buffer(4096)
        with self._one_at_a_time:
            code = function(*args, message, len(message))
        if code == 1:
            raise ValueError(message.value.decode())
        if code != 0:
            raise EmulationError(message.value.decode())

    @staticmethod
    def _check_damage(arrays):
        problems = [p for p in (g.damage(name) for name, g in arrays.items()) if p]
        if problems:
            raise EmulationError("; ".join(problems))


def _check(variant, named, scaling, bias=None):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    dtype, _ = checks.check_arrays(named, device="cpu")
    check_variant_dtype(variant, dtype)
    checks.expect_2d("x", named["x"], "(M, K)")
    M, K, N, r = checks.lora_sizes(named["x"], named["W"], named["A"], named["B"], bias)
    return dtype, M, K, N, r, checks.check_scaling(scaling)


def _is_float64(dtype):
    return int(np.dtype(dtype) == np.float64)


def _aligned_bytes(size):
    """A uint8 array of `size` bytes that starts on a 1024-byte boundary, as shared memory tiles do."""
    raw = np.empty(size + 1024, dtype=np.uint8)
    start = -raw.ctypes.data % 1024
    return raw[start:start + size]


# ---- checking one layer -------------------------------------------------------------------------------
def random_layer(rng, M, N, K, r, dtype, bias=True, operands=None):
    """{name: float64 array} of a random LoRA layer whose values are exact in `dtype` (so the float64
    reference sees what the kernels see), and a scaling. operands="bfloat16": x, W, A, B and dy are
    bfloat16 values (float32 dtype), for the bf16 rung; the bias stays float32 (it is added in
    float32)."""
    shapes = {"x": (M, K), "W": (N, K), "A": (r, K), "B": (N, r), "dy": (M, N)}
    if bias:
        shapes["bias"] = (N,)
    arrays = {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
    if operands == "bfloat16":
        arrays.update({name: round_to_bfloat16(a) for name, a in arrays.items() if name != "bias"})
    return ({name: a.astype(np.float64) for name, a in arrays.items()},
            float(np.float32(rng.uniform(0.5, 4.0))))


def check_layer(emulator, variant, dtype, M, N, K, r, rng, seed=0, bias=True):
    """Run the forward and backward of a random layer twice, threads and blocks in index order and
    shuffled with `seed`. Returns what is wrong, one line each: an EmulationError, an output outside
    accuracy's bounds of the float64 reference, or results that differ between the two orders (the
    kernels are deterministic). [] when all is well. The bf16 rung gets bfloat16 inputs and is
    held to the bfloat16 bounds (accuracy's operands="bfloat16")."""
    operands = operands_of(variant)
    h, s = random_layer(rng, M, N, K, r, dtype, bias, operands)
    y_ref, u_ref = reference.lora_forward(h["x"], h["W"], h["A"], h["B"], s, h.get("bias"))
    u_in = u_ref.astype(dtype)  # the backward gets the reference's u, so its error is its own
    refs = reference.lora_backward(h["dy"], h["x"], h["W"], h["A"], h["B"], u_in.astype(np.float64), s)
    bounds = (accuracy.forward_bounds(h["x"], h["W"], h["A"], h["B"], s, h.get("bias"), dtype, operands) +
              accuracy.backward_bounds(h["dy"], h["x"], h["W"], h["A"], h["B"], u_in, s, dtype, operands))
    d = {name: a.astype(dtype) for name, a in h.items()}
    names = ("y", "u", "dx", "dA", "dB")
    failures, runs = [], []
    for shuffle in (None, seed):
        order = "in order" if shuffle is None else f"shuffled (seed {seed})"
        try:
            forward = emulator.forward(d["x"], d["W"], d["A"], d["B"], s, d.get("bias"), variant, shuffle)
            grads = emulator.backward(d["dy"], d["x"], d["W"], d["A"], d["B"], u_in, s, variant, shuffle)
        except EmulationError as exc:
            failures.append(f"{order}: {exc}")
            continue
        runs.append((order, forward + grads))
    if runs:
        for name, out, ref, bound in zip(names, runs[0][1], (y_ref, u_ref) + refs, bounds):
            problem = accuracy.check(name, out, ref, bound)
            if problem:
                failures.append(f"{runs[0][0]}: {problem}")
    if len(runs) == 2:
        for name, first, second in zip(names, runs[0][1], runs[1][1]):
            if not np.array_equal(first.view(np.uint8), second.view(np.uint8)):
                failures.append(f"{name} differs between {runs[0][0]} and {runs[1][0]}: "
                                f"{int((first != second).sum())} elements (a race between threads or blocks)")
    return failures


# ---- the sanitizer runs ---------------------------------------------------------------------------------
# Small awkward shapes (tile edges, r > K, split inner dimensions): every kernel and bounds check runs.
SANITIZER_SHAPES = [(1, 1, 1, 1), (5, 7, 3, 2), (17, 33, 19, 5), (65, 129, 64, 3), (8, 40, 530, 4),
                    (530, 20, 24, 3)]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run every rung of the CUDA kernel ladder on the CPU "
                                     "emulator, forward and backward, against the float64 reference.")
    parser.add_argument("--sanitize", choices=("address", "thread"),
                        help="address: ASan + UBSan over fibers; thread: TSan, one OS thread per CUDA thread")
    parser.add_argument("--variants", default=",".join(VARIANTS + ("nf4",)),
                        help="comma-separated rungs (nf4: W in NF4, minilora/kernels/emulated_nf4.py)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    runtime = SANITIZERS[args.sanitize][1]
    if runtime and runtime not in os.environ.get("LD_PRELOAD", ""):
        # The sanitizer's runtime must be loaded before Python's own libraries: start again with it.
        path = subprocess.run([*compiler(), f"-print-file-name={runtime}"], capture_output=True,
                              text=True, check=True).stdout.strip()
        # NumPy's BLAS threads synchronise in code ThreadSanitizer cannot see: one thread, no noise.
        env = dict(os.environ, LD_PRELOAD=path, ASAN_OPTIONS="detect_leaks=0",
                   TSAN_OPTIONS="halt_on_error=1 report_signal_unsafe=0", OPENBLAS_NUM_THREADS="1",
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        return subprocess.run([sys.executable, "-m", "minilora.kernels.emulated", *(argv or sys.argv[1:])],
                              env=env, check=False).returncode

    emulator = load(args.sanitize)
    print(f"emulator: {emulator.path} ({'OS threads' if emulator.os_threads else 'fibers'})")
    rng = np.random.default_rng(args.seed)
    failed = total = 0
    for variant in args.variants.split(","):
        for dtype in (np.float32,) if variant in FLOAT32_ONLY else (np.float32, np.float64):
            for shape in SANITIZER_SHAPES:
                total += 1
                if variant == "nf4":
                    from minilora.kernels import emulated_nf4  # it imports this module
                    failures = emulated_nf4.check_layer(emulator, dtype, *shape, rng, block_size=7,
                                                        seed=args.seed + 1)
                else:
                    failures = check_layer(emulator, variant, dtype, *shape, rng, seed=args.seed + 1)
                failed += bool(failures)
                print(f"{variant:>5} {np.dtype(dtype).name} M, N, K, r = {shape}: "
                      f"{'ok' if not failures else 'FAILED'}", flush=True)
                for line in failures:
                    print(f"    {line}")
    print(f"{total - failed} of {total} cases correct")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
