"""The fused LoRA op on the GPU: the Python side of the CUDA kernels in csrc/cuda/.

Where it sits: `minilora.kernels.lora_forward` / `lora_backward` with backend "cuda" call
`forward` and `backward` here with 2-D CuPy arrays. This file checks the arrays (device, dtype,
contiguity, shapes) before anything reaches the GPU, allocates the outputs and the kernels' scratch
with CuPy, and queues the kernels on CuPy's current stream through the compiled module
`minilora._C` (csrc/cuda/register_cuda.h). Nothing here waits for the GPU: the results are
ordinary CuPy arrays, ordered on the stream like the result of any CuPy operation.

The kernels come as a ladder a student can read in order (csrc/cuda/lora_naive.cu, lora_tiled.cu,
lora_fused.cu, lora_mma.cu); `variant` picks the rung, "fused" by default:

    "naive"  one thread per output element
    "tiled"  16 × 16 shared-memory tiles
    "fused"  register-blocked tiles, the LoRA term in the same accumulator as x·Wᵀ
    "vectorized"  the fused kernel reading device memory 16 bytes per load where it can
    "async"       the fused blocking with tiles copied to shared memory by cp.async (sm_80+;
                  ordinary loads on sm_75), one barrier per step
    "warp"        the async kernel with warp tiles, its tile sizes chosen per product from
                  `warp_tiles()` or pinned by the environment variable MINILORA_WARP_TILES
    "tf32x3"      tensor cores (mma.sync): each float32 operand split into a TF32 high part and a
                  TF32 residual, three products per product, float32 accuracy
    "bf16"        tensor cores on operands rounded to bfloat16 (to nearest even) as the kernel
                  reads them, float32 accumulators and outputs: bf16 accuracy, not float32's
    "wgmma"       the bf16 rung's arithmetic on Hopper's own path for the wide products y and dx:
                  the operands staged as bf16, copied by TMA, multiplied by wgmma (sm_90a only)

"vectorized", "async", "warp", "tf32x3", "bf16" and "wgmma" are not yet measured on a GPU: checked
on the CPU emulator only. The tensor-core rungs take float32 arrays only and need compute
capability 8.0 or newer (mma.sync on TF32 / bf16; a T4 is 7.5), "wgmma" 9.0 exactly (an H100 or
H200): elsewhere the call raises ValueError with the reason. The bf16 rungs keep float32 arrays
because NumPy and CuPy have no bfloat16 dtype: the inputs are rounded in the kernel, so they move
the bytes of a float32 layer (minilora/kernels/bf16.py).

There is one more rung, for W stored in NF4 (an NF4Tensor, QLoRA's 4-bit base), which `forward` and
`backward` take with variant "nf4" (csrc/cuda/lora_nf4.cu, also checked on the emulator only):

    "nf4"    the tiled rung whose tile loader dequantizes W into shared memory

The NF4Tensor must be on the GPU (W.to("cuda"), or model.to("cuda") for a model's NF4 bases).

Outputs are allocated with `cupy.empty`, whose memory may still hold an earlier, correct-looking
result. A test that wants to see an element a kernel forgot to write passes its own NaN-filled
buffers as `out=`; they are checked like the inputs and written in place.
"""

import numpy as np

from minilora import backend
from minilora.kernels import checks, nf4
from minilora.quant.nf4 import NF4Tensor

VARIANTS = ("naive", "tiled", "fused", "vectorized", "async", "warp", "tf32x3", "bf16", "wgmma")
WARP_TILES_VARIABLE = "MINILORA_WARP_TILES"  # pins the warp rung's tile configuration
DEFAULT_VARIANT = "fused"
FLOAT32_ONLY = ("tf32x3", "bf16", "wgmma")  # the tensor-core rungs
BFLOAT16_OPERANDS = ("bf16", "wgmma")  # the rungs that round their operands to bfloat16
HOPPER_ONLY = ("wgmma",)  # sm_90a: compute capability 9.0 and nothing else


