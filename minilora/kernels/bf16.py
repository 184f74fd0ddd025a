"""bfloat16 values in the arrays NumPy and CuPy have: the representation the "bf16" rung uses.

NumPy and CuPy have no bfloat16 dtype. The bf16 rung of the CUDA ladder (csrc/cuda/lora_mma.cu)
therefore takes and returns ordinary float32 arrays, and rounds every operand to bfloat16 (to
nearest, ties to even) as it stages it for the tensor cores; its products are exact in float32 and
are summed in float32, and its outputs (y, u, dx, dA, dB) are float32. A bfloat16 value is also a
float32 value (the top 16 bits of one), so an array of bf16 values can be kept as float32 exactly:
`round_to_bfloat16` makes such an array, and `to_bfloat16` / `from_bfloat16` convert to and from the
16-bit patterns (uint16), for files or for a library that has the dtype (torch.bfloat16).

The trade-off, for a speed comparison with PyTorch + PEFT's bf16 layer: the rung reads and writes
float32, twice the bytes of a layer stored in bf16. Where the layer is bound by arithmetic (many
tokens) that costs little; where it is bound by reading W (few tokens, e.g. M = 128 with
N = K = 4096: W is 64 MiB in float32 against 32 MiB in bf16) the rung moves twice the bytes PEFT's
does, and its time there says what bf16 arithmetic buys, not what a bf16 layer costs. Keeping
float32 arrays keeps the whole host side (checks, workspace, CuPy outputs, the autograd ops) one
code path for every rung.

Arrays may be NumPy or CuPy; the functions keep the array's module.
"""

import numpy as np

from minilora import backend

# Half a unit in the last place of a bfloat16 significand (8 bits): the relative rounding error.
UNIT_ROUNDOFF = 2.0 ** -8


def to_bfloat16(array):
    """The bfloat16 bit patterns (uint16, same shape) of a float32 array, rounded to nearest with
    ties to even; NaN stays NaN (quiet), ±inf and values past the largest bf16 become ±inf."""
    xp = backend.xp_of(array)
    if array.dtype != np.float32:
        raise TypeError(f"to_bfloat16 takes a float32 array, got {array.dtype}")
    bits = xp.ascontiguousarray(array).view(xp.uint32)
    rounded = (bits + xp.uint32(0x7FFF) + ((bits >> 16) & xp.uint32(1))) >> 16
    nan = xp.isnan(array)
    quiet_nan = (bits >> 16) | xp.uint32(0x0040)
    return xp.where(nan, quiet_nan, rounded).astype(xp.uint16)


def from_bfloat16(bits):
    """float32 values (exact) of bfloat16 bit patterns given as a uint16 array."""
    xp = backend.xp_of(bits)
    if bits.dtype != np.uint16:
        raise TypeError(f"from_bfloat16 takes a uint16 array of bfloat16 bits, got {bits.dtype}")
    return (bits.astype(xp.uint32) << 16).view(xp.float32)


def round_to_bfloat16(array):
    """A float32 array rounded to the nearest bfloat16 values (ties to even), still float32."""
    return from_bfloat16(to_bfloat16(array))
