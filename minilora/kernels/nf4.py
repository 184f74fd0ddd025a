"""The fused LoRA op with W stored in NF4 (QLoRA's 4-bit base): the paths that take it, and what
the compiled ones read.

Where it sits: `minilora.kernels.lora_forward` / `lora_backward` (dispatch.py) come here for the
paths when W is an NF4Tensor (minilora.quant). Three compute the same thing:

    "numpy"  reference.py on Ŵ = W.dequantize(): the ground truth; a float W lives for one call
    "cpp"    the C++ op (cpp.py), whose GEMM dequantizes W's panels as it packs them
             (csrc/cpu/gemm_pack_nf4.h): the only float copy of W is one packed column block
    "cuda"   the "nf4" rung of the CUDA ladder (cuda.py, csrc/cuda/lora_nf4.cu), whose tile loader
             dequantizes W straight into shared memory
    "cupy"   on CuPy arrays where the kernels cannot run: as "numpy", with CuPy (cuBLAS)

W lives where the other arrays do: W.to("cuda") (or model.to("cuda")) moves an NF4Tensor.

What a compiled path reads (`operands`): W.packed (two 4-bit indices a byte), one float32 absmax
per block, NF4_CODE (the 16 levels) and W.block_size. With double quantization the absmaxes are
stored in 8 bits; they are dequantized into a float32 array first (QuantizedAbsmax.dequantize),
once per call. That array is one number per block of weights, 32 / block_size bits a weight
(0.5 at QLoRA's 64): a sixty-fourth of a float32 W, not W. Dequantizing them inside the kernels
would save that much memory for the call's duration and cost every kernel a second look-up.

The default for NumPy arrays is "cpp" where `cpp_pays_off` says the C++ op was measured faster
than the reference, which must dequantize all of W (several passes over N·K numbers) before its
one matrix product; the C++ op dequantizes while it packs, which it does anyway.
"""

import numpy as np

from minilora.backend import extension_status, xp_for
from minilora.kernels import reference
from minilora.quant.nf4 import NF4_CODE, NF4Tensor

VARIANT = "nf4"  # the CUDA rung that takes an NF4 W

# From `python benchmarks/bench_cpu_op.py --nf4 --rule` (forward + backward, one thread; tables in
# benchmarks/results/cpu-nf4-devvm2-2026-12-02/): the C++ op was faster than the reference at every
# measured shape with K and N >= 128, from one row up (at 16 x 1024 x 1024 in a third of the time:
# the reference's dequantizing costs more than its products), within a few percent either way at
# 64, and slower at 16 and 32, where W is too small for dequantizing to matter.
CPP_MIN_FEATURES = 128


def cpp_pays_off(M, K, N):
    """Whether the C++ op with an NF4 W was measured at least as fast as the reference (which
    dequantizes W first) for a layer of M rows, K input and N output features."""
    return min(K, N) >= CPP_MIN_FEATURES


def default_backend(device, sizes=None):
    """The backend for an NF4 W when nothing else is chosen (dispatch.resolve_backend's default):
    on the CPU "cpp" where it pays off (see cpp_pays_off), else "numpy"; for CuPy arrays "cuda"
    where the kernels run, else "cupy" (W dequantized on the GPU, then cuBLAS)."""
    if device == "cpu":
        if extension_status()[0] is None or (sizes is not None and not cpp_pays_off(*sizes[:3])):
            return "numpy"
        return "cpp"
    from minilora.kernels import cuda  # here: cuda.py imports this module
    return "cuda" if cuda.status()[0] else "cupy"


def check_weight(W, device=None):
    """W an NF4Tensor of a 2-D (N, K) matrix, on `device` when given, whose packed indices and
    absmaxes have the sizes its shape and block_size imply (compiled code reads exactly that many)."""
    if not isinstance(W, NF4Tensor):
        raise TypeError(f"W must be an NF4Tensor here, got {type(W).__name__}")
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D NF4Tensor (N, K), got shape {W.shape}")
    if device is not None and W.device != device:
        raise ValueError(f"W is an NF4Tensor on {W.device!r} but the other arrays are on {device!r}; move it "
                         f"with W.to({device!r}) (Module.to moves the NF4 bases of a model)")
    blocks = -(-W.size // W.block_size)
    absmax = W.absmax.codes if W.double_quant else W.absmax
    if W.packed.dtype != np.uint8 or W.packed.shape != ((W.size + 1) // 2,):
        raise ValueError(f"W.packed must be uint8 of shape ({(W.size + 1) // 2},) for a W of shape "
                         f"{W.shape}, got {W.packed.dtype} of shape {W.packed.shape}")
    if not W.double_quant and W.absmax.dtype != np.float32:  # compiled code reads float32 scales
        raise ValueError(f"W.absmax must be float32 (as nf4_quantize makes it), got {W.absmax.dtype}")
    if absmax.shape != (blocks,):
        raise ValueError(f"W has {absmax.shape[0]} absmaxes, expected ceil({W.size} / block_size "
                         f"{W.block_size}) = {blocks}")


def operands(W, device="cpu"):
    """``(packed, absmax, code)`` for compiled code, C-contiguous on `device`, where W must be:
    uint8 (ceil(N·K / 2),), float32 (n_blocks,), float32 (16,) (the levels copied there)."""
    check_weight(W, device)
    xp = xp_for(device)
    arrays = (W.packed, W.block_absmax(), NF4_CODE)
    return tuple(xp.ascontiguousarray(xp.asarray(a)) for a in arrays)


def reference_forward(x, W, A, B, scaling, bias=None):
    """The reference with W dequantized (in x's dtype) for this call: backend "numpy" on NumPy
    arrays, "cupy" on CuPy arrays (reference.py works on both, as does dequantize)."""
    return reference.lora_forward(x, W.dequantize(x.dtype), A, B, scaling, bias)


def reference_backward(dy, x, W, A, B, u, scaling):
    return reference.lora_backward(dy, x, W.dequantize(dy.dtype), A, B, u, scaling)