def forward(x, W, A, B, scaling, bias=None, variant=DEFAULT_VARIANT, out=None):
    """LoRA forward on the GPU: ``u = x·Aᵀ`` and ``y = x·Wᵀ + scaling·u·Bᵀ (+ bias)``.

    x (M, K), W (N, K), A (r, K), B (N, r), bias (N,) or None: C-contiguous CuPy arrays of one
    float dtype on the current device; or W an NF4Tensor (N, K) with variant "nf4". `out` is None
    or a pair (y, u) of arrays to write into.
    Returns ``(y, u)``: y (M, N), and u (M, r), which the backward needs.
    """
    quantized = _check_variant(variant, W)
    named = {"x": x, "W": W, "A": A, "B": B} | ({} if bias is None else {"bias": bias})
    if quantized:
        del named["W"]
    dtype = _check_arrays(named)
    check_variant_dtype(variant, dtype)
    checks.expect_2d("x", x, "(M, K)")
    M, K, N, r = checks.lora_sizes(x, W, A, B, bias)
    scaling = checks.check_scaling(scaling, dtype)
    y, u = _outputs(out, {"y": (M, N), "u": (M, r)}, dtype)
    checks.check_no_aliasing({"y": y, "u": u}, named)

    lib = _cuda_library()
    workspace = _workspace(lib, variant, dtype, M, N, K, r, backward=False)
    bias_ptr = 0 if bias is None else bias.data.ptr
    if quantized:
        packed, absmax, code = nf4.operands(W, "cuda")
        lib.lora_forward_nf4_cuda(dtype.name, x.data.ptr, packed.data.ptr, absmax.data.ptr, code.data.ptr,
                                  W.block_size, A.data.ptr, B.data.ptr, bias_ptr, y.data.ptr, u.data.ptr,
                                  workspace.data.ptr, workspace.size, M, N, K, r, scaling, _current_stream())
    else:
        lib.lora_forward_cuda(variant, dtype.name, x.data.ptr, W.data.ptr, A.data.ptr, B.data.ptr,
                              bias_ptr, y.data.ptr, u.data.ptr, workspace.data.ptr, workspace.size,
                              M, N, K, r, scaling, _current_stream())
    return y, u


def backward(dy, x, W, A, B, u, scaling, variant=DEFAULT_VARIANT, out=None):
    """LoRA backward on the GPU, W frozen: with ``v = dy·B``,
    ``dx = dy·W + scaling·v·A``, ``dA = scaling·vᵀ·x``, ``dB = scaling·dyᵀ·u``.

    dy (M, N), x (M, K), W (N, K), A (r, K), B (N, r), u (M, r) from the forward: C-contiguous
    CuPy arrays of one float dtype on the current device (W an NF4Tensor with variant "nf4").
    `out` is None or a triple (dx, dA, dB) of arrays to write into. Returns ``(dx, dA, dB)`` of
    shapes (M, K), (r, K), (N, r).
    """
    quantized = _check_variant(variant, W)
    named = {"dy": dy, "x": x, "W": W, "A": A, "B": B, "u": u}
    if quantized:
        del named["W"]
    dtype = _check_arrays(named)
    check_variant_dtype(variant, dtype)
    checks.expect_2d("x", x, "(M, K)")
    M, K, N, r = checks.lora_sizes(x, W, A, B)
    checks.check_backward_shapes(dy, x, u, N, r)
    scaling = checks.check_scaling(scaling, dtype)
    dx, dA, dB = _outputs(out, {"dx": (M, K), "dA": (r, K), "dB": (N, r)}, dtype)
    checks.check_no_aliasing({"dx": dx, "dA": dA, "dB": dB}, named)

    lib = _cuda_library()
    workspace = _workspace(lib, variant, dtype, M, N, K, r, backward=True)
    if quantized:
        packed, absmax, code = nf4.operands(W, "cuda")
        lib.lora_backward_nf4_cuda(dtype.name, dy.data.ptr, x.data.ptr, packed.data.ptr, absmax.data.ptr,
                                   code.data.ptr, W.block_size, A.data.ptr, B.data.ptr, u.data.ptr,
                                   dx.data.ptr, dA.data.ptr, dB.data.ptr, workspace.data.ptr,
                                   workspace.size, M, N, K, r, scaling, _current_stream())
    else:
        lib.lora_backward_cuda(variant, dtype.name, dy.data.ptr, x.data.ptr, W.data.ptr, A.data.ptr,
                               B.data.ptr, u.data.ptr, dx.data.ptr, dA.data.ptr, dB.data.ptr,
                               workspace.data.ptr, workspace.size, M, N, K, r, scaling,
                               _current_stream())
    return dx, dA, dB


def warp_tiles(rows=1, cols=1):
    """``(names, chosen)``: the warp rung's tile configurations ("block/warp/thread" tile sizes,
    largest block tile first) and the one it runs a rows × cols product with: the value of
    $MINILORA_WARP_TILES when set (ValueError when it names none), else the choice per shape of
    csrc/cuda/lora_warp.cu. Needs the compiled extension with CUDA, not a GPU."""
    names, chosen = _cuda_library().lora_warp_tiles(rows, cols)
    return tuple(names), chosen


def status():
    """``(usable, reason)``: can the CUDA kernels run here, and if not, why not (one line).

    Checked in the order that gives the most useful reason on a machine without a GPU: the
    extension, then whether it has CUDA, then the driver's device count, then CuPy. Found out once
    for each extension module (a driver or GPU does not come and go while a process runs), since
    the default backend for CuPy arrays asks on every call of the op.
    """
    global _status
    ext = backend.extension_status()[0]
    if _status is None or _status[0] is not ext:
        _status = (ext, _find_status())
    return _status[1]


_status = None  # (the extension module it was found for, (usable, reason))


