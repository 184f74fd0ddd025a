"""The CUDA kernels (minilora.kernels.cuda) and the CuPy baseline against the float64 reference.

Every rung of the kernel ladder ("naive", "tiled", "fused", "vectorized", "async", "warp" in float32
and float64; the tensor-core rungs "tf32x3" and "bf16" in float32, on GPUs of compute capability
8.0 or newer), forward and backward, on fresh random inputs (never zeros) and on shapes that are
not multiples of any tile: every element within the rounding bound of minilora.kernels.accuracy
(built from the sizes of the terms summed, so cancellation cannot fail a correct kernel; the
emulated tests use the same bound; the bf16 rung gets bfloat16 inputs and the bfloat16 bound).
Outputs are NaN-poisoned buffers passed as `out=`, so an element a kernel forgot to write fails.

GPU tests are marked `gpu` and skipped with the reason where the kernels cannot run. The tests
without the mark run everywhere: argument checks that happen before anything touches a GPU (in
Python, and in the raw-pointer bindings of minilora._C), that a build on a machine with nvcc
contains the CUDA kernels, the sizes of their scratch buffers, and a dry run of
benchmarks/gpu_check.sh.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minilora
import minilora.kernels
from minilora import backend
from minilora.kernels import cuda as cuda_kernels
from minilora.kernels import accuracy, bf16, cupy_baseline, reference

from lora_shapes import GPU_SHAPES

KERNELS_USABLE, KERNELS_REASON = cuda_kernels.status()
needs_kernels = pytest.mark.skipif(not KERNELS_USABLE, reason=KERNELS_REASON or "")
CUPY_USABLE, CUPY_REASON = backend.cuda_status()
needs_cupy = pytest.mark.skipif(not CUPY_USABLE, reason=CUPY_REASON or "")

DTYPES = [np.float32, np.float64]
CASES = [(variant, dtype) for variant in cuda_kernels.VARIANTS for dtype in DTYPES
         if variant not in cuda_kernels.FLOAT32_ONLY or dtype == np.float32]


def skip_unless_runs_here(variant):
    """The tensor-core rungs need mma.sync on TF32 / bf16: compute capability 8.0 or newer."""
    usable, reason = cuda_kernels.variant_status(variant)
    if KERNELS_USABLE and not usable:
        pytest.skip(reason)


def dtype_for(variant):
    return np.float32 if variant in cuda_kernels.FLOAT32_ONLY else np.float64



def cupy():
    return backend.xp_for("cuda")


def poisoned(*shapes, dtype):
    return tuple(cupy().full(shape, np.nan, dtype=dtype) for shape in shapes)


class Problem:
    """Random float64 inputs of one LoRA layer, and their copies on the GPU in `dtype`."""

    def __init__(self, rng, M, N, K, r, dtype, bias=True, operands=None):
        self.shape = (M, N, K, r)
        self.dtype = dtype
        self.operands = operands  # "bfloat16" for the bf16 rung: inputs rounded to bf16 values
        self.scaling = float(rng.uniform(0.5, 4.0))
        # Inputs are rounded to `dtype` first, so the float64 reference sees exactly what the
        # kernel sees and the error measures the kernel's arithmetic alone.
        host = {
            "x": rng.standard_normal((M, K)),
            "W": rng.standard_normal((N, K)),
            "A": rng.standard_normal((r, K)),
            "B": rng.standard_normal((N, r)),
            "dy": rng.standard_normal((M, N)),
        }
        if bias:
            host["bias"] = rng.standard_normal(N)
        if operands == "bfloat16":
            host.update({k: bf16.round_to_bfloat16(v.astype(np.float32)) for k, v in host.items()
                         if k != "bias"})
        self.host = {k: v.astype(dtype).astype(np.float64) for k, v in host.items()}
        self.dev = {k: cupy().asarray(v.astype(dtype)) for k, v in self.host.items()}

    def reference_forward(self):
        h = self.host
        return reference.lora_forward(h["x"], h["W"], h["A"], h["B"], self.scaling, h.get("bias"))

    def reference_backward(self, u=None):
        """dx, dA, dB of the reference, from `u` (float64) or else the reference's own u."""
        h = self.host
        u = self.reference_forward()[1] if u is None else u
        return reference.lora_backward(h["dy"], h["x"], h["W"], h["A"], h["B"], u, self.scaling)

    def forward_bounds(self):
        h = self.host
        return accuracy.forward_bounds(h["x"], h["W"], h["A"], h["B"], self.scaling, h.get("bias"),
                                       self.dtype, self.operands)

    def backward_bounds(self, u=None):
        h = self.host
        u = self.reference_forward()[1] if u is None else u
        return accuracy.backward_bounds(h["dy"], h["x"], h["W"], h["A"], h["B"], u, self.scaling,
                                        self.dtype, self.operands)

    def forward(self, variant):
        M, N, K, r = self.shape
        d = self.dev
        out = poisoned((M, N), (M, r), dtype=self.dtype)
        return cuda_kernels.forward(d["x"], d["W"], d["A"], d["B"], self.scaling, d.get("bias"),
                                    variant=variant, out=out)

    def backward(self, variant, u):
        M, N, K, r = self.shape
        d = self.dev
        out = poisoned((M, K), (r, K), (N, r), dtype=self.dtype)
        return cuda_kernels.backward(d["dy"], d["x"], d["W"], d["A"], d["B"], u, self.scaling,
                                     variant=variant, out=out)


