"""NF4, QLoRA's 4-bit NormalFloat: 16 levels placed for normally distributed weights.

Where it sits: `LoRAConfig(base_quant="nf4")` stores the frozen base weights this way
(minilora/quant/linear.py); the fused LoRA op dequantizes them when it runs (minilora/kernels).

Blockwise quantization (Dettmers et al., "QLoRA", 2023, section 3): flatten the array (row-major),
cut it into blocks of `block_size` numbers (the last one may be shorter), and for each block
    absmax = max |w|                        one float32 per block
    index  = the NF4 level nearest w/absmax  4 bits per number, two numbers per byte
Dequantizing is one table look-up and one multiply: w ≈ NF4_CODE[index] · absmax.

The 16 levels are quantiles of N(0, 1), scaled into [-1, 1], with an exact zero: 8 on the positive
side and 7 on the negative side (an asymmetric code, so that 0 is a level). These are the values
bitsandbytes ships (its `create_normal_map(offset=0.9677083)`); tests/test_quant.py rebuilds them
from the normal distribution's inverse CDF.

Packing follows bitsandbytes too: element 2j goes into the high nibble of byte j, element 2j + 1
into the low nibble (an odd count fills the last low nibble with 7, the index of 0.0, which is
what bitsandbytes' zero padding quantizes to).
"""

import numpy as np

from minilora import backend
from minilora.quant.double_quant import QuantizedAbsmax

NF4_CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)
NF4_CODE.setflags(write=False)
ZERO_INDEX = 7  # NF4_CODE[7] == 0.0

# A number goes to the nearest level: the thresholds are the midpoints between neighbours
# (bitsandbytes' decision tree compares against the same midpoints, a tie going to the lower level).
_MIDPOINTS = (NF4_CODE[:-1].astype(np.float64) + NF4_CODE[1:]) / 2


class NF4Tensor:
    """An array stored in NF4: 4-bit indices, two per byte, and one absmax per block.

    shape, dtype: those of the original array (dequantize gives them back).
    packed: uint8 (ceil(size / 2),), the indices into NF4_CODE, two per byte.
    absmax: float32 (n_blocks,) with n_blocks = ceil(size / block_size), or a QuantizedAbsmax
        (8 bits per block plus one float32 per 256 blocks) with double quantization.
    block_size: how many consecutive numbers (of the flattened array) share one absmax.

    The arrays are NumPy arrays, or CuPy arrays after .to("cuda") (model.to("cuda") moves an NF4
    base this way); quantizing itself runs on the CPU.

    A compiled kernel that dequantizes tiles as it loads them needs exactly `packed`,
    `block_absmax()` (float32 per block: with double quantization that is a cheap pass over
    size / block_size numbers, done once before the kernel runs) and `block_size`: element (n, k)
    of a W (N, K) is number i = n·K + k, its index is the high nibble of packed[i // 2] when i is
    even and the low one when odd, and its scale is block_absmax()[i // block_size].
    """

    def __init__(self, packed, absmax, shape, dtype, block_size):
        self.packed = packed
        self.absmax = absmax
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.block_size = block_size

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def device(self):
        """"cpu" (NumPy arrays) or "cuda" (CuPy arrays)."""
        return backend.device_of(self.packed)

    def to(self, device):
        """This NF4Tensor with its arrays on `device` ("cpu" or "cuda"); itself if they are there."""
        device = backend.check_device(device)
        if device == self.device:
            return self
        move = lambda a: backend.to_device(a, device)  # noqa: E731
        absmax = self.absmax.to(device) if self.double_quant else move(self.absmax)
        return NF4Tensor(move(self.packed), absmax, self.shape, self.dtype, self.block_size)

    def astype(self, dtype):
        """This NF4Tensor dequantizing to `dtype` (float32 or float64), sharing its 4-bit data."""
        dtype = backend.parse_float_dtype(dtype, "NF4Tensor.astype(dtype)")
        return NF4Tensor(self.packed, self.absmax, self.shape, dtype, self.block_size)

    @property
    def double_quant(self):
        return isinstance(self.absmax, QuantizedAbsmax)

    @property
    def nbytes(self):
        """Bytes of storage: the packed indices and the block scales (and their own scales)."""
        return int(self.packed.nbytes + self.absmax.nbytes)

    @property
    def bits_per_parameter(self):
        return 8.0 * self.nbytes / self.size

    def block_absmax(self):
        """The absmax of every block as float32 (n_blocks,), undoing double quantization if used."""
        return self.absmax.dequantize() if self.double_quant else self.absmax

    def indices(self):
        """The 4-bit indices into NF4_CODE as uint8 (size,), unpacked."""
        return unpack_nibbles(self.packed, self.size)

    def dequantize(self, dtype=None):
        """The array back, NF4_CODE[index] · absmax, with the original shape, in `dtype` (default:
        the original dtype). The levels and scales are float32, so float64 adds no precision."""
        dtype = self.dtype if dtype is None else backend.parse_float_dtype(dtype, "dequantize(dtype)")
        xp = backend.xp_of(self.packed)
        values = xp.asarray(NF4_CODE)[self.indices()]                            # (size,) float32
        scale = xp.repeat(self.block_absmax(), self.block_size)[: self.size]      # (size,) float32
        return (values * scale).astype(dtype, copy=False).reshape(self.shape)

    def __repr__(self):
        dq = ", double_quant" if self.double_quant else ""
        return (f"NF4Tensor(shape={self.shape}, block_size={self.block_size}{dq}, "
                f"{self.nbytes} bytes = {self.bits_per_parameter:.3f} bits per number)")