def variant_status(variant):
    """``(usable, reason)`` for one rung on the current GPU: as `status()`, and for the tensor-core
    rungs also compute capability 8.0 or newer (mma.sync on TF32 / bf16; a T4 is 7.5), for
    "wgmma" 9.0 (wgmma and TMA)."""
    _check_variant(variant)
    usable, reason = status()
    if not usable or variant not in FLOAT32_ONLY:
        return usable, reason
    capability = backend.xp_for("cuda").cuda.Device().compute_capability  # e.g. "75"
    if variant in HOPPER_ONLY and capability != "90":
        return False, (f"variant {variant!r} needs wgmma and TMA, compute capability 9.0 (an H100 "
                       f"or H200); this GPU has {capability[:-1]}.{capability[-1]}")
    if int(capability) < 80:
        return False, (f"variant {variant!r} needs mma.sync on TF32 / bf16, compute capability 8.0 "
                       f"or newer; this GPU has {capability[:-1]}.{capability[-1]}")
    return True, reason


def _find_status():
    try:
        lib = _cuda_library()
    except RuntimeError as exc:
        return False, str(exc)
    count, error = lib.cuda_device_status()
    if count == 0:
        return False, f"no usable GPU: {error or 'the CUDA driver reports 0 devices'}"
    usable, reason = backend.cuda_status()
    if not usable:
        return False, f"the kernels take CuPy arrays, and {reason}"
    return True, f"fused CUDA kernels in minilora._C ({', '.join(VARIANTS)}); {reason}"


# ---- the compiled module ----------------------------------------------------------------------
def _cuda_library():
    ext, reason = backend.extension_status()
    if ext is None:
        raise RuntimeError(f"backend 'cuda' needs minilora's compiled extension: {reason}; "
                           "build it where nvcc is installed with: MINILORA_CUDA=1 pip install -e .")
    if not ext.with_cuda:
        raise RuntimeError("minilora._C was built without the CUDA kernels; rebuild it where nvcc "
                           "is installed with: MINILORA_CUDA=1 pip install -e .")
    return ext


def _workspace(lib, variant, dtype, M, N, K, r, backward):
    """Scratch for partial sums (and v in the backward); its size comes from the kernels' own plan."""
    size = lib.lora_workspace_size(variant, dtype.name, M, N, K, r, backward)
    return backend.xp_for("cuda").empty(size, dtype=dtype)


def _current_stream():
    return backend.xp_for("cuda").cuda.get_current_stream().ptr


# ---- checks (all before any launch) -----------------------------------------------------------
def _check_variant(variant, W=None):
    """Whether W is an NF4Tensor, which runs on the "nf4" rung and only there."""
    if isinstance(W, NF4Tensor):
        if variant != nf4.VARIANT:
            raise ValueError(f"an NF4 weight runs on variant {nf4.VARIANT!r}, got variant={variant!r}")
        return True
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return False


def operands_of(variant):
    """The precision a rung reads its operands in, as minilora.kernels.accuracy's bounds take it:
    "bfloat16" for "bf16" and "wgmma", None (the arrays' own dtype) for every other rung."""
    return "bfloat16" if variant in BFLOAT16_OPERANDS else None


def check_variant_dtype(variant, dtype):
    """TypeError when a float32-only rung (FLOAT32_ONLY) gets arrays of another dtype."""
    if variant in FLOAT32_ONLY and dtype != np.float32:
        raise TypeError(f"variant {variant!r} runs on tensor cores and takes float32 arrays, got "
                        f"{np.dtype(dtype).name}")


def _check_arrays(named):
    """CuPy arrays of one float dtype, C-contiguous, on the current GPU (the kernels launch there)."""
    dtype, _ = checks.check_arrays(named, device="cuda")
    checks.check_contiguous(named)
    current = backend.xp_for("cuda").cuda.Device().id
    for name, array in named.items():
        if array.device.id != current:
            raise ValueError(f"{name} is on GPU {array.device.id} but the current GPU is {current}; "
                             f"run under `with cupy.cuda.Device({array.device.id}):` or move it")
    return dtype


def _outputs(out, shapes, dtype):
    """Fresh arrays of `shapes` (name -> shape), or the caller's `out` arrays once they pass the same
    checks as the inputs."""
    if out is None:
        return tuple(backend.xp_for("cuda").empty(shape, dtype=dtype) for shape in shapes.values())
    if len(out) != len(shapes):
        raise ValueError(f"out must be {len(shapes)} arrays {tuple(shapes)}, got {len(out)}")
    given = dict(zip(shapes, out))
    out_dtype = _check_arrays(given)
    if out_dtype != dtype:
        raise TypeError(f"out arrays have dtype {out_dtype}, expected {dtype} like the inputs")
    for name, shape in shapes.items():
        checks.expect_shape(name, given[name], shape)
    return tuple(out)
