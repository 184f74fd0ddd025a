"""embedding: look up one row of a weight table per integer index (token or position ids).

Forward is indexing, weight[idx]; backward adds each output row's gradient into the row it was
read from, so a token that appears several times in a batch collects every one of its gradients.
"""

from minilora import backend
from minilora.function import Function
from minilora.tensor import Tensor


class Embedding(Function):
    index_inputs = (0,)

    @staticmethod
    def forward(ctx, idx, weight):
        ctx.save_for_backward(idx)
        ctx.weight_shape = weight.shape
        return weight[idx]

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved
        vocab_size, dim = ctx.weight_shape
        grad_weight = ctx.xp.zeros((vocab_size, dim), dtype=grad.dtype)
        backend.scatter_add(grad_weight, idx.reshape(-1), grad.reshape(-1, dim))
        return None, grad_weight


def embedding(idx, weight):
    """Rows of `weight` picked by `idx`. idx: integers of any shape (...) in [0, V); weight: (V, D).

    Returns (..., D).
    """
    if not isinstance(idx, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(f"embedding needs Tensors, got {type(idx).__name__} and {type(weight).__name__}")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: idx must hold integer indices, got dtype {idx.dtype}")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must have shape (V, D), got {weight.shape}")
    vocab_size = weight.shape[0]
    if idx.size and (int(idx.data.min()) < 0 or int(idx.data.max()) >= vocab_size):
        low, high = int(idx.data.min()), int(idx.data.max())
        raise ValueError(f"embedding: indices must be in [0, {vocab_size}) for a weight of shape {weight.shape}, "
                         f"got values from {low} to {high}")
    return Embedding.apply(idx, weight)
