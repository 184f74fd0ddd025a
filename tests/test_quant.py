"""NF4 (minilora.quant) against the QLoRA definition, computed here independently:

    the 16 levels: quantiles of N(0, 1) (bitsandbytes' create_normal_map recipe, rebuilt with the
        standard library's inverse normal CDF), scaled to [-1, 1], with an exact 0;
    blockwise: per block of the flattened array, absmax = max |w|, index = nearest level to w/absmax
        (found here by brute force over the 16 levels), two indices per byte (high nibble first);
    double quantization: the absmaxes minus their mean, 8 bits each, one float32 per 256 blocks.
"""

import math
import statistics

import numpy as np
import pytest

from minilora.quant import NF4_CODE, NF4Tensor, QuantizedAbsmax, nf4_quantize
from minilora.quant.nf4 import pack_nibbles, unpack_nibbles

PUBLISHED = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
             -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
             0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
             0.7229568362236023, 1.0]


# ---- the 16 levels ---------------------------------------------------------------------------------
def test_the_code_is_the_published_one_and_read_only():
    assert NF4_CODE.dtype == np.float32 and NF4_CODE.shape == (16,)
    np.testing.assert_array_equal(NF4_CODE, np.array(PUBLISHED, dtype=np.float32))
    with pytest.raises(ValueError):
        NF4_CODE[0] = 0.5


def test_the_code_is_made_of_normal_quantiles():
    """8 positive and 7 negative quantiles of N(0, 1) between probability 1 - 0.0323 and 1/2,
    an exact zero, everything divided by the largest: the QLoRA paper's construction."""
    inv = statistics.NormalDist().inv_cdf
    offset = 0.9677083
    positive = [inv(p) for p in np.linspace(offset, 0.5, 9)[:-1]]
    negative = [-inv(p) for p in np.linspace(offset, 0.5, 8)[:-1]]
    levels = np.sort(np.array(positive + [0.0] + negative))
    levels /= levels.max()
    np.testing.assert_allclose(NF4_CODE, levels, rtol=0, atol=3e-7)   # float32 rounding of the table
    assert (NF4_CODE > 0).sum() == 8 and (NF4_CODE < 0).sum() == 7 and NF4_CODE[7] == 0.0


# ---- blockwise quantization ---------------------------------------------------------------------
def brute_force(array, block_size):
    """(indices, absmax) by the definition: per block, the level nearest to w / absmax."""
    flat = array.reshape(-1).astype(np.float32)
    indices, absmax = [], []
    for start in range(0, flat.size, block_size):
        block = flat[start:start + block_size]
        a = np.abs(block).max()
        normalized = block / a if a > 0 else block
        indices.append(np.abs(normalized[:, None] - NF4_CODE[None, :].astype(np.float64)).argmin(axis=1))
        absmax.append(a)
    return np.concatenate(indices), np.array(absmax, dtype=np.float32)


@pytest.mark.parametrize("shape, block_size", [((7, 9), 64), ((5, 13), 8), ((1,), 64), ((3, 4, 5), 6),
                                               ((128, 3), 64)])
def test_indices_and_absmax_follow_the_definition(rng, shape, block_size):
    array = rng.standard_normal(shape) * rng.uniform(0.01, 3)
    q = nf4_quantize(array, block_size)
    indices, absmax = brute_force(array, block_size)
    np.testing.assert_array_equal(q.indices(), indices)
    np.testing.assert_array_equal(q.block_absmax(), absmax)
    assert q.absmax.dtype == np.float32 and q.absmax.shape == (math.ceil(array.size / block_size),)
    expected = (NF4_CODE[indices] * np.repeat(absmax, block_size)[: array.size]).reshape(shape)
    out = q.dequantize()
    assert out.shape == shape and out.dtype == array.dtype
    np.testing.assert_array_equal(out, expected.astype(array.dtype))


def test_the_error_is_at_most_half_the_widest_gap_times_absmax(rng):
    array = rng.standard_normal((33, 31)).astype(np.float32)
    q = nf4_quantize(array, 16)
    half_gap = np.diff(NF4_CODE.astype(np.float64)).max() / 2
    scale = np.repeat(q.block_absmax(), 16)[: array.size].reshape(array.shape)
    assert np.all(np.abs(q.dequantize() - array) <= half_gap * scale * (1 + 1e-6))
    # every block keeps its largest number exactly (it maps to ±1)
    flat, out = array.reshape(-1), q.dequantize().reshape(-1)
    for start in range(0, flat.size, 16):
        k = start + np.abs(flat[start:start + 16]).argmax()
        assert out[k] == flat[k]


def test_a_zero_block_stays_zero_and_a_constant_block_is_exact():
    array = np.concatenate([np.zeros(8), np.full(8, -2.5), np.arange(8.0)]).astype(np.float32)
    out = nf4_quantize(array, 8).dequantize()
    np.testing.assert_array_equal(out[:16], array[:16])
    assert np.all(np.isfinite(out))


