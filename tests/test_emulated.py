"""Every rung of the CUDA kernel ladder, run on the CPU emulator (minilora.kernels.emulated).

The emulator is compiled from this checkout's csrc/cuda/ and csrc/emulation/ with g++ (cached under
build/emulation/), so these tests check the kernel sources as they are now, on a machine without a
GPU: every rung ("naive", "tiled", "fused", "vectorized", "async", "warp", and the tensor-core rungs
"tf32x3" and "bf16", which take float32 only), forward and backward, float32 and float64, on shapes
that are not multiples of any tile and on shapes that make the plan split an inner dimension
(test_emulated_fast_rungs.py adds what is particular to async and warp, every tile configuration of
warp among it). Each case runs twice, threads and blocks in index order and shuffled, and must be
within accuracy's rounding bound of the float64 reference (minilora.kernels.accuracy; the bf16 rung
on bfloat16 inputs, within the bfloat16 bound) and bit-identical between the two orders. Outputs,
workspace and shared memory start as NaN, so an element never written fails. The tensor-core
instructions themselves are checked against the PTX ISA in test_emulated_mma.py.

Marked `emulated` (`pytest -m emulated` runs these and the mutants of test_emulated_mutants.py);
skipped with the reason only where there is no C++ compiler or no source checkout.
"""

import numpy as np
import pytest

from minilora.kernels import emulated

from lora_shapes import SHAPES

pytestmark = pytest.mark.emulated

DTYPES = [np.float32, np.float64]
# Every rung in every dtype it takes (the tensor-core rungs compute in float32 only).
CASES = [(variant, dtype) for variant in emulated.VARIANTS for dtype in DTYPES
         if variant not in emulated.FLOAT32_ONLY or dtype == np.float32]


def assert_correct(failures):
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "M{}_N{}_K{}_r{}".format(*s))
@pytest.mark.parametrize("variant, dtype", CASES, ids=lambda c: c if isinstance(c, str) else np.dtype(c).name)
def test_rung_matches_reference_in_both_orders(emulator, rng, variant, dtype, shape):
    seed = int(rng.integers(2**32))
    assert_correct(emulated.check_layer(emulator, variant, dtype, *shape, rng, seed=seed))


@pytest.mark.parametrize("variant", emulated.VARIANTS)
def test_forward_without_bias(emulator, rng, variant):
    assert_correct(emulated.check_layer(emulator, variant, np.float32, 33, 17, 21, 4, rng, seed=1,
                                        bias=False))


def test_the_plans_split_where_the_cases_say(emulator):
    """The split shapes above really split (their workspace holds partial sums), and a large-M
    shape really does not, so the second pass and the unsplit path are both exercised."""
    for variant in ("tiled", "fused", "vectorized", "async", "warp", "tf32x3", "bf16"):
        assert emulator.workspace_size(variant, np.float32, 8, 40, 530, 4, backward=False) > 0
        assert emulator.workspace_size(variant, np.float32, 3, 9, 1030, 2, backward=False) > 0
        assert emulator.workspace_size(variant, np.float32, 530, 20, 24, 3, backward=True) > 530 * 3
    assert emulator.workspace_size("fused", np.float32, 129, 128, 19, 3, backward=False) == 0
    assert emulator.workspace_size("naive", np.float32, 8, 40, 530, 4, backward=False) == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(130, 129, 19, 3), (64, 64, 64, 4), (9, 20, 3, 5)],
                         ids=lambda s: "M{}_N{}_K{}_r{}".format(*s))
def test_vectorized_gives_the_bits_of_fused(emulator, rng, dtype, shape):
    """The vectorized rung only loads the same values differently (16 bytes at a time where it can):
    its tiles, and so its sums, are those of the fused rung, bit for bit. Shapes with aligned rows
    (K = 64), unaligned ones (K = 19, 3), and runs across the seam of x and s·u."""
    h, s = emulated.random_layer(rng, *shape, dtype)
    d = {name: a.astype(dtype) for name, a in h.items()}
    outputs = {}
    for variant in ("fused", "vectorized"):
        y, u = emulator.forward(d["x"], d["W"], d["A"], d["B"], s, d["bias"], variant)
        grads = emulator.backward(d["dy"], d["x"], d["W"], d["A"], d["B"], u, s, variant)
        outputs[variant] = (y, u) + tuple(grads)
    for name, fused, vectorized in zip(("y", "u", "dx", "dA", "dB"), outputs["fused"], outputs["vectorized"]):
        assert np.array_equal(fused.view(np.uint8), vectorized.view(np.uint8)), name


