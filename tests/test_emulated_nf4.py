"""The CUDA "nf4" rung (csrc/cuda/lora_nf4.cu: W in NF4, dequantized by the tile loader into shared
memory) on the CPU emulator, against the float64 reference on W dequantized (kernels/nf4_check.py).

Every case runs in index order and shuffled, must be within accuracy's rounding bound and must
give the same bits in both orders; outputs, workspace and shared memory start as NaN. Shapes are
the other rungs' awkward ones (tests/lora_shapes.py: M = 1, K = 3, r = 1, odd N, split inner
dimensions), with blocks of 7 (ending mid-row, an odd number of weights per block) and 64, plain and
double-quantized absmaxes. Its mutants are in test_emulated_mutants.py.
"""

import numpy as np
import pytest

from minilora.kernels import emulated, emulated_nf4, nf4_check

from lora_shapes import SHAPES

pytestmark = pytest.mark.emulated


@pytest.fixture(scope="module")
def emulator():
    try:
        return emulated.load()
    except emulated.EmulatorUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "M{}_N{}_K{}_r{}".format(*s))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_nf4_rung_matches_reference_in_both_orders(emulator, rng, dtype, shape):
    block_size = 7 if sum(shape) % 2 else 64
    failures = emulated_nf4.check_layer(emulator, dtype, *shape, rng, block_size, double_quant=dtype == np.float32,
                                        seed=int(rng.integers(2**32)))
    assert not failures, "\n".join(failures)


def test_forward_without_bias(emulator, rng):
    failures = emulated_nf4.check_layer(emulator, np.float32, 33, 17, 21, 4, rng, 16, bias=False, seed=1)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("shape", [(17, 33, 19, 5), (8, 40, 530, 4), (530, 20, 24, 3)],
                         ids=lambda s: "M{}_N{}_K{}_r{}".format(*s))
def test_nf4_gives_the_bits_of_tiled_on_the_dequantized_weight(emulator, rng, shape):
    """The nf4 rung is the tiled rung with another loader for W: same tiles, plans and order of
    sums, so on Ŵ = W.dequantize() the tiled rung gives every output bit for bit (split shapes
    included, where a second pass adds partial sums)."""
    a, s, _ = nf4_check.random_layer(rng, *shape, np.float32, 64)
    W_hat = a["W"].dequantize()
    quantized = emulated_nf4.forward(emulator, a["x"], a["W"], a["A"], a["B"], s, a["bias"]) + \
        emulated_nf4.backward(emulator, a["dy"], a["x"], a["W"], a["A"], a["B"], a["u"], s)
    tiled = emulator.forward(a["x"], W_hat, a["A"], a["B"], s, a["bias"], "tiled") + \
        emulator.backward(a["dy"], a["x"], W_hat, a["A"], a["B"], a["u"], s, "tiled")
    for name, q, t in zip(nf4_check.NAMES, quantized, tiled):
        assert np.array_equal(q.view(np.uint8), t.view(np.uint8)), name


def test_the_nf4_variant_and_a_float_weight_do_not_mix(emulator):
    """The host code (lora_layer.cu) refuses the nf4 variant without an NF4 W, before any launch."""
    x = np.ones((3, 4), np.float32)
    ptr = x.ctypes.data
    y, u = np.empty((3, 4), np.float32), np.empty((3, 4), np.float32)
    before = emulator.launches()
    with pytest.raises(ValueError, match="the 'nf4' variant needs W in NF4"):
        emulator._call(emulator._lib.minilora_emulated_forward, b"nf4", 0, ptr, ptr, ptr, ptr, None,
                       y.ctypes.data, u.ctypes.data, None, 0, 3, 4, 4, 3, 1.0)
    assert emulator.launches() == before