def nf4_quantize(array, block_size=64, double_quant=False):
    """Quantize `array` (a NumPy float array of any shape, at least one number) to NF4.

    block_size: numbers per absmax (an int >= 2; QLoRA uses 64).
    double_quant: also quantize the absmaxes to 8 bits, one float32 scale per 256 blocks
        (QLoRA's double quantization; see double_quant.py).
    Returns an NF4Tensor; .dequantize() gives back an array of the same shape and dtype.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"nf4_quantize needs a NumPy array, got {type(array).__name__} (a CuPy array: "
                        "bring it to the CPU with .get() first, then move the result with .to('cuda'))")
    if array.dtype.kind != "f":
        raise TypeError(f"nf4_quantize needs a floating array, got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"nf4_quantize needs at least one number, got shape {array.shape}")
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 2:
        raise ValueError(f"block_size must be an int >= 2, got {block_size!r}")
    if not isinstance(double_quant, bool):
        raise TypeError(f"double_quant must be True or False, got {double_quant!r}")
    if not np.isfinite(array).all():
        raise ValueError("nf4_quantize: the array holds NaN or inf, which have no NF4 level")
    largest, float32_max = float(np.abs(array).max()), float(np.finfo(np.float32).max)
    if largest > float32_max:  # the block scales are float32: this one would be inf
        raise ValueError(f"nf4_quantize: the array holds a value of magnitude {largest:.6g}, expected at most "
                         f"{float32_max:.6g} (float32's largest; the block scales are float32)")
    block_size = int(block_size)
    flat = array.reshape(-1).astype(np.float32)
    blocks = _pad_to(flat, block_size).reshape(-1, block_size)               # (n_blocks, block_size)
    absmax = np.abs(blocks).max(axis=1)                                      # (n_blocks,) float32
    # An all-zero block has absmax 0; dividing by 1 instead maps it to ZERO_INDEX (exactly 0).
    normalized = blocks / np.where(absmax > 0, absmax, 1)[:, None]
    indices = np.searchsorted(_MIDPOINTS, normalized.reshape(-1)[: flat.size]).astype(np.uint8)
    scales = QuantizedAbsmax.quantize(absmax) if double_quant else absmax
    return NF4Tensor(pack_nibbles(indices), scales, array.shape, array.dtype, block_size)


def pack_nibbles(indices):
    """uint8 (n,) values in [0, 16) -> uint8 (ceil(n / 2),): element 2j high nibble, 2j + 1 low;
    an odd n is padded with ZERO_INDEX."""
    padded = np.append(indices, np.uint8(ZERO_INDEX)) if indices.size % 2 else indices
    return (padded[0::2] << 4) | padded[1::2]


def unpack_nibbles(packed, n):
    """The inverse of pack_nibbles: uint8 (n,)."""
    pairs = backend.xp_of(packed).empty((packed.size, 2), dtype=np.uint8)
    pairs[:, 0] = packed >> 4
    pairs[:, 1] = packed & 0x0F
    return pairs.reshape(-1)[:n]


def _pad_to(flat, multiple):
    """`flat` with zeros appended up to a multiple of `multiple`."""
    extra = (-flat.size) % multiple
    return np.concatenate([flat, np.zeros(extra, dtype=flat.dtype)]) if extra else flat