def test_two_indices_per_byte_high_nibble_first(rng):
    indices = rng.integers(0, 16, size=11).astype(np.uint8)
    packed = pack_nibbles(indices)
    assert packed.dtype == np.uint8 and packed.shape == (6,)
    assert packed[0] == indices[0] * 16 + indices[1] and packed[5] == indices[10] * 16 + 7  # 7: 0.0
    np.testing.assert_array_equal(unpack_nibbles(packed, 11), indices)
    q = nf4_quantize(rng.standard_normal((3, 5)), 4)
    assert q.packed.shape == (8,)
    np.testing.assert_array_equal(q.packed, pack_nibbles(q.indices()))


# ---- double quantization and storage ------------------------------------------------------------
def test_double_quant_subtracts_the_mean_and_keeps_8_bits_per_block(rng):
    # absmaxes near 1 with a small spread: without the mean taken out, 8 bits over [0, 1.01] would
    # round them to steps of about 1/127; centred, the steps are about 0.01/127
    absmax = (1.0 + 0.01 * rng.uniform(-1, 1, 600)).astype(np.float32)
    dq = QuantizedAbsmax.quantize(absmax)
    assert dq.codes.dtype == np.int8 and dq.codes.shape == (600,)
    assert dq.scales.dtype == np.float32 and dq.scales.shape == (3,)   # one float32 per 256 blocks
    assert dq.mean == pytest.approx(absmax.mean(dtype=np.float64), rel=1e-6)
    centred = absmax.astype(np.float64) - dq.mean
    for g in range(3):
        assert dq.scales[g] == pytest.approx(np.abs(centred[256 * g:256 * (g + 1)]).max(), rel=1e-6)
    error = np.abs(dq.dequantize() - absmax)
    half_step = np.repeat(dq.scales, 256)[:600] / 127 / 2
    assert np.all(error <= half_step + 2e-7)              # + float32 rounding near 1
    assert error.max() < (1.01 / 127 / 2) / 20           # far below the uncentred step
    assert dq.nbytes == 600 + 3 * 4 + 4


@pytest.mark.parametrize("size, block_size", [(64 * 512, 64), (1000, 64), (77, 8), (5, 64)])
def test_nbytes_counts_what_is_stored(rng, size, block_size):
    array = rng.standard_normal(size)
    blocks = math.ceil(size / block_size)
    plain, double = nf4_quantize(array, block_size), nf4_quantize(array, block_size, double_quant=True)
    assert plain.nbytes == math.ceil(size / 2) + 4 * blocks
    assert double.nbytes == math.ceil(size / 2) + blocks + 4 * math.ceil(blocks / 256) + 4
    assert double.double_quant and not plain.double_quant
    assert plain.bits_per_parameter == 8 * plain.nbytes / size


def test_qlora_bits_per_parameter():
    """4 + 32/64 = 4.5 bits with one float32 per block of 64; 4 + 8/64 + 32/(64·256) ≈ 4.127 with
    double quantization (QLoRA, section 3), up to the one float32 mean."""
    array = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
    assert nf4_quantize(array).bits_per_parameter == pytest.approx(4.5)
    assert nf4_quantize(array, double_quant=True).bits_per_parameter == pytest.approx(
        4 + 8 / 64 + 32 / (64 * 256) + 32 / array.size)


def test_double_quant_changes_the_weights_only_by_the_absmax_rounding(rng):
    array = rng.standard_normal((40, 64)).astype(np.float32)
    plain, double = nf4_quantize(array), nf4_quantize(array, double_quant=True)
    np.testing.assert_array_equal(plain.indices(), double.indices())
    ratio = double.block_absmax() / plain.block_absmax()
    spread = np.abs(plain.block_absmax() - plain.block_absmax().mean()).max()
    assert np.all(np.abs(ratio - 1) <= spread / 127 / plain.block_absmax() + 1e-6)


# ---- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("array, kwargs, error, words", [
    ([1.0, 2.0], {}, TypeError, "NumPy array"),
    (np.arange(4), {}, TypeError, "floating"),
    (np.zeros((0, 3)), {}, ValueError, "at least one"),
    (np.ones(4), {"block_size": 1}, ValueError, "block_size"),
    (np.ones(4), {"block_size": 2.0}, ValueError, "block_size"),
    (np.ones(4), {"double_quant": 1}, TypeError, "double_quant"),
    (np.array([1.0, np.nan]), {}, ValueError, "NaN"),
    (np.array([1.0, -1e300]), {}, ValueError, r"magnitude 1e\+300, expected at most 3\.40282e\+38"),
])
def test_bad_input_is_named(array, kwargs, error, words):
    with pytest.raises(error, match=words):
        nf4_quantize(array, **kwargs)


def test_dequantize_and_astype_give_float32_or_float64():
    q = nf4_quantize(np.linspace(-1, 1, 10).astype(np.float32), 4)
    wide = q.astype("float64")
    assert wide.dtype == np.float64 and wide.packed is q.packed and q.dtype == np.float32
    np.testing.assert_array_equal(wide.dequantize(), q.dequantize().astype(np.float64))
    with pytest.raises(TypeError, match="dequantize\\(dtype\\) must be float32 or float64, got int8"):
        q.dequantize("int8")
    with pytest.raises(TypeError, match="astype\\(dtype\\) must be float32 or float64, got float16"):
        q.astype(np.float16)


def test_repr_says_what_it_costs():
    q = nf4_quantize(np.ones((4, 64), dtype=np.float32), 64)
    assert isinstance(q, NF4Tensor) and "(4, 64)" in repr(q) and "4.500 bits" in repr(q)
