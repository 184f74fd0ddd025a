"""The fused op with W in NF4 on the C++ op, whose GEMM dequantizes W's panels as it packs them
(csrc/cpu/gemm_pack_nf4.h), against the float64 reference on W dequantized (kernels/nf4_check.py).

Outputs are NaN-filled buffers, so an element never written fails. Shapes: M = 1, K = 3, r = 1,
odd N, an odd number of weights (the last byte half padding), blocks that end mid-row and rows
that end mid-block (block sizes 2, 7, 64, 256 against K = 3 ... 4100), inner blocks and column
blocks of the GEMM crossed, threads, float32 and float64, plain and double-quantized absmaxes, every instruction set this CPU
runs. And one test that needs no tolerance: the same GEMM on the dequantized float W gives the same
bits, since the panels it packs hold the same numbers.
"""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minilora import backend, kernels
from minilora.kernels import cpp, nf4, nf4_check
from minilora.quant import nf4_quantize

EXTENSION, EXTENSION_REASON = backend.extension_status()
pytestmark = pytest.mark.skipif(EXTENSION is None, reason=f"the C++ op is not built ({EXTENSION_REASON});"
                                " tests/test_build.py fails for it")
ISAS = cpp.available_isas() if EXTENSION is not None else ()

# (M, N, K, r, block_size)
SHAPES = [
    (1, 1, 1, 1, 64),      # one weight: half a byte
    (1, 5, 3, 1, 2),       # odd N·K = 15, the smallest blocks
    (4, 7, 3, 2, 7),       # blocks end mid-row
    (7, 9, 5, 3, 64),
    (13, 17, 70, 5, 64),   # rows end mid-block
    (3, 31, 17, 1, 256),   # one block holds several rows
    (9, 13, 700, 9, 64),   # several inner blocks of the GEMM
    (130, 70, 300, 4, 7),   # threads start (2^20 multiply-adds)
    (2, 600, 4100, 3, 64),  # W's packed panel fills the L3 budget: two column blocks
]


def nan_like(*shapes, dtype):
    return tuple(np.full(shape, np.nan, dtype=dtype) for shape in shapes)


def run_cpp(a, s, bias=True):
    M, K = a["x"].shape
    N, r = a["B"].shape
    dtype = a["x"].dtype
    y, u = cpp.forward(a["x"], a["W"], a["A"], a["B"], s, a.get("bias") if bias else None,
                       out=nan_like((M, N), (M, r), dtype=dtype))
    dx, dA, dB = cpp.backward(a["dy"], a["x"], a["W"], a["A"], a["B"], a["u"], s,
                              out=nan_like((M, K), (r, K), (N, r), dtype=dtype))
    return dict(y=y, u=u, dx=dx, dA=dA, dB=dB)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("double_quant", [False, True], ids=["absmax32", "double_quant"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "M{}_N{}_K{}_r{}_block{}".format(*s))
def test_cpp_with_an_nf4_weight_matches_the_reference(rng, shape, dtype, double_quant, isa):
    M, N, K, r, block_size = shape
    a, s, expected = nf4_check.random_layer(rng, M, N, K, r, dtype, block_size, double_quant)
    with cpp.use_isa(isa):
        outputs = run_cpp(a, s)
    assert not nf4_check.failures(outputs, expected)


def test_forward_without_bias(rng):
    a, s, expected = nf4_check.random_layer(rng, 33, 17, 21, 4, np.float32, 16, bias=False)
    y = run_cpp(a, s, bias=False)["y"]
    assert not nf4_check.failures({"y": y}, expected)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", [(1, 5, 3, 1, 2), (65, 129, 130, 3, 64), (300, 70, 40, 8, 7)],
                         ids=lambda s: "M{}_N{}_K{}_r{}_block{}".format(*s))
def test_the_nf4_panels_hold_the_dequantized_weights_bit_for_bit(rng, shape, isa):
    """Packing dequantizes W into the very numbers NF4Tensor.dequantize gives, and the GEMM is the
    same: so the NF4 op and the float op on Ŵ agree in every bit (on every thread count, since the
    blocking depends on the shapes only)."""
    M, N, K, r, block_size = shape
    a, s, _ = nf4_check.random_layer(rng, M, N, K, r, np.float32, block_size)
    W_hat = a["W"].dequantize()
    with cpp.use_isa(isa):
        quantized = run_cpp(a, s)
        y, u = cpp.forward(a["x"], W_hat, a["A"], a["B"], s, a["bias"])
        grads = cpp.backward(a["dy"], a["x"], W_hat, a["A"], a["B"], a["u"], s)
    for name, dense in zip(nf4_check.NAMES, (y, u) + grads):
        assert np.array_equal(quantized[name].view(np.uint8), dense.view(np.uint8)), name


