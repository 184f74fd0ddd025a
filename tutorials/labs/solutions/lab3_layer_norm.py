"""Lab 3, reference solution: the backward of layer normalisation over the last axis.

With g = dL/dx̂ = grad·weight and σ = sqrt(var + eps), x_j reaches x̂ directly (1/σ), through the
mean (-1/(D·σ) for every x̂_i) and through the variance (-x̂_i·x̂_j/(D·σ)). Adding the three:

    grad_x = (g - mean(g) - x̂·mean(g·x̂)) / σ        (means along the last axis)
    grad_weight = Σ_rows grad·x̂        grad_bias = Σ_rows grad
"""

import numpy as np


def layer_norm_backward(grad, x, weight, eps):
    """grad (..., D) = dL/dy, x (..., D), weight (D,), eps a float
    -> (grad_x (..., D), grad_weight (D,), grad_bias (D,))."""
    # The forward again: x̂ and 1/σ (the biased variance, dividing by D).
    centered = x - x.mean(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)  # (..., 1)
    x_hat = centered * inv_std

    # weight and bias are shared by every row: add up over all leading axes.
    rows = tuple(range(x.ndim - 1))
    grad_weight = (grad * x_hat).sum(axis=rows)
    grad_bias = grad.sum(axis=rows)

    g = grad * weight  # dL/dx̂
    grad_x = inv_std * (g - g.mean(axis=-1, keepdims=True) - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
    return grad_x, grad_weight, grad_bias
