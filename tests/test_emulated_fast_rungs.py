"""The async and warp rungs on the CPU emulator, beyond the ladder-wide tests of test_emulated.py:
what is particular to them.

- async (csrc/cuda/lora_async.cu) keeps the fused rung's blocking and adds its products in the same
  order, so its results are the fused rung's bits; only the copies into shared memory change
  (cp.async, which the emulator makes only when the copying thread waits for them: a kernel that
  reads a tile before its wait and barrier reads NaN or a stale tile).
- warp (csrc/cuda/lora_warp.cu) runs each product with one of a few tile configurations: every one
  of them is checked against the reference here (a few shapes each, with the configuration pinned
  by MINILORA_WARP_TILES), the choice per shape is checked against the rule the file states, and
  the trace of who writes what shows each warp owning its own sub-tile.

Marked `emulated`, like test_emulated.py (the `emulator` fixture is conftest.py's).
"""

import numpy as np
import pytest

from minilora.kernels import cuda as cuda_kernels
from minilora.kernels import emulated

pytestmark = pytest.mark.emulated

# Each warp configuration's tiles (64 and 128 rows and columns) plus one, and a split inner
# dimension with a glued seam that is not 16-byte aligned.
CONFIG_SHAPES = [(129, 130, 19, 3), (8, 40, 530, 4)]
WARP_TILES = ("128x128x8/32x64/8x8", "128x64x8/32x64/8x8", "64x128x8/32x64/8x8", "64x64x8/32x32/8x4")


def run_layer(emulator, variant, d, s):
    y, u = emulator.forward(d["x"], d["W"], d["A"], d["B"], s, d["bias"], variant)
    grads = emulator.backward(d["dy"], d["x"], d["W"], d["A"], d["B"], u, s, variant, shuffle=3)
    return (y, u) + tuple(grads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(130, 129, 19, 3), (64, 64, 64, 4), (9, 20, 3, 5)],
                         ids=lambda s: "M{}_N{}_K{}_r{}".format(*s))
def test_async_gives_the_bits_of_fused(emulator, rng, dtype, shape):
    """Same tiles, same order of the products: aligned rows (K = 64) where whole 16-byte runs are
    copied, unaligned ones (K = 19, 3) copied element by element, and the seam of x and s·u."""
    h, s = emulated.random_layer(rng, *shape, dtype)
    d = {name: a.astype(dtype) for name, a in h.items()}
    fused, asynchronous = run_layer(emulator, "fused", d, s), run_layer(emulator, "async", d, s)
    for name, a, b in zip(("y", "u", "dx", "dA", "dB"), fused, asynchronous):
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), name


def test_the_warp_configurations_are_the_ones_listed(emulator):
    assert emulator.warp_tiles() == WARP_TILES


@pytest.mark.parametrize("shape", CONFIG_SHAPES, ids=lambda s: "M{}_N{}_K{}_r{}".format(*s))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("tiles", WARP_TILES)
def test_every_warp_configuration_matches_the_reference(emulator, rng, monkeypatch, tiles, dtype, shape):
    monkeypatch.setenv(cuda_kernels.WARP_TILES_VARIABLE, tiles)
    assert emulator.warp_tiles_for(*shape[:2]) == tiles
    failures = emulated.check_layer(emulator, "warp", dtype, *shape, rng, seed=int(rng.integers(2**32)))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("rows, cols, expected", [
    (8192, 4096, "128x128x8/32x64/8x8"),  # 64 x 32 = 2048 blocks of 128 x 128
    (2048, 2048, "128x128x8/32x64/8x8"),  # exactly 256
    (1024, 2048, "128x64x8/32x64/8x8"),   # 128 of 128 x 128; 8 x 32 = 256 of 128 x 64
    (2048, 1000, "128x64x8/32x64/8x8"),   # 16 x 8 = 128; 16 x 16 = 256
    (1024, 1024, "64x64x8/32x32/8x4"),    # 128 of 128 x 64 or 64 x 128; 256 of 64 x 64
    (128, 4096, "64x64x8/32x32/8x4"),     # 128 of 64 x 64, the most there is: split plan fills the rest
    (1, 1, "64x64x8/32x32/8x4"),
])
def test_the_warp_tiles_are_the_largest_that_fill_the_gpu(emulator, monkeypatch, rows, cols, expected):
    """The rule of lora_warp.cu: the first (largest) configuration whose grid has at least 256
    blocks, else the smallest."""
    monkeypatch.delenv(cuda_kernels.WARP_TILES_VARIABLE, raising=False)
    assert emulator.warp_tiles_for(rows, cols) == expected


def test_a_pinned_configuration_must_exist(emulator, monkeypatch):
    monkeypatch.setenv(cuda_kernels.WARP_TILES_VARIABLE, "256x256")
    with pytest.raises(ValueError, match=r"MINILORA_WARP_TILES is '256x256', expected one of "
                                         r"'128x128x8/32x64/8x8', "):
        emulator.warp_tiles_for(8, 8)
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="MINILORA_WARP_TILES is '256x256'"):
        emulator.forward(x, x, x[:1], x[:, :1].copy(), 1.0, variant="warp")


def test_each_warp_writes_its_own_32_by_64_tile(emulator, rng, monkeypatch):
    """In "128x128x8/32x64/8x8" warp w of the block's 8 owns rows 32·(w // 2) to 32·(w // 2) + 31,
    columns 64·(w % 2) to 64·(w % 2) + 63 of y; lane l of it (4 x 8 lanes) owns rows 4·(l // 8)
    + {0..3} + {0, 16} of that, and columns 4·(l % 8) + {0..3} + {0, 32}."""
    monkeypatch.setenv(cuda_kernels.WARP_TILES_VARIABLE, WARP_TILES[0])
    h, s = emulated.random_layer(rng, 128, 128, 8, 2, np.float32)
    d = {name: a.astype(np.float32) for name, a in h.items()}
    _, _, block, thread = emulator.forward_traced(d["x"], d["W"], d["A"], d["B"], s, d["bias"], "warp")
    assert (block == 0).all()
    rows, cols = np.indices(thread.shape)
    warp, lane = thread // 32, thread % 32
    np.testing.assert_array_equal(warp, (rows // 32) * 2 + cols // 64)
    np.testing.assert_array_equal(lane // 8, (rows % 16) // 4)
    np.testing.assert_array_equal(lane % 8, (cols % 32) // 4)


def test_the_gpu_build_lists_the_same_configurations(emulator, monkeypatch):
    """minilora._C (built by nvcc, no GPU needed to ask it) and the emulator compile one table."""
    _C = pytest.importorskip("minilora._C", reason="minilora._C is not built here")
    if not _C.with_cuda:
        pytest.skip("minilora._C was built without CUDA")
    monkeypatch.delenv(cuda_kernels.WARP_TILES_VARIABLE, raising=False)
    assert cuda_kernels.warp_tiles(1024, 2048) == (WARP_TILES, "128x64x8/32x64/8x8")
    monkeypatch.setenv(cuda_kernels.WARP_TILES_VARIABLE, "nope")
    with pytest.raises(ValueError, match="MINILORA_WARP_TILES is 'nope'"):
        cuda_kernels.warp_tiles()