# ---- through minilora.kernels ---------------------------------------------------------------------------
def test_the_default_for_an_nf4_weight_follows_the_measured_rule(rng):
    big, small = nf4_quantize(rng.standard_normal((128, 128))), nf4_quantize(rng.standard_normal((64, 128)))
    assert nf4.default_backend("cpu", (1, 128, 128, 4)) == "cpp"
    assert nf4.default_backend("cpu", (4096, 128, 64, 4)) == "numpy"
    for W in (big, small):
        x = rng.standard_normal((3, 128))
        A, B = rng.standard_normal((2, 128)), rng.standard_normal((W.shape[0], 2))
        y, _ = kernels.lora_forward(x, W, A, B, 2.0)
        ref, _ = kernels.lora_forward(x, W.dequantize(), A, B, 2.0, backend="numpy")
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_batch_dims_and_an_empty_batch(rng):
    W = nf4_quantize(rng.standard_normal((9, 5)), 8)
    A, B = rng.standard_normal((2, 5)), rng.standard_normal((9, 2))
    x, dy = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 9))
    for shape in ((2, 3), (0,)):
        y, u = kernels.lora_forward(x[: shape[0]].reshape(shape + (5,)), W, A, B, 1.5, backend="cpp")
        assert y.shape == shape + (9,) and u.shape == shape + (2,)
    y, u = kernels.lora_forward(x, W, A, B, 1.5, backend="cpp")
    dx, dA, dB = kernels.lora_backward(dy, x, W, A, B, u, 1.5, backend="cpp")
    ref = kernels.lora_backward(dy, x, W.dequantize(), A, B, u, 1.5, backend="numpy")
    for got, want in zip((dx, dA, dB), ref):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ---- bad input -------------------------------------------------------------------------------------------
def test_bad_nf4_weights_are_refused_naming_what_is_wrong(rng):
    x, A = np.ones((2, 6), np.float32), np.ones((1, 6), np.float32)
    B = np.ones((4, 1), np.float32)
    W = nf4_quantize(rng.standard_normal((4, 6)).astype(np.float32), 8)
    with pytest.raises(ValueError, match=r"W has shape \(4, 6\), expected \(4, 5\)"):
        cpp.forward(x[:, :5].copy(), W, A[:, :5].copy(), B, 1.0)
    with pytest.raises(ValueError, match=r"W must be 2-D"):
        cpp.forward(x, nf4_quantize(np.ones(24, np.float32)), A, B, 1.0)
    broken = nf4_quantize(rng.standard_normal((4, 6)).astype(np.float32), 8)
    broken.packed = broken.packed[:-1]
    with pytest.raises(ValueError, match=r"W.packed must be uint8 of shape \(12,\)"):
        cpp.forward(x, broken, A, B, 1.0)
    broken = nf4_quantize(rng.standard_normal((4, 6)).astype(np.float32), 8)
    broken.absmax = broken.absmax[:2]
    with pytest.raises(ValueError, match=r"W has 2 absmaxes, expected ceil\(24 / block_size 8\) = 3"):
        cpp.forward(x, broken, A, B, 1.0)
    broken = nf4_quantize(rng.standard_normal((4, 6)).astype(np.float32), 8)
    broken.absmax = broken.absmax.astype(np.float64)
    with pytest.raises(ValueError, match=r"W.absmax must be float32 \(as nf4_quantize makes it\), got float64"):
        cpp.forward(x, broken, A, B, 1.0)
    with pytest.raises(TypeError, match=r"A has dtype float16, expected float32 or float64"):
        cpp.forward(x, W, A.astype(np.float16), B, 1.0)
    with pytest.raises(TypeError, match=r"W must be an NF4Tensor here, got ndarray"):
        nf4.operands(np.ones((4, 6), np.float32))


def test_the_compiled_function_guards_its_sizes(rng):
    """The last guard in csrc/bindings.cpp, for a caller that skips minilora.kernels."""
    W = nf4_quantize(rng.standard_normal((4, 6)).astype(np.float32), 8)
    x, A, B = np.ones((2, 6), np.float32), np.ones((1, 6), np.float32), np.ones((4, 1), np.float32)
    y, u = np.empty((2, 4), np.float32), np.empty((2, 1), np.float32)
    args = dict(x=x, packed=W.packed, absmax=W.block_absmax(), code=nf4.NF4_CODE, block_size=8, A=A, B=B,
                scaling=1.0, bias=None, y=y, u=u)
    with pytest.raises(ValueError, match=r"absmax has shape \(3,\), expected \(6,\)"):
        EXTENSION.lora_forward_nf4_cpu(**(args | {"block_size": 4}))
    with pytest.raises(ValueError, match=r"packed has shape \(11,\), expected \(12,\)"):
        EXTENSION.lora_forward_nf4_cpu(**(args | {"packed": W.packed[:11]}))
    with pytest.raises(ValueError, match="block_size must be at least 1, got 0"):
        EXTENSION.lora_forward_nf4_cpu(**(args | {"block_size": 0}))
    with pytest.raises(ValueError, match=r"code has shape \(15,\), expected \(16,\)"):
        EXTENSION.lora_forward_nf4_cpu(**(args | {"code": nf4.NF4_CODE[:15]}))


# ---- the NF4 benchmarks run (they assert no speed) --------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def test_bench_cpu_op_with_nf4_prints_rows_with_the_nf4_default_and_bytes():
    proc = subprocess.run([sys.executable, "benchmarks/bench_cpu_op.py", "--nf4", "--shapes", "3x5x7x2,2x128x128x3",
                           "--repeats", "1", "--isas", "baseline"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if re.match(r"\| \d+×", line)]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [(c[0], c[-2]) for c in cells] == [("3×5×7, 2", "numpy"), ("2×128×128, 3", "cpp")]
    assert cells[1][-1] == "65536 → 8456 (4.129 bits a weight)"


def test_nf4_memory_prints_both_paths():
    proc = subprocess.run([sys.executable, "benchmarks/nf4_memory.py", "--M", "2", "--K", "64", "--N", "96",
                           "--r", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"numpy: peak of NumPy allocations .* MiB", proc.stdout)
    assert re.search(r"cpp: peak of NumPy allocations .* MiB", proc.stdout)
