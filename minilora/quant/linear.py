"""NF4Linear: a frozen Linear whose weight is stored in NF4 (QLoRA's 4-bit base).

Where it sits: apply_lora with `LoRAConfig(base_quant="nf4")` replaces the base Linear of every
adapted layer (or, with base_quant_scope="all-linear", every Linear but the head) by one of these.
The weight W (out, in) lives only as an NF4Tensor, about 4.1 to 4.5 bits a number instead of 32;
the bias stays a float Parameter (it is small, and LoRAConfig.bias may train it).

Forward: y = x·Ŵᵀ + b with Ŵ = W dequantized for this call, in x's dtype. Nothing trains W (NF4
indices have no gradient): this layer is always frozen, which is all QLoRA needs of its base.

Devices: W is quantized on the CPU (from a Linear on the CPU); model.to("cuda") then moves the NF4
arrays to the GPU with the rest of the model (_converted below), where the fused op runs them on the
CUDA kernels' "nf4" rung, and to("cpu") brings them back; model.to(dtype="float64") makes W
dequantize to float64 (the 4-bit data stays as it is).

What it leaves out, for now: the NF4 arrays are not Parameters, so state_dict() and checkpoints
hold the bias only. A QLoRA model is rebuilt by
quantizing the float base again (load_adapter does it from the adapter's config): quantizing is
deterministic, so the same float W gives the same NF4 W.
"""

from minilora import functional as F
from minilora.nn import Linear, Module
from minilora.quant.nf4 import nf4_quantize
from minilora.tensor import Tensor


class NF4Linear(Module):
    """A frozen Linear with its weight in NF4. x (..., in_features) -> y (..., out_features)."""

    def __init__(self, linear, block_size=64, double_quant=True):
        super().__init__()
        if not isinstance(linear, Linear):
            raise TypeError(f"NF4Linear quantizes a Linear, got {type(linear).__name__}")
        if linear.weight.device != "cpu":
            raise ValueError(f"NF4Linear quantizes a Linear on the CPU, and this weight is on "
                             f"{linear.weight.device}: quantize first, then move the model with .to('cuda')")
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight_nf4 = nf4_quantize(linear.weight.data, block_size, double_quant)   # (out, in) in NF4
        self.bias = linear.bias
        if self.bias is not None:
            self.bias.requires_grad = False

    def _converted(self, convert, device, dtype):
        # Module.to converts parameters (the bias); this moves W, or sets the dtype it dequantizes to.
        if device is not None:
            self.weight_nf4 = self.weight_nf4.to(device)
        if dtype is not None:
            self.weight_nf4 = self.weight_nf4.astype(dtype)

    @property
    def weight(self):
        """W dequantized, (out, in), as a fresh frozen Tensor of the original dtype: the float W
        exists only while it is used."""
        return Tensor(self.weight_nf4.dequantize())

    @property
    def dtype(self):
        return self.weight_nf4.dtype

    def dequantized_linear(self):
        """A plain Linear holding Ŵ (float) and sharing this layer's bias Parameter (merging uses it)."""
        linear = Linear(self.in_features, self.out_features, bias=False, dtype=self.dtype)
        linear.weight.data = self.weight_nf4.dequantize()
        linear.weight.requires_grad = False
        linear.bias = self.bias   # shared, so a bias that LoRAConfig.bias trains stays the same object
        return linear

    def forward(self, x):
        weight = Tensor(self.weight_nf4.dequantize(x.dtype))
        return F.linear(x, weight, self.bias)

    def extra_repr(self):
        q = self.weight_nf4
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, block_size={q.block_size}, double_quant={q.double_quant}, "
                f"{q.bits_per_parameter:.3f} bits per weight")

