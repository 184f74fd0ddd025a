"""nf4_lora_linear: the LoRA layer's op over a 4-bit base, y = x·Ŵᵀ + scaling·(x·Aᵀ)·Bᵀ (+ bias).

Where it sits: F.lora_linear comes here when the weight is an NF4Tensor (minilora.quant), which is
how LoRALinear passes a QLoRA base (LoRAConfig(base_quant="nf4")). Ŵ is W dequantized, inside
each call of the kernels, once in the forward and once again in the backward, so no float W is
kept between them: that is QLoRA's memory saving. Where (minilora/kernels/nf4.py): the C++ op by
default on NumPy arrays (K, N >= 128), which dequantizes W panel by panel as its GEMM packs them;
the NumPy reference otherwise, which dequantizes all of W for the call.

W is frozen (NF4 indices have no gradient), so the backward gives dx, dA, dB and, with a bias
that trains, db = Σ dy. The weight is an option of the op, not an input: it is not a Tensor.
"""

from minilora.function import Function
from minilora.kernels import dispatch


class NF4LoRALinear(Function):
    @staticmethod
    def forward(ctx, x, lora_A, lora_B, bias=None, *, weight, scaling):
        # x (..., K), weight an NF4Tensor (N, K), lora_A (r, K), lora_B (N, r), bias (N,) -> y (..., N)
        y, u = dispatch.lora_forward(x, weight, lora_A, lora_B, scaling, bias)
        ctx.save_for_backward(x, lora_A, lora_B, u)
        ctx.weight, ctx.scaling, ctx.has_bias = weight, scaling, bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):
        x, lora_A, lora_B, u = ctx.saved
        dx, dA, dB = dispatch.lora_backward(grad, x, ctx.weight, lora_A, lora_B, u, ctx.scaling)
        if not ctx.has_bias:
            return dx, dA, dB
        db = grad.reshape(-1, grad.shape[-1]).sum(axis=0) if ctx.needs_input_grad[3] else None
        return dx, dA, dB, db


def nf4_lora_linear(x, weight, lora_A, lora_B, scaling, bias=None):
    """F.lora_linear with `weight` an NF4Tensor (out, in); the other arguments as there."""
    inputs = (x, lora_A, lora_B) + (() if bias is None else (bias,))
    return NF4LoRALinear.apply(*inputs, weight=weight, scaling=scaling)
