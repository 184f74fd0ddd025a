"""minilora.quant: QLoRA's 4-bit NormalFloat (NF4) storage for frozen base weights.

    nf4.py           NF4_CODE (the 16 levels), nf4_quantize -> NF4Tensor (.dequantize(), .nbytes)
    double_quant.py  the block absmaxes themselves in 8 bits (QLoRA's double quantization)
    linear.py        NF4Linear: a frozen Linear whose weight is an NF4Tensor

    q = nf4_quantize(W, block_size=64, double_quant=True)   # W: a NumPy float array
    q.nbytes, q.bits_per_parameter                          # about 4.127 bits a number
    W_hat = q.dequantize()                                  # same shape and dtype as W
"""

from minilora.quant.double_quant import QuantizedAbsmax
from minilora.quant.linear import NF4Linear
from minilora.quant.nf4 import NF4_CODE, NF4Tensor, nf4_quantize

__all__ = ["NF4Linear", "NF4Tensor", "NF4_CODE", "QuantizedAbsmax", "nf4_quantize"]
