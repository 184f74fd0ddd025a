"""minilora.functional (also minilora.F): every differentiable op as a plain function.

Each name here is a thin entry point into minilora.ops, where the op's forward and backward sit
side by side. Tensor methods and operators (`+`, `@`, `.sum()`) call these.
"""

from minilora.ops.arithmetic import add, div, mul, neg, pow, sub  # noqa: F401
from minilora.ops.attention import causal_softmax  # noqa: F401
from minilora.ops.dropout import dropout  # noqa: F401
from minilora.ops.embedding import embedding  # noqa: F401
from minilora.ops.linear import linear  # noqa: F401
from minilora.ops.loss import cross_entropy  # noqa: F401
from minilora.ops.matmul import matmul  # noqa: F401
from minilora.ops.norm import layer_norm  # noqa: F401
from minilora.ops.reduce import max, mean, sum  # noqa: F401
from minilora.ops.select import getitem, masked_fill, where  # noqa: F401
from minilora.ops.shape import concatenate, permute, reshape, split, stack, swapaxes, transpose  # noqa: F401
from minilora.ops.softmax import log_softmax, softmax  # noqa: F401
from minilora.ops.unary import exp, gelu, log, relu, tanh  # noqa: F401
from minilora.ops.lora_linear import lora_linear  # noqa: F401