# ---- what the emulator itself guarantees -------------------------------------------------------------
def test_each_tiled_thread_writes_its_own_output(emulator, rng):
    """The trace of who wrote y: in the tiled rung, block (bx, by) owns the 16 x 16 tile at rows
    16·bx, columns 16·by, and thread (tx, ty) of it writes row 16·bx + ty, column 16·by + tx."""
    h, s = emulated.random_layer(rng, 20, 35, 6, 2, np.float32)
    d = {name: a.astype(np.float32) for name, a in h.items()}
    y, _, block, thread = emulator.forward_traced(d["x"], d["W"], d["A"], d["B"], s, d["bias"], "tiled")
    rows, cols = np.indices(y.shape)
    grid_x = -(-20 // 16)
    np.testing.assert_array_equal(block, rows // 16 + grid_x * (cols // 16))
    np.testing.assert_array_equal(thread, (rows % 16) * 16 + cols % 16)


def test_each_fused_thread_writes_an_8_by_8_block(emulator, rng):
    """In the fused rung (float32) each of the 256 threads of a block writes 64 elements of y: rows
    in two runs of 4 that are 64 apart, and likewise its columns."""
    h, s = emulated.random_layer(rng, 128, 128, 8, 2, np.float32)
    d = {name: a.astype(np.float32) for name, a in h.items()}
    _, _, block, thread = emulator.forward_traced(d["x"], d["W"], d["A"], d["B"], s, d["bias"], "fused")
    assert (block == 0).all()
    assert np.bincount(thread.ravel(), minlength=256).tolist() == [64] * 256
    rows, cols = np.nonzero(thread == 17)  # tx = 1, ty = 1
    assert sorted(set(rows)) == [4, 5, 6, 7, 68, 69, 70, 71]
    assert sorted(set(cols)) == [4, 5, 6, 7, 68, 69, 70, 71]


def test_a_pass_too_large_for_one_grid_launches_nothing(emulator):
    """The naive rung's grid has cols / 16 blocks along y, at most 65535. A forward with N > 2^20 is
    refused before its first product (u, which alone would fit) is launched; so is a backward with
    K > 2^20 before v."""
    big = 16 * 65535 + 1

    def ones(*shape):
        return np.ones(shape, np.float32)

    before = emulator.launches()
    with pytest.raises(ValueError, match=r"naive_matmul_kernel \(y = x W\^T \+ s u B\^T\).*too large"):
        emulator.forward(ones(1, 1), ones(big, 1), ones(1, 1), ones(big, 1), 1.0, variant="naive")
    with pytest.raises(ValueError, match=r"naive_matmul_kernel \(dx = dy W \+ s v A\).*too large"):
        emulator.backward(ones(1, 1), ones(1, big), ones(1, big), ones(1, big), ones(1, 1), ones(1, 1),
                          1.0, variant="naive")
    assert emulator.launches() == before


def test_bad_arguments_are_refused_before_the_emulator_runs(emulator):
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"variant must be one of .*got 'fast'"):
        emulator.forward(x, x, x, x, 1.0, variant="fast")
    with pytest.raises(TypeError, match=r"W has dtype float64 but x has float32"):
        emulator.forward(x, x.astype(np.float64), x[:1], x[:, :1].copy(), 1.0)


@pytest.mark.parametrize("variant", emulated.FLOAT32_ONLY)
def test_tensor_core_rungs_refuse_float64(emulator, variant):
    """In Python first; and the host code of csrc/cuda refuses it too, before sizing anything."""
    x = np.ones((3, 4))
    with pytest.raises(TypeError, match=rf"variant '{variant}' runs on tensor cores and takes float32 arrays, got float64"):
        emulator.forward(x, x, x[:1], x[:, :1].copy(), 1.0, variant=variant)
    with pytest.raises(ValueError, match=rf"variant '{variant}' runs on tensor cores and takes float32 arrays, got float64"):
        emulator.workspace_size(variant, np.float64, 3, 3, 4, 1, backward=True)
