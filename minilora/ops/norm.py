"""layer_norm: normalise each vector along the last axis, then scale and shift it.

    x̂ = (x - mean(x)) / sqrt(var(x) + eps),   y = x̂ · weight + bias

The normalisation is its own op (Normalize) so its backward can be read on its own; the scale and
shift are ordinary multiply and add, whose backward already sums over the broadcast rows.
"""

from minilora.checks import check_number
from minilora.function import Function, check_tensor
from minilora.tensor import Tensor


class Normalize(Function):
    """(x - mean) / sqrt(var + eps) over the last axis (biased variance, as LayerNorm uses)."""

    @staticmethod
    def forward(ctx, x, eps):
        centered = x - x.mean(axis=-1, keepdims=True)
        inv_std = 1 / ctx.xp.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
        x_hat = centered * inv_std
        ctx.save_for_backward(x_hat, inv_std)
        return x_hat

    @staticmethod
    def backward(ctx, grad):
        x_hat, inv_std = ctx.saved
        # x̂ moves with x directly and through the mean and the variance; those two paths remove the
        # parts of grad that are constant along the vector and that point along x̂.
        mean_grad = grad.mean(axis=-1, keepdims=True)
        mean_grad_x_hat = (grad * x_hat).mean(axis=-1, keepdims=True)
        return inv_std * (grad - mean_grad - x_hat * mean_grad_x_hat)


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """Layer normalisation over the last axis. x: (..., D); weight, bias: (D,) or None; same shape out."""
    check_tensor("layer_norm", "x", x)
    if x.ndim == 0:
        raise ValueError("layer_norm needs x of shape (..., D), got a scalar")
    dim = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (not isinstance(p, Tensor) or p.shape != (dim,)):
            got = p.shape if isinstance(p, Tensor) else type(p).__name__
            raise ValueError(f"layer_norm: {name} must be a Tensor of shape ({dim},) (x's last axis), got {got}")
    check_number("layer_norm: eps", eps, above=0)
    out = Normalize.apply(x, eps=eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out
