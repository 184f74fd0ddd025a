"""NF4 against bitsandbytes, the library QLoRA ships with: the same 16 levels, the same packed
bytes and the same absmax per block; with double quantization the same mean taken out and the
same storage. Skipped where torch or bitsandbytes is not installed (neither is a dependency of
minilora; `pip install torch bitsandbytes` to run these on a CPU).

Where the two differ by design: the 8-bit code of the double-quantized absmaxes (bitsandbytes'
dynamic map, minilora's symmetric int8; see minilora/quant/double_quant.py), so only the storage
and the mean are compared there, and the absmax error is bounded instead.
"""

import numpy as np
import pytest

from minilora.quant import NF4_CODE, nf4_quantize

torch = pytest.importorskip("torch", reason="torch is not installed (only this comparison needs it)")
bnb = pytest.importorskip("bitsandbytes.functional", reason="bitsandbytes is not installed "
                          "(only this comparison needs it)")


def test_the_16_levels_are_bitsandbytes_nf4():
    np.testing.assert_array_equal(bnb.get_4bit_type("nf4", device="cpu").numpy(), NF4_CODE)


@pytest.mark.parametrize("shape, block_size", [((64, 128), 64), ((33, 96), 64), ((256, 512), 128),
                                               ((40, 64), 32), ((7, 9), 64)])
def test_packed_bytes_and_absmax_equal_bitsandbytes(rng, shape, block_size):
    W = rng.standard_normal(shape).astype(np.float32)
    packed, state = bnb.quantize_4bit(torch.from_numpy(W), blocksize=block_size, quant_type="nf4",
                                      compress_statistics=False)
    ours = nf4_quantize(W, block_size)
    np.testing.assert_array_equal(packed.numpy().reshape(-1), ours.packed)
    np.testing.assert_array_equal(state.absmax.numpy(), ours.absmax)
    if W.size % block_size == 0:   # (bitsandbytes' CPU dequantization is off for a partial last block)
        np.testing.assert_array_equal(bnb.dequantize_4bit(packed, state).numpy(), ours.dequantize())


def test_double_quant_takes_out_the_same_mean_and_stores_as_much(rng):
    W = rng.standard_normal((300, 256)).astype(np.float32)
    packed, state = bnb.quantize_4bit(torch.from_numpy(W), blocksize=64, quant_type="nf4",
                                      compress_statistics=True)
    ours = nf4_quantize(W, 64, double_quant=True)
    np.testing.assert_array_equal(packed.numpy().reshape(-1), ours.packed)
    assert float(ours.absmax.mean) == pytest.approx(float(state.offset), rel=1e-6)
    theirs_bytes = packed.numel() + state.absmax.numel() + 4 * state.state2.absmax.numel() + 4
    assert ours.nbytes == theirs_bytes
    exact = nf4_quantize(W, 64).absmax
    theirs = bnb.dequantize_blockwise(state.absmax, state.state2).numpy() + float(state.offset)
    assert np.abs(ours.block_absmax() - exact).max() <= np.abs(theirs - exact).max() * 1.5
