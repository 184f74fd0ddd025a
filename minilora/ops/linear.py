"""linear: y = x·Wᵀ + b as one op, the product inside every nn.Linear.

Where it sits: nn.Linear.forward calls F.linear. Written with matmul, transpose and add it would
record three ops and keep three sets of temporaries; as one op the forward is one matrix product
(the bias added in place into its fresh result) and the backward is at most two products and a sum.

The leading dimensions of x (batch, time) are folded into one, so each product is a single 2-D
call: for x2 (M, K) = x flattened, g2 (M, N) = the gradient flattened,
    dx = g2·W,   dW = g2ᵀ·x2,   db = Σ_rows g2.
The products go through kernels.compiled.matmul: the C++ GEMM for NumPy arrays (so one pool of
threads runs a whole step; that file says why), the array module's matmul otherwise.
"""

from minilora.function import Function
from minilora.kernels import compiled
from minilora.tensor import Tensor


class Linear(Function):
    @staticmethod
    def forward(ctx, x, weight, bias=None):
        # x (..., K), weight (N, K), bias (N,) or absent -> y (..., N)
        n_out, n_in = weight.shape
        x2 = x.reshape(-1, n_in)                 # (M, K)
        y = compiled.matmul(x2, weight.T, bias)  # (M, N), the bias added in the same pass
        ctx.save_for_backward(x2, weight)
        ctx.x_shape = x.shape
        return y.reshape(*x.shape[:-1], n_out)

    @staticmethod
    def backward(ctx, grad):
        x2, weight = ctx.saved
        g2 = grad.reshape(-1, weight.shape[0])    # (M, N)
        needs_x, needs_weight = ctx.needs_input_grad[:2]
        dx = compiled.matmul(g2, weight).reshape(ctx.x_shape) if needs_x else None
        dw = compiled.matmul(g2.T, x2) if needs_weight else None  # (N, K), C-contiguous like the weight
        if len(ctx.needs_input_grad) == 2:
            return dx, dw
        db = g2.sum(axis=0) if ctx.needs_input_grad[2] else None
        return dx, dw, db


def linear(x, weight, bias=None):
    """x·weightᵀ + bias. x (..., in), weight (out, in), bias (out,) or None -> (..., out).

    Tensors of one dtype on one device.
    """
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"linear: {name} must be a Tensor, got {type(t).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"linear: bias must be a Tensor or None, got {type(bias).__name__}")
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    n_out, n_in = weight.shape
    if x.ndim == 0 or x.shape[-1] != n_in:
        raise ValueError(f"linear: x must have shape (..., {n_in}) to match weight {weight.shape}, "
                         f"got shape {x.shape}")
    if bias is None:
        return Linear.apply(x, weight)
    if bias.shape != (n_out,):
        raise ValueError(f"linear: bias must have shape ({n_out},) to match weight {weight.shape}, "
                         f"got shape {bias.shape}")
    return Linear.apply(x, weight, bias)