def assert_close(name, out, ref, bound, dtype):
    assert out.dtype == dtype, f"{name} has dtype {out.dtype}, expected {np.dtype(dtype)}"
    problem = accuracy.check(name, backend.to_numpy(out), ref, bound)
    assert problem is None, problem


def assert_forward(problem, y, u):
    for name, out, ref, bound in zip(("y", "u"), (y, u), problem.reference_forward(),
                                     problem.forward_bounds()):
        assert_close(name, out, ref, bound, problem.dtype)


def assert_backward(problem, grads, u=None):
    for name, out, ref, bound in zip(("dx", "dA", "dB"), grads, problem.reference_backward(u),
                                     problem.backward_bounds(u)):
        assert_close(name, out, ref, bound, problem.dtype)


def check_variant(rng, variant, dtype, M, N, K, r, bias=True):
    skip_unless_runs_here(variant)
    problem = Problem(rng, M, N, K, r, dtype, bias=bias, operands=cuda_kernels.operands_of(variant))
    assert_forward(problem, *problem.forward(variant))
    # The backward gets the u of the reference, rounded to dtype, so its error is its own.
    u_rounded = problem.reference_forward()[1].astype(dtype)
    grads = problem.backward(variant, cupy().asarray(u_rounded))
    assert_backward(problem, grads, u_rounded.astype(np.float64))


# ---- every rung, both dtypes, awkward shapes --------------------------------------------------
@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "M{}_N{}_K{}_r{}".format(*s))
@pytest.mark.parametrize("variant, dtype", CASES, ids=lambda c: c if isinstance(c, str) else np.dtype(c).name)
def test_variant_matches_reference(rng, variant, dtype, shape):
    check_variant(rng, variant, dtype, *shape)


@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("variant", cuda_kernels.VARIANTS)
def test_forward_without_bias(rng, variant):
    check_variant(rng, variant, dtype_for(variant), 33, 17, 21, 4, bias=False)


