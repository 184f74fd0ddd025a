"""layer_norm: normalise each vector along the last axis, then scale and shift it.

    x̂ = (x - mean(x)) / sqrt(var(x) + eps),   y = x̂ · weight + bias

The normalisation is its own op (Normalize) so its backward can be read on its own; the scale and
shift are ordinary multiply and add, whose backward already sums over the broadcast rows.
For NumPy float arrays the whole of it, normalisation, scale and shift, runs as one compiled op
instead (CompiledLayerNorm below, csrc/cpu/op_layer_norm.cpp: one read of each row, all passes in
cache, rows over the threads); Normalize and the multiply and add are the reference it is tested
against, and what runs on CuPy arrays.
"""

from minilora.checks import check_number
from minilora.function import Function, check_tensor
from minilora.kernels import compiled
from minilora.tensor import Tensor


class Normalize(Function):
    """(x - mean) / sqrt(var + eps) over the last axis (biased variance, as LayerNorm uses)."""

    float_inputs = True

    @staticmethod
    def forward(ctx, x, eps):
        xp = ctx.xp
        # One fresh array becomes x - mean, then x̂ in place; the squares go through a second one.
        x_hat = xp.subtract(x, x.mean(axis=-1, keepdims=True), out=xp.empty_like(x))
        squares = xp.multiply(x_hat, x_hat, out=xp.empty_like(x_hat))
        inv_std = squares.mean(axis=-1, keepdims=True)  # (..., 1): the biased variance
        inv_std += eps
        xp.sqrt(inv_std, out=inv_std)
        xp.divide(1, inv_std, out=inv_std)
        x_hat *= inv_std
        ctx.save_for_backward(x_hat, inv_std)
        return x_hat

    @staticmethod
    def backward(ctx, grad):
        xp = ctx.xp
        x_hat, inv_std = ctx.saved
        # x̂ moves with x directly and through the mean and the variance; those two paths remove the
        # parts of grad that are constant along the vector and that point along x̂:
        #     dx = inv_std · (grad - mean(grad) - x̂ · mean(grad · x̂))
        dx = xp.multiply(grad, x_hat, out=xp.empty_like(grad))
        mean_grad_x_hat = dx.mean(axis=-1, keepdims=True)
        xp.multiply(x_hat, mean_grad_x_hat, out=dx)
        dx += grad.mean(axis=-1, keepdims=True)
        xp.subtract(grad, dx, out=dx)
        dx *= inv_std
        return dx


class CompiledLayerNorm(Function):
    """Normalize, then · weight + bias, as one op on minilora._C; inputs (x, weight, bias), with
    `affine` naming which of weight and bias are there (any, both or none)."""

    float_inputs = True

    @staticmethod
    def forward(ctx, x, *params, eps, affine):
        named = dict(zip(affine, params))
        y, x_hat, inv_std = compiled.layer_norm_forward(x, eps, named.get("weight"), named.get("bias"))
        ctx.save_for_backward(x_hat, inv_std, named.get("weight"))
        ctx.affine = affine
        return y

    @staticmethod
    def backward(ctx, grad):
        x_hat, inv_std, weight = ctx.saved
        wanted = dict(zip(ctx.affine, ctx.needs_input_grad[1:]))
        dx, dweight, dbias = compiled.layer_norm_backward(grad, x_hat, inv_std, weight,
                                                          wanted.get("weight", False), wanted.get("bias", False))
        grads = {"weight": dweight, "bias": dbias}
        return (dx,) + tuple(grads[name] for name in ctx.affine)


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """Layer normalisation over the last axis. x: (..., D); weight, bias: (D,) or None; same shape out."""
    check_tensor("layer_norm", "x", x)
    if x.ndim == 0 or x.shape[-1] == 0:  # D = 0 has no mean to subtract
        raise ValueError(f"layer_norm needs x of shape (..., D) with D >= 1, got shape {x.shape}")
    dim = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (not isinstance(p, Tensor) or p.shape != (dim,)):
            got = p.shape if isinstance(p, Tensor) else type(p).__name__
            raise ValueError(f"layer_norm: {name} must be a Tensor of shape ({dim},) (x's last axis), got {got}")
    check_number("layer_norm: eps", eps, above=0)
    params = {name: p for name, p in (("weight", weight), ("bias", bias)) if p is not None}
    if compiled.runs(x.data, *(p.data for p in params.values())):
        return CompiledLayerNorm.apply(x, *params.values(), eps=eps, affine=tuple(params))
    out = Normalize.apply(x, eps=eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out
