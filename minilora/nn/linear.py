"""Linear: y = x·Wᵀ + b, the layer that LoRA adapts.

The weight is stored (out_features, in_features), as in the LoRA paper's W ∈ R^{d×k}, so a LoRA
update B·A (B: out×r, A: r×in) has exactly the weight's shape and can be merged into it.
"""

from minilora import functional as F
from minilora.checks import check_number
from minilora.nn import parameter
from minilora.nn.checks import positive_int
from minilora.nn.module import Module


class Linear(Module):
    """y = x·Wᵀ + b. x: (..., in_features) -> y: (..., out_features).

    Starts from GPT-2's initialisation: weight ~ N(0, init_std²) with init_std = 0.02, bias zero.
    """

    def __init__(self, in_features, out_features, bias=True, dtype="float32", device="cpu", init_std=0.02):
        super().__init__()
        positive_int("in_features", in_features)
        positive_int("out_features", out_features)
        check_number("init_std", init_std, low=0)
        self.in_features = in_features
        self.out_features = out_features
        self.weight = parameter.normal((out_features, in_features), init_std, dtype, device)  # (out, in)
        self.bias = parameter.zeros((out_features,), dtype, device) if bias else None           # (out,)

    def forward(self, x):
        # One op (minilora/ops/linear.py), which also checks that x ends in in_features.
        return F.linear(x, self.weight, self.bias)                          # (..., out)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

