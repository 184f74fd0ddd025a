"""Lab 3: the backward of layer normalisation over the last axis.

Every block of the GPT starts with a LayerNorm. Its forward, for each vector along the last axis:

    mean = mean(x)                      var = mean((x - mean)²)     (divides by D: biased)
    x̂ = (x - mean) / sqrt(var + eps)    y = x̂·weight + bias
    x, y, grad: (..., D)                weight, bias: (D,), shared by every row

layer_norm_backward(grad, x, weight, eps) gets grad = dL/dy and returns
(grad_x (..., D), grad_weight (D,), grad_bias (D,)).

Derive it in steps:
  1. weight and bias: y = x̂·weight + bias for every row, and every row uses the same weight and
     bias, so their gradients add up over all rows (sum over every leading axis).
  2. g = dL/dx̂ = grad·weight.
  3. x_j moves x̂ in three ways: directly (x̂_j has x_j in it), through the mean (every x̂_i has
     the mean in it) and through the variance. Compute dmean/dx_j = 1/D and
     dvar/dx_j = 2·(x_j - mean)/D, and add the three paths up. Written with x̂ and
     1/sqrt(var + eps), the result is short: g minus its mean, minus x̂ times the mean of g·x̂,
     all divided by sqrt(var + eps) (each mean along the last axis, keepdims=True).

Check your work:

    minilora lab check layer_norm
    minilora lab check layer_norm --file path/to/your/lab3_layer_norm.py --seed 3
"""

import numpy as np  # noqa: F401 (your code will use it)


def layer_norm_backward(grad, x, weight, eps):
    """grad (..., D) = dL/dy, x (..., D), weight (D,), eps a float
    -> (grad_x (..., D), grad_weight (D,), grad_bias (D,))."""
    raise NotImplementedError("TODO: return grad_x, grad_weight, grad_bias")
