"""Which backend runs the fused LoRA op, and the public entry points that go to it.

Where it sits: F.lora_linear (minilora/ops/lora_linear.py) and the benchmarks call
`lora_forward` / `lora_backward` here. They check the arrays (checks.py), flatten leading batch
dims, pick a backend and call its `forward` / `backward` with 2-D C-contiguous arrays:

    "numpy"  reference.py       the matrix products in NumPy: the ground truth
    "cpp"    cpp.py             the C++ fused op in minilora._C (NumPy arrays)
    "cuda"   cuda.py            the CUDA kernels in minilora._C (CuPy arrays)
    "cupy"   cupy_baseline.py   the matrix products in CuPy (cuBLAS): the GPU baseline

The backend is, in order of precedence: the `backend=` argument; the innermost
`use_backend(name)` block; the environment variable MINILORA_BACKEND; otherwise the fastest one
for the arrays' device and size: for NumPy arrays "cpp" when minilora._C is built and the layer
is large enough that the C++ op was measured at least as fast as the reference (`cpp_pays_off`
below), else "numpy"; for CuPy arrays "cuda" when the CUDA kernels can run here (else "cupy":
minilora._C built without CUDA, or with it but no usable driver or GPU; `minilora info` says which).

W may also be an NF4Tensor (minilora.quant, QLoRA's 4-bit base): "numpy" dequantizes it for the
call, "cpp" and "cuda" (its "nf4" rung) dequantize tiles as they load them; nf4.py says which is
the default and why.
"""

import contextlib
import os

from minilora.backend import cuda_status, extension_status, xp_for
from minilora.kernels import checks, cpp, cuda, cupy_baseline, nf4, reference
from minilora.quant.nf4 import NF4Tensor

BACKENDS = ("numpy", "cpp", "cuda", "cupy")
DEVICE_OF_BACKEND = {"numpy": "cpu", "cpp": "cpu", "cuda": "cuda", "cupy": "cuda"}
_ARRAYS = {"cpu": "NumPy arrays", "cuda": "CuPy arrays"}

_chosen = []  # the names given to the use_backend blocks we are inside, innermost last

# Where the C++ op pays off on NumPy arrays, from `python benchmarks/bench_cpu_op.py --rule`
# (forward + backward, alternated runs, one and two threads; tables in benchmarks/results/). The
# C++ op packs W into its own layout on every call and reuses each packed value once per row of x,
# so with few rows (M) the packing is not paid back, and with few features (K or N) its tiles are
# mostly padding; there NumPy's BLAS calls win. It was at least as fast as NumPy at every measured
# shape with M >= CPP_MIN_ROWS, M >= K and M >= N (a wide W needs as many rows to pay back its
# packing: 512 × 1024 × 1024 is a tie, 0.97-1.05, 256 × 1024 × 1024 still 1.00-1.16), K and
# N >= CPP_MIN_FEATURES and M·K·N >= CPP_MIN_WORK (at 256 rows of 128 or 256 features: a tie,
# 0.87-1.03).
CPP_MIN_ROWS = 256
CPP_MIN_FEATURES = 32
CPP_MIN_WORK = 2 ** 21


def cpp_pays_off(M, K, N):
    """Whether the C++ op was measured at least as fast as the NumPy reference for a layer of
    M rows, K input and N output features (the sizes rule above)."""
    return (M >= max(CPP_MIN_ROWS, K, N) and min(K, N) >= CPP_MIN_FEATURES
            and M * K * N >= CPP_MIN_WORK)


# ---- which backends work here ------------------------------------------------------------------
def backend_status(name):
    """``(usable, reason)``: can backend `name` run here, and if not, exactly why (one line)."""
    _check_name(name, "backend")
    if name == "numpy":
        return True, "NumPy reference (always available)"
    if name == "cpp":
        return cpp.status()
    if name == "cupy":
        usable, reason = cuda_status()
        return usable, (f"CuPy matrix products (cuBLAS); {reason}" if usable else reason)
    return cuda.status()


def available_backends():
    """The names of the backends that can run here, e.g. ("numpy", "cpp")."""
    return tuple(name for name in BACKENDS if backend_status(name)[0])


