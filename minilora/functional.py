"""minilora.functional (also minilora.F): every differentiable op as a plain function.

Each name here is a thin entry point into minilora.ops, where the op's forward and backward sit
side by side. Tensor methods and operators (`+`, `@`, `.sum()`) call these.
"""

from minilora.ops.arithmetic import add, div, mul, neg, pow, sub  # noqa: F401
