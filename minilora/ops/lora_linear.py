"""lora_linear: the LoRA layer's one op, y = x·Wᵀ + scaling·(x·Aᵀ)·Bᵀ (+ bias), and its backward.

Where it sits: minilora.lora.LoRALinear calls F.lora_linear; forward and backward here hand the
raw arrays to minilora.kernels, which runs the fused op on the backend chosen for them (the C++ op
for NumPy arrays when it is built, the CUDA kernels for CuPy arrays; see kernels/dispatch.py). The
backend is picked once, in the forward, and the backward runs on the same one.

In LoRA the weight W (and its bias) is frozen, so the fused backward gives dx, dA and dB only.
When W or the bias does require grad (a gradient check over every input, or a plain trainable
layer), their gradients are added here with two ordinary products: dW = dyᵀ·x, db = Σ dy.
A weight stored in NF4 (minilora.quant.NF4Tensor, QLoRA's frozen base) goes to lora_linear_nf4.py.
"""

from minilora import backend
from minilora.function import Function
from minilora.kernels import checks, dispatch
from minilora.ops.lora_linear_nf4 import nf4_lora_linear
from minilora.quant.nf4 import NF4Tensor
from minilora.tensor import Tensor


class FusedLoRALinear(Function):
    @staticmethod
    def forward(ctx, x, weight, lora_A, lora_B, bias=None, *, scaling):
        # x (..., K), weight (N, K), lora_A (r, K), lora_B (N, r), bias (N,) -> y (..., N)
        (N, K), r = weight.shape, lora_A.shape[0]
        ctx.backend = dispatch.resolve_backend(None, backend.device_of(x), (x.size // K, K, N, r))
        y, u = dispatch.lora_forward(x, weight, lora_A, lora_B, scaling, bias, backend=ctx.backend)
        ctx.save_for_backward(x, weight, lora_A, lora_B, u)
        ctx.scaling = scaling
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, lora_A, lora_B, u = ctx.saved
        dx, dA, dB = dispatch.lora_backward(grad, x, weight, lora_A, lora_B, u, ctx.scaling,
                                            backend=ctx.backend)
        N, K = weight.shape
        dy2 = grad.reshape(-1, N)  # (M, N): every leading dim of x is one more row
        dW = dy2.T @ x.reshape(-1, K) if ctx.needs_input_grad[1] else None
        if not ctx.has_bias:
            return dx, dW, dA, dB
        db = dy2.sum(axis=0) if ctx.needs_input_grad[4] else None
        return dx, dW, dA, dB, db


def lora_linear(x, weight, lora_A, lora_B, scaling, bias=None):
    """y = x·weightᵀ + scaling·(x·lora_Aᵀ)·lora_Bᵀ (+ bias), in one fused op.

    x (..., in), weight (out, in), lora_A (r, in), lora_B (out, r), bias (out,) or None: Tensors
    of one dtype on one device; scaling: a real number (alpha / r, or alpha / √r for rsLoRA).
    weight may also be an NF4Tensor (a frozen 4-bit base), which is dequantized inside the op.
    Returns y (..., out).
    """
    if isinstance(weight, NF4Tensor):
        return nf4_lora_linear(x, weight, lora_A, lora_B, checks.check_scaling(scaling), bias)
    named = {"x": x, "weight": weight, "lora_A": lora_A, "lora_B": lora_B, "bias": bias}
    for name, t in named.items():
        if not isinstance(t, Tensor) and not (name == "bias" and t is None):
            raise TypeError(f"lora_linear: {name} must be a Tensor, got {type(t).__name__}")
    inputs = (x, weight, lora_A, lora_B) + (() if bias is None else (bias,))
    return FusedLoRALinear.apply(*inputs, scaling=checks.check_scaling(scaling))