def default_backend(device, sizes=None):
    """The backend used for arrays on `device` ("cpu" or "cuda") when nothing else is chosen.

    sizes: ``(M, K, N, r)`` of the call when known. On the CPU the C++ op is then chosen only where
    `cpp_pays_off` (measured at least as fast as the NumPy reference); without sizes, the answer is
    the backend of large layers."""
    ext, _ = extension_status()
    if device == "cpu":
        if ext is None or (sizes is not None and not cpp_pays_off(*sizes[:3])):
            return "numpy"
        return "cpp"
    return "cuda" if cuda.status()[0] else "cupy"


@contextlib.contextmanager
def use_backend(name):
    """Run the fused LoRA op on backend `name` inside the block (tutorials, tests, benchmarks)::

        with minilora.kernels.use_backend("numpy"):
            loss = model(idx, targets)[1]

    `name` None chooses nothing: the block runs as the code around it would (as backend=None does),
    so a caller can pass an optional choice straight through.
    """
    if name is None:
        yield
        return
    _check_name(name, "use_backend(name)")
    _chosen.append(name)
    try:
        yield
    finally:
        _chosen.pop()


def chosen_backend():
    """The backend chosen by hand, unchecked: the innermost `use_backend` block's, else
    MINILORA_BACKEND's, else None (the default applies). The compiled ops around the fused one
    read it to leave NumPy to NumPy when "numpy" is chosen (kernels/compiled.py)."""
    if _chosen:
        return _chosen[-1]
    return os.environ.get("MINILORA_BACKEND") or None


def resolve_backend(name, device, sizes=None, default=default_backend):
    """The backend to run for arrays on `device` (of sizes ``(M, K, N, r)`` when given): `name` if
    given, else the one chosen as the module docstring says (`default(device, sizes)` when nothing
    chooses). Raises a clear error if it is unknown, unusable here, or for the other device."""
    if name is not None:
        source = "backend="
        _check_name(name, "backend")
    elif _chosen:
        name, source = _chosen[-1], "use_backend()"
    elif os.environ.get("MINILORA_BACKEND"):
        name, source = os.environ["MINILORA_BACKEND"], "MINILORA_BACKEND"
        _check_name(name, "the environment variable MINILORA_BACKEND")
    else:
        return default(device, sizes)
    if DEVICE_OF_BACKEND[name] != device:
        raise ValueError(f"backend {name!r} (from {source}) works on {_ARRAYS[DEVICE_OF_BACKEND[name]]}, "
                         f"but the arrays are {_ARRAYS[device]}")
    usable, reason = backend_status(name)
    if not usable:
        raise RuntimeError(f"backend {name!r} (from {source}) is not available here: {reason}")
    return name


def _check_name(name, what):
    if name not in BACKENDS:
        raise ValueError(f"{what} must be one of {BACKENDS}, got {name!r}")


def _check_variant(name, variant, quantized=False):
    """`variant` picks a rung of the CUDA kernel ladder, so it means something only for "cuda";
    an NF4 W (`quantized`) has one rung, "nf4"."""
    if quantized:
        return _check_nf4_variant(name, variant)
    if name != "cuda":
        if variant is not None:
            raise ValueError(f"variant= applies only to backend 'cuda', got variant={variant!r} with "
                             f"backend {name!r}")
        return None
    if variant is None:
        return cuda.DEFAULT_VARIANT
    if variant not in cuda.VARIANTS:
        raise ValueError(f"variant must be one of {cuda.VARIANTS}, got {variant!r}")
    return variant


# ---- the entry points --------------------------------------------------------------------------
def lora_forward(x, W, A, B, scaling, bias=None, backend=None, variant=None):
    """The fused LoRA forward: ``u = x·Aᵀ`` and ``y = x·Wᵀ + scaling·u·Bᵀ (+ bias)``.

    x (..., K), W (N, K), A (r, K), B (N, r), bias (N,) or None: NumPy or CuPy arrays, all of one
    float dtype (float32 or float64) and on one device; scaling a real number (alpha / r).
    W may be an NF4Tensor (minilora.quant) instead, on "numpy", "cpp" or "cuda" (variant "nf4").
    backend: "numpy", "cpp", "cuda", "cupy" or None (see the module docstring); variant: only for
    "cuda", a rung of minilora.kernels.cuda.VARIANTS ("fused" by default).
    Returns ``(y, u)``: y (..., N) and u = x·Aᵀ (..., r), which `lora_backward` needs.
    Arrays that are not C-contiguous (a transposed view, a slice) are copied once; others are not.
    """
    quantized = isinstance(W, NF4Tensor)
    named = {"x": x, "W": W, "A": A, "B": B} | ({} if bias is None else {"bias": bias})
    if quantized:  # not an array: nf4.check_weight checks it
        del named["W"]
    dtype, device = checks.check_arrays(named)
    if quantized:
        nf4.check_weight(W, device)
    M, K, N, r = checks.lora_sizes(x, W, A, B, bias)
    scaling = checks.check_scaling(scaling, dtype)
    name = resolve_backend(backend, device, (M, K, N, r), nf4.default_backend if quantized else default_backend)
    variant = _check_variant(name, variant, quantized)

    x2, A, B, bias = _contiguous(device, x.reshape(M, K), A, B, bias)
    W = W if quantized else _contiguous(device, W)[0]
    forward = _FORWARD_NF4 if quantized else _FORWARD
    if M == 0:  # an empty batch: nothing to launch; the reference gives the empty (..., N) and (..., r)
        y, u = forward["numpy"](x2, W, A, B, scaling, bias)
    elif name == "cuda":
        y, u = cuda.forward(x2, W, A, B, scaling, bias, variant)
    else:
        y, u = forward[name](x2, W, A, B, scaling, bias)
    lead = tuple(x.shape[:-1])
    return y.reshape(lead + (N,)), u.reshape(lead + (r,))


