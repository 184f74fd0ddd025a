"""LayerNorm: normalise each vector over its last axis, then scale and shift (learned)."""

from minilora import functional as F
from minilora.checks import check_number
from minilora.function import check_tensor
from minilora.nn import parameter
from minilora.nn.checks import positive_int
from minilora.nn.module import Module


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) · weight + bias over the last axis of x: (..., dim).

    weight starts at ones and bias at zeros, so a fresh LayerNorm only normalises.
    bias=False leaves the shift out (GPTConfig(bias=False)).
    """

    def __init__(self, dim, eps=1e-5, bias=True, dtype="float32", device="cpu"):
        super().__init__()
        positive_int("dim", dim)
        check_number("eps", eps, above=0)
        self.dim = dim
        self.eps = float(eps)
        self.weight = parameter.ones((dim,), dtype, device)
        self.bias = parameter.zeros((dim,), dtype, device) if bias else None

    def forward(self, x):
        check_tensor("LayerNorm", "x", x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"LayerNorm expects input (..., {self.dim}), got shape {x.shape}")
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps:g}, bias={self.bias is not None}"
