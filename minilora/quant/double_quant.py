"""Double quantization: the block scales of NF4, themselves stored in 8 bits.

With blocks of 64, one float32 absmax per block costs 32/64 = 0.5 bits per weight. QLoRA
(section 3, "Double Quantization") quantizes those absmaxes c₂ a second time, in blocks of 256,
to 8 bits with one float32 scale c₁ per block of 256:
    8/64 + 32/(64·256) = 0.127 bits per weight, so NF4 costs about 4.127 bits instead of 4.5.
"Since the c₂ are positive, we subtract the mean from c₂ before quantization to center the values
around zero and make use of symmetric quantization" (the paper); bitsandbytes does the same
(`offset = absmax.mean()` before `quantize_blockwise`), so one more float32, the mean, is stored.

What minilora picks where the paper and bitsandbytes differ in detail: the 8-bit code. The paper
says "8-bit Floats", bitsandbytes uses its dynamic 8-bit map; minilora uses plain symmetric
int8 (round(127 · c / max|c|) per block of 256), which a student can read in one line. The storage
is the same (8 bits per absmax, one float32 per 256 absmaxes); the rounding of the absmaxes is
a little coarser near zero than the dynamic map's.
"""

import numpy as np

from minilora import backend

BLOCKS_PER_SCALE = 256   # absmaxes that share one float32 scale
LEVELS = 127             # symmetric int8: -127..127


class QuantizedAbsmax:
    """NF4's per-block absmaxes in 8 bits.

    codes: int8 (n,), round(127 · (absmax - mean) / scale of its group of 256).
    scales: float32 (ceil(n / 256),), max |absmax - mean| of each group of 256.
    mean: float32 scalar, the mean of all absmaxes (subtracted first, as QLoRA and bitsandbytes do).
    """

    def __init__(self, codes, scales, mean):
        self.codes = codes
        self.scales = scales
        self.mean = np.float32(mean)

    @classmethod
    def quantize(cls, absmax):
        """absmax: float32 (n,) -> QuantizedAbsmax."""
        mean = np.float32(absmax.mean(dtype=np.float64))
        centered = absmax - mean
        n = centered.size
        groups = np.concatenate([centered, np.zeros((-n) % BLOCKS_PER_SCALE, np.float32)]).reshape(
            -1, BLOCKS_PER_SCALE)
        scales = np.abs(groups).max(axis=1).astype(np.float32)
        safe = np.where(scales > 0, scales, 1)[:, None]   # a group with every absmax equal: codes 0
        codes = np.rint(groups / safe * LEVELS).astype(np.int8).reshape(-1)[:n]
        return cls(codes, scales, mean)

    def to(self, device):
        """This QuantizedAbsmax with its arrays on `device` ("cpu" or "cuda")."""
        return QuantizedAbsmax(backend.to_device(self.codes, device), backend.to_device(self.scales, device),
                               self.mean)

    def dequantize(self):
        """float32 (n,): the absmaxes back, mean + code / 127 · scale (on the arrays' device)."""
        scale = backend.xp_of(self.scales).repeat(self.scales, BLOCKS_PER_SCALE)[: self.codes.size]
        return (self.mean + self.codes.astype(np.float32) * (scale / np.float32(LEVELS))).astype(np.float32)

    @property
    def nbytes(self):
        return int(self.codes.nbytes + self.scales.nbytes + self.mean.nbytes)