def lora_backward(dy, x, W, A, B, u, scaling, backend=None, variant=None):
    """The fused LoRA backward, W frozen: with ``v = dy·B``,
    ``dx = dy·W + scaling·v·A``, ``dA = scaling·vᵀ·x``, ``dB = scaling·dyᵀ·u``.

    dy (..., N) the gradient of the loss with respect to y; x (..., K), W (N, K), A (r, K),
    B (N, r) as in the forward; u (..., r) as it returned. Same rules for dtypes, devices,
    backend and variant as `lora_forward` (W may be an NF4Tensor).
    Returns ``(dx, dA, dB)``: dx (..., K), dA (r, K), dB (N, r).
    """
    quantized = isinstance(W, NF4Tensor)
    named = {"dy": dy, "x": x, "W": W, "A": A, "B": B, "u": u}
    if quantized:
        del named["W"]
    dtype, device = checks.check_arrays(named)
    if quantized:
        nf4.check_weight(W, device)
    M, K, N, r = checks.lora_sizes(x, W, A, B)
    checks.check_backward_shapes(dy, x, u, N, r)
    scaling = checks.check_scaling(scaling, dtype)
    name = resolve_backend(backend, device, (M, K, N, r), nf4.default_backend if quantized else default_backend)
    variant = _check_variant(name, variant, quantized)

    dy2, x2, A, B, u2 = _contiguous(device, dy.reshape(M, N), x.reshape(M, K), A, B, u.reshape(M, r))
    W = W if quantized else _contiguous(device, W)[0]
    backward = _BACKWARD_NF4 if quantized else _BACKWARD
    if M == 0:  # an empty batch: dx is empty and dA, dB are sums over no rows, zeros
        dx, dA, dB = backward["numpy"](dy2, x2, W, A, B, u2, scaling)
    elif name == "cuda":
        dx, dA, dB = cuda.backward(dy2, x2, W, A, B, u2, scaling, variant)
    else:
        dx, dA, dB = backward[name](dy2, x2, W, A, B, u2, scaling)
    return dx.reshape(x.shape), dA, dB


def _check_nf4_variant(name, variant):
    if name != "cuda":
        return _check_variant(name, variant)
    if variant not in (None, nf4.VARIANT):
        raise ValueError(f"an NF4 weight runs on the CUDA rung {nf4.VARIANT!r} only, got variant={variant!r}")
    return nf4.VARIANT


def _contiguous(device, *arrays):
    """C-contiguous versions (copies only of the arrays that are not); None stays None."""
    xp = xp_for(device)
    return tuple(None if a is None else xp.ascontiguousarray(a) for a in arrays)


_FORWARD = {"numpy": reference.lora_forward, "cpp": cpp.forward, "cupy": cupy_baseline.forward}
_BACKWARD = {"numpy": reference.lora_backward, "cpp": cpp.backward, "cupy": cupy_baseline.backward}
# With W an NF4Tensor: cpp.py takes either kind of W; "cuda" goes through cuda.forward / backward.
_FORWARD_NF4 = {"numpy": nf4.reference_forward, "cpp": cpp.forward, "cupy": nf4.reference_forward}
_BACKWARD_NF4 = {"numpy": nf4.reference_backward, "cpp": cpp.backward, "cupy": nf4.reference_backward}
