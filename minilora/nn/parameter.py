"""Parameter: a Tensor that a Module owns and an optimizer updates; plus the initialisers.

A Parameter is an ordinary leaf Tensor with `requires_grad=True` by default. Its only extra meaning
is that assigning one to a Module attribute registers it, so `named_parameters()`, `state_dict()`
and the optimizers find it. Freezing a parameter (LoRA freezes every base weight) is
`p.requires_grad = False`: the engine then sends it no gradient and optimizers skip it.

The initialisers draw from minilora.random, so `minilora.manual_seed(s)` makes a model's
starting weights reproducible.
"""

from minilora import creation
from minilora.tensor import Tensor


class Parameter(Tensor):
    """A trainable tensor. data: an array (NumPy or CuPy) or a Tensor, of a floating dtype."""

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            data = data.data
        if not hasattr(data, "dtype"):
            raise TypeError(f"Parameter needs an array or a Tensor, got {type(data).__name__}")
        if data.dtype.kind != "f":
            raise TypeError(f"a Parameter must have a floating dtype, got {data.dtype}")
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, device='{self.device}'{frozen})"


def normal(shape, std, dtype="float32", device="cpu"):
    """A Parameter of `shape` drawn from N(0, std²): how GPT-2 starts its weight matrices."""
    return Parameter(creation.randn(shape, dtype=dtype, device=device).data * float(std))


def zeros(shape, dtype="float32", device="cpu"):
    """A Parameter of zeros (biases)."""
    return Parameter(creation.zeros(shape, dtype=dtype, device=device))


def ones(shape, dtype="float32", device="cpu"):
    """A Parameter of ones (LayerNorm weights: the normalised value passes through unscaled)."""
    return Parameter(creation.ones(shape, dtype=dtype, device=device))
