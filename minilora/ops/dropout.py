"""dropout: during training, zero each element with probability p and scale the rest by 1/(1-p).

The scaling ("inverted dropout") keeps the expected value of every element unchanged, so the model
needs no change at evaluation time, when dropout is the identity. The mask comes from
minilora.random, so `minilora.manual_seed` makes it reproducible.
"""

import numpy as np

from minilora import random
from minilora.function import Function, check_tensor
from minilora.nn.checks import probability


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved
        return grad * mask  # the same zeros and the same 1/(1-p) as the forward


def dropout(x, p, training=True):
    """x with each element zeroed with probability p and the rest scaled by 1/(1-p). x: any shape.

    p: a number in [0, 1). Returns x itself when not training or when p == 0.
    """
    p = probability("dropout: p", p)  # a Python float: a NumPy float64 p would widen a float32 mask
    check_tensor("dropout", "x", x)
    if x.dtype.kind != "f":
        raise TypeError(f"dropout needs a floating tensor, got dtype {x.dtype}")
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"dropout: training must be a bool, got {training!r}")
    if not training or p == 0:
        return x
    keep = random.rand(x.shape, dtype=x.dtype, device=x.device) >= p
    # mask holds 0 or 1/(1-p) in x's dtype: one multiply applies both the dropping and the scaling.
    mask = keep.astype(x.dtype) / (1 - p)
    return Dropout.apply(x, mask=mask)