@pytest.mark.gpu
@needs_kernels
@settings(max_examples=60)
@given(M=st.integers(1, 70), N=st.integers(1, 70), K=st.integers(1, 70), r=st.integers(1, 40),
       case=st.sampled_from(CASES), bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_random_shapes_match_reference(M, N, K, r, case, bias, seed):
    check_variant(np.random.default_rng(seed), *case, M, N, K, r, bias=bias)


@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("variant", cuda_kernels.VARIANTS)
def test_split_sums_are_deterministic(rng, variant):
    """Split products add their partial sums in a fixed order: two runs agree to the bit."""
    skip_unless_runs_here(variant)
    problem = Problem(rng, 700, 20, 1030, 3, np.float32)

    def run():
        y, u = problem.forward(variant)
        return (y, u) + problem.backward(variant, u)

    for first, second in zip(run(), run()):
        assert bool(cupy().array_equal(first, second))


@pytest.mark.gpu
@needs_kernels
def test_kernels_run_on_the_current_stream(rng):
    """Work queued on a non-default CuPy stream is ordered with the kernels on that stream."""
    problem = Problem(rng, 300, 200, 100, 8, np.float32)
    stream = cupy().cuda.Stream(non_blocking=True)
    with stream:
        x = problem.dev["x"] * 1  # written on `stream` just before the kernel reads it
        y, _ = cuda_kernels.forward(x, problem.dev["W"], problem.dev["A"], problem.dev["B"],
                                    problem.scaling, problem.dev["bias"])
        y_host = cupy().asnumpy(y, stream=stream)
    stream.synchronize()
    assert_close("y", y_host, problem.reference_forward()[0], problem.forward_bounds()[0], np.float32)


@pytest.mark.gpu
@needs_kernels
def test_default_outputs_are_fresh_arrays(rng):
    """Without out=, the outputs are new CuPy arrays of the right shape, dtype and values."""
    problem = Problem(rng, 9, 10, 11, 2, np.float64)
    d = problem.dev
    y, u = cuda_kernels.forward(d["x"], d["W"], d["A"], d["B"], problem.scaling, d["bias"])
    dx, dA, dB = cuda_kernels.backward(d["dy"], d["x"], d["W"], d["A"], d["B"], u, problem.scaling)
    assert_forward(problem, y, u)
    assert_backward(problem, (dx, dA, dB), backend.to_numpy(u))


# ---- the CuPy baseline ------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cupy
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("bias", [True, False])
def test_cupy_baseline_matches_reference(rng, dtype, bias):
    problem = Problem(rng, 37, 29, 45, 6, dtype, bias=bias)
    d = problem.dev
    y, u = cupy_baseline.forward(d["x"], d["W"], d["A"], d["B"], problem.scaling, d.get("bias"))
    assert_forward(problem, y, u)
    grads = cupy_baseline.backward(d["dy"], d["x"], d["W"], d["A"], d["B"], u, problem.scaling)
    assert_backward(problem, grads, backend.to_numpy(u).astype(np.float64))


# ---- bad input, on the GPU --------------------------------------------------------------------
@pytest.fixture
def arrays(rng):
    problem = Problem(rng, 6, 5, 4, 3, np.float32)
    return problem.dev, problem.scaling


def forward_with(dev, scaling, **changes):
    args = {"x": dev["x"], "W": dev["W"], "A": dev["A"], "B": dev["B"], "bias": dev["bias"]}
    args.update(changes)
    return cuda_kernels.forward(args["x"], args["W"], args["A"], args["B"], scaling, args["bias"])


@pytest.mark.gpu
@needs_kernels
def test_wrong_dtype_is_refused(arrays):
    dev, s = arrays
    with pytest.raises(TypeError, match=r"W has dtype float64 but x has float32"):
        forward_with(dev, s, W=dev["W"].astype(np.float64))
    with pytest.raises(TypeError, match=r"x has dtype float16, expected float32 or float64"):
        forward_with(dev, s, x=dev["x"].astype(np.float16))


@pytest.mark.gpu
@needs_kernels
def test_non_contiguous_is_refused(arrays):
    dev, s = arrays
    with pytest.raises(ValueError, match=r"A must be C-contiguous \(row-major\)"):
        forward_with(dev, s, A=cupy().asfortranarray(dev["A"]))
    with pytest.raises(ValueError, match=r"x must be C-contiguous"):
        forward_with(dev, s, x=cupy().ones((6, 8), np.float32)[:, ::2])


@pytest.mark.gpu
@needs_kernels
def test_mismatched_shapes_are_refused(arrays):
    dev, s = arrays
    with pytest.raises(ValueError, match=r"W has shape \(5, 3\), expected \(5, 4\)"):
        forward_with(dev, s, W=dev["W"][:, :3].copy())
    with pytest.raises(ValueError, match=r"B has shape \(5, 2\), expected \(5, 3\)"):
        forward_with(dev, s, B=dev["B"][:, :2].copy())
    with pytest.raises(ValueError, match=r"bias has shape \(4,\), expected \(5,\)"):
        forward_with(dev, s, bias=dev["bias"][:4].copy())
    with pytest.raises(ValueError, match=r"x must be 2-D"):
        forward_with(dev, s, x=dev["x"].reshape(1, 6, 4))
    u = cupy().ones((6, 2), np.float32)
    with pytest.raises(ValueError, match=r"u has shape \(6, 2\), expected \(6, 3\)"):
        cuda_kernels.backward(dev["dy"], dev["x"], dev["W"], dev["A"], dev["B"], u, s)
    with pytest.raises(ValueError, match=r"y has shape \(6, 4\), expected \(6, 5\)"):
        cuda_kernels.forward(dev["x"], dev["W"], dev["A"], dev["B"], s,
                             out=poisoned((6, 4), (6, 3), dtype=np.float32))


@pytest.mark.gpu
@needs_kernels
def test_rank_zero_is_refused(arrays):
    dev, s = arrays
    with pytest.raises(ValueError, match=r"the LoRA rank r = A.shape\[0\] is 0; it must be at least 1"):
        forward_with(dev, s, A=dev["A"][:0].copy(), B=dev["B"][:, :0].copy())


@pytest.mark.gpu
@needs_kernels
def test_bad_variant_and_scaling_are_refused_on_gpu_arrays(arrays):
    dev, s = arrays
    with pytest.raises(ValueError, match=r"variant must be one of .*got 'blocked'"):
        cuda_kernels.forward(dev["x"], dev["W"], dev["A"], dev["B"], s, variant="blocked")
    with pytest.raises(TypeError, match=r"scaling must be a real number"):
        cuda_kernels.forward(dev["x"], dev["W"], dev["A"], dev["B"], "2.0")


@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("variant", cuda_kernels.FLOAT32_ONLY)
def test_tensor_core_rungs_refuse_float64_and_gpus_without_mma(rng, variant):
    """float64 is refused in Python; a GPU before compute capability 8.0 (a T4), or for wgmma any
    GPU but 9.0, by the host code, with the reason, before any launch."""
    d = Problem(rng, 6, 5, 4, 3, np.float64).dev
    with pytest.raises(TypeError, match=rf"variant '{variant}' runs on tensor cores and takes float32 arrays"):
        cuda_kernels.forward(d["x"], d["W"], d["A"], d["B"], 1.5, variant=variant)
    if not cuda_kernels.variant_status(variant)[0]:
        d = Problem(rng, 6, 5, 4, 3, np.float32).dev
        why = (r"needs wgmma and TMA, compute capability 9.0" if variant in cuda_kernels.HOPPER_ONLY
               else r"needs mma.sync on TF32 / bf16, compute capability 8.0 or newer")
        with pytest.raises(ValueError, match=why):
            cuda_kernels.forward(d["x"], d["W"], d["A"], d["B"], 1.5, variant=variant)


@pytest.mark.gpu
@needs_kernels
def test_bf16_rung_rounds_its_inputs_as_round_to_bfloat16_does(rng):
    """The GPU's cvt.rn.bf16.f32 and minilora.kernels.bf16 agree: float32 inputs and their bf16
    roundings give the same bits (the emulated test checks the emulator's conversion likewise)."""
    skip_unless_runs_here("bf16")
    raw = Problem(rng, 70, 33, 45, 4, np.float32)
    d = raw.dev
    rounded = {k: (v if k == "bias" else cupy().asarray(bf16.round_to_bfloat16(cupy().asnumpy(v))))
               for k, v in d.items()}
    u = cupy().asarray(rng.standard_normal((70, 4)).astype(np.float32))
    results = []
    for arrays in (d, rounded):
        y, u_out = cuda_kernels.forward(arrays["x"], arrays["W"], arrays["A"], arrays["B"], raw.scaling,
                                        arrays["bias"], variant="bf16")
        results.append((y, u_out) + cuda_kernels.backward(arrays["dy"], arrays["x"], arrays["W"], arrays["A"],
                                                          arrays["B"], u, raw.scaling, variant="bf16"))
    for name, first, second in zip(("y", "u", "dx", "dA", "dB"), *results):
        assert bool(cupy().array_equal(first, second)), name


# ---- through minilora.kernels and F.lora_linear -----------------------------------------------
@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("variant", cuda_kernels.VARIANTS)
def test_dispatch_with_batch_dims_runs_the_chosen_variant(rng, variant):
    """minilora.kernels flattens leading dims of x and hands 2-D arrays to the kernels."""
    skip_unless_runs_here(variant)
    problem = Problem(rng, 2 * 3 * 7, 19, 23, 4, dtype_for(variant), operands=cuda_kernels.operands_of(variant))
    d = problem.dev
    x3 = d["x"].reshape(2, 3 * 7, 23)
    y, u = minilora.kernels.lora_forward(x3, d["W"], d["A"], d["B"], problem.scaling, d["bias"],
                                         backend="cuda", variant=variant)
    assert y.shape == (2, 21, 19) and u.shape == (2, 21, 4)
    assert_forward(problem, y.reshape(42, 19), u.reshape(42, 4))
    dy3 = d["dy"].reshape(2, 21, 19)
    dx, dA, dB = minilora.kernels.lora_backward(dy3, x3, d["W"], d["A"], d["B"], u, problem.scaling,
                                                backend="cuda", variant=variant)
    assert dx.shape == (2, 21, 23)
    assert_backward(problem, (dx.reshape(42, 23), dA, dB), backend.to_numpy(u).reshape(42, 4))


@pytest.mark.gpu
@needs_kernels
def test_lora_linear_gradcheck_on_cuda(rng):
    """Float64 central differences agree with the gradients of F.lora_linear on the CUDA kernels."""
    def t(*shape):
        return minilora.tensor(rng.standard_normal(shape), requires_grad=True, device="cuda")

    x, W, A, B, bias = t(2, 3, 5), t(4, 5), t(2, 5), t(4, 2), t(4)
    with minilora.kernels.use_backend("cuda"):
        result = minilora.gradcheck(
            lambda x, W, A, B, bias: minilora.F.lora_linear(x, W, A, B, 1.5, bias), [x, W, A, B, bias])
    assert result.ok, str(result)


# ---- without a GPU ----------------------------------------------------------------------------
def test_numpy_arrays_are_refused_with_a_clear_error(rng):
    x, W, A, B = (rng.standard_normal(s) for s in ((3, 4), (5, 4), (2, 4), (5, 2)))
    with pytest.raises(ValueError, match=r"x is a NumPy array but this needs CuPy arrays"):
        cuda_kernels.forward(x, W, A, B, 2.0)
    with pytest.raises(ValueError, match=r"dy is a NumPy array but this needs CuPy arrays"):
        cuda_kernels.backward(rng.standard_normal((3, 5)), x, W, A, B, rng.standard_normal((3, 2)), 2.0)


def test_unknown_variant_is_refused_before_anything_else(rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match=r"variant must be one of \('naive', 'tiled', 'fused', 'vectorized', "
                                         r"'async', 'warp', 'tf32x3', 'bf16', 'wgmma'\), got 'fast'"):
        cuda_kernels.forward(x, x, x, x, 1.0, variant="fast")


def _compiled_module():
    return pytest.importorskip("minilora._C", reason="minilora._C is not built here")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH: no CUDA build here")
def test_build_with_nvcc_contains_the_cuda_kernels():
    """The default build compiles csrc/cuda/ whenever nvcc is found (tests/test_build.py checks that
    the functions match the flag and that the device query never crashes). A build made with
    MINILORA_CUDA=0 was told to leave them out: it says so itself, whatever the tests' environment."""
    _C = _compiled_module()
    if _C.cuda_option == "OFF":
        pytest.skip("minilora._C was built with MINILORA_CUDA=0 (the CPU op only)")
    assert _C.with_cuda is True


def test_workspace_size_follows_the_split_plan():
    """Scratch is only needed where a product is split, and the backward always holds v (M × r)."""
    _C = _compiled_module()
    if not _C.with_cuda:
        pytest.skip("minilora._C was built without CUDA")
    assert _C.lora_workspace_size("naive", "float32", 128, 4096, 4096, 16, False) == 0
    assert _C.lora_workspace_size("naive", "float32", 128, 4096, 4096, 16, True) == 128 * 16
    # Large M: every product has enough output tiles, nothing is split.
    assert _C.lora_workspace_size("fused", "float32", 8192, 4096, 4096, 16, False) == 0
    # Small M: u (128 × 16, summed over 4096) is split, so is y; the scratch holds whole copies.
    size = _C.lora_workspace_size("fused", "float32", 128, 4096, 4096, 16, False)
    assert size > 0 and size % (128 * 4096) == 0
    # The wgmma rung stages y's operands as bf16 (two to a float32 element of the workspace):
    # [x | s·u] (M × (K + r)) and [W | B] (N × (K + r)), each row padded to 8 values (16 bytes).
    staged = (8192 + 4096) * (4096 + 16) // 2
    assert staged <= _C.lora_workspace_size("wgmma", "float32", 8192, 4096, 4096, 16, False) <= staged + 16
    with pytest.raises(ValueError, match=r"variant must be 'naive', 'tiled', 'fused', 'vectorized', 'async', "
                                         r"'warp', 'tf32x3', 'bf16', 'wgmma' or 'nf4'"):
        _C.lora_workspace_size("fast", "float32", 1, 1, 1, 1, False)
    with pytest.raises(ValueError, match=r"M = 0, expected 1 <= M"):
        _C.lora_workspace_size("fused", "float32", 0, 1, 1, 1, False)


# ---- the raw-pointer bindings refuse what would corrupt memory, before any CUDA call ----------------
def _cuda_module():
    _C = _compiled_module()
    if not _C.with_cuda:
        pytest.skip("minilora._C was built without CUDA")
    return _C


def _forward_pointers(**changes):
    """Made-up, well-separated device addresses for a forward with M = N = K = r = 2 (16 bytes per
    float32 array); nothing is ever read through them, as every call below is refused first."""
    pointers = {"x": 0x10000, "W": 0x20000, "A": 0x30000, "B": 0x40000, "bias": 0, "y": 0x50000,
                "u": 0x60000, "workspace": 0}
    pointers.update(changes)
    return pointers


def _call_forward(_C, pointers, variant="fused", M=2, N=2, K=2, r=2):
    p = pointers
    _C.lora_forward_cuda(variant, "float32", p["x"], p["W"], p["A"], p["B"], p["bias"], p["y"], p["u"],
                         p["workspace"], 0, M, N, K, r, 1.0, 0)


def test_bindings_refuse_null_pointers():
    _C = _cuda_module()
    with pytest.raises(ValueError, match=r"lora CUDA forward: W is a null pointer, expected the address of 4"):
        _call_forward(_C, _forward_pointers(W=0))
    with pytest.raises(ValueError, match=r"lora CUDA backward: dB is a null pointer"):
        _C.lora_backward_cuda("tiled", "float32", *[0x10000 * (i + 1) for i in range(8)], 0, 0x100000, 64,
                              2, 2, 2, 2, 1.0, 0)


def test_bindings_refuse_outputs_that_overlap_other_arrays():
    _C = _cuda_module()
    with pytest.raises(ValueError, match=r"output y \(4 elements at 0x10008\) overlaps x \(4 elements at "
                                         r"0x10000\); every output must be an array of its own"):
        _call_forward(_C, _forward_pointers(y=0x10008))
    with pytest.raises(ValueError, match=r"output y .* overlaps u"):
        _call_forward(_C, _forward_pointers(u=0x50004))
    # Arrays that only touch (one ends where the next begins) are fine: the call gets past the
    # checks and only then finds no GPU, or, on a GPU machine, is not reached here.
    if not KERNELS_USABLE:
        with pytest.raises(RuntimeError, match=r"before any launch"):
            _call_forward(_C, _forward_pointers(y=0x10010))


def test_bindings_check_every_grid_before_the_first_launch():
    """u = x·Aᵀ would fit the naive rung's grid, y (N / 16 blocks along y) does not: the whole pass
    is refused before u is launched (ValueError, not a CUDA error from the missing GPU)."""
    _C = _cuda_module()
    N = 16 * 65535 + 1
    pointers = _forward_pointers(W=0x1000000, B=0x2000000, y=0x3000000)
    with pytest.raises(ValueError, match=r"naive_matmul_kernel \(y = x W\^T \+ s u B\^T\).*too large"):
        _call_forward(_C, pointers, variant="naive", M=1, N=N, K=1, r=1)


# ---- benchmarks/gpu_check.sh, dry-run here so that a mistake in it shows before a GPU is at hand ---
GPU_CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def test_gpu_check_budget_in_its_header_adds_up_to_its_default():
    """The header's table gives each step at most so many seconds; together they are the default
    budget, at most 6 minutes (the GPU machine's 15 minutes must hold a second call)."""
    text = GPU_CHECK.read_text()
    steps = [int(s) for s in re.findall(r"^#\s+\d+\. .*?\s(\d+) s ", text, re.MULTILINE)]
    total = int(re.search(r"^#\s+(\d+) s$", text, re.MULTILINE).group(1))
    default = int(re.search(r"GPU_CHECK_SECONDS:-(\d+)", text).group(1))
    assert len(steps) == 10 and sum(steps) == total == default <= 360, (steps, total, default)


def test_gpu_check_steps_run_with_the_limits_its_header_gives():
    text = GPU_CHECK.read_text()
    limits = dict(re.findall(r"^#\s+(\d+)\. .*?\s(\d+) s ", text, re.MULTILINE))
    expected = [(rf'step must "build" build\.log {limits["2"]} ', "build"),
                (rf'step must "build \(dry run[^"]*" build\.log {limits["2"]} ', "dry-run build"),
                (rf'step must "kernels usable" build\.log {limits["3"]} ', "kernels usable"),
                (rf'step must "rungs alone" tests\.log {limits["4"]} ', "rungs alone"),
                (rf'step must "pytest -m gpu" tests\.log {limits["5"]} ', "pytest -m gpu"),
                (rf"limit={limits['6']} runs", "memcheck"),
                (rf'"\$tool" = racecheck \] && limit={limits["7"]}\n', "racecheck"),
                (rf'"\$tool" = initcheck \] && limit={limits["8"]}\n', "initcheck"),
                (rf'step report "benchmark" bench\.log {limits["9"]} ', "benchmark")]
    for pattern, step in expected:
        assert re.search(pattern, text), f"{step}: the script's limit is not the header's"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils' timeout")
def test_gpu_check_dry_run_runs_every_step(tmp_path):
    env = dict(os.environ, GPU_CHECK_DRY="1", OUT=str(tmp_path), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = (tmp_path / "summary.md").read_text()
    for name in ("preflight", "build (dry run", "kernels usable", "rungs alone", "pytest -m gpu", "sanitizer memcheck",
                 "sanitizer racecheck", "sanitizer initcheck", "benchmark"):
        assert f"| {name}" in summary, summary
    assert "FAILED" not in summary and "no required step failed" in summary, summary
    assert "- nvcc: " in summary and "- compute-sanitizer: " in summary


def test_smoke_rungs_names_the_rungs_that_fail_or_hang(tmp_path):
    """benchmarks/smoke_rungs.py runs every rung at once, each in its own process: one that exits
    non-zero is FAILED, one still running at the limit is killed and HUNG, and the limit counts from
    the common start, so a hang costs the step its limit once, not once per rung."""
    spec = importlib.util.spec_from_file_location("smoke_rungs", GPU_CHECK.parent / "smoke_rungs.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    python = sys.executable
    commands = {"good": [python, "-c", "print('fine')"], "bad": [python, "-c", "raise SystemExit(3)"],
                "stuck": [python, "-c", "import time; time.sleep(60)"],
                "stuck_too": [python, "-c", "import time; time.sleep(60)"]}
    started = time.monotonic()
    verdicts = smoke.run_alone(commands, 4.0, tmp_path)
    assert time.monotonic() - started < 7.5  # one limit of 4 s, not one per stuck rung
    assert verdicts["good"] == "ok" and verdicts["bad"] == "FAILED (exit 3)"
    assert verdicts["stuck"].startswith("HUNG") and verdicts["stuck_too"].startswith("HUNG")
    assert (tmp_path / "smoke_good.log").read_text() == "fine\n"


# ---- the default backend for CuPy arrays ----------------------------------------------------------
def test_cupy_arrays_default_to_cupy_where_the_kernels_cannot_run(monkeypatch):
    """Built with CUDA but no usable driver (as on a CPU machine with nvcc): "cupy", and
    `minilora info` says why not "cuda"."""
    from minilora import info
    from minilora.kernels import dispatch

    real = _compiled_module()

    class BuiltWithCuda:  # the real module, as if it had been built with CUDA
        with_cuda = True

        def __getattr__(self, name):
            return getattr(real, name)

    ext = BuiltWithCuda()
    monkeypatch.setattr(backend, "extension_status", lambda: (ext, "built with CUDA"))
    monkeypatch.setattr(cuda_kernels, "status", lambda: (False, "no usable GPU: cudaErrorInsufficientDriver"))
    assert dispatch.default_backend("cuda") == "cupy"
    lines = info.report_lines()
    assert any("for CuPy arrays: cupy" in line for line in lines), lines
    assert any("cannot run here: no usable GPU: cudaErrorInsufficientDriver" in line for line in lines)
    monkeypatch.setattr(cuda_kernels, "status", lambda: (True, "fused CUDA kernels"))
    assert dispatch.default_backend("cuda") == "cuda"
    assert not any("cannot run here" in line for line in info.report_lines())


def test_default_for_cupy_arrays_on_this_machine():
    from minilora.kernels import dispatch
    assert dispatch.default_backend("cuda") == ("cuda" if KERNELS_USABLE else "cupy")
