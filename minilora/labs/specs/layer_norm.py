"""Lab 3, layer_norm: the gradients of layer normalisation over the last axis.

    x̂ = (x - mean(x)) / sqrt(var(x) + eps)        y = x̂·weight + bias

With g = grad·weight (the gradient with respect to x̂), every x_j moves x̂ directly, through the
mean and through the variance:

    grad_x = (g - mean(g) - x̂·mean(g·x̂)) / sqrt(var + eps)
    grad_weight = Σ grad·x̂        grad_bias = Σ grad        (sums over every leading axis)
"""

import numpy as np

from minilora.labs.draw import away_from_zero, sizes
from minilora.labs.spec import Case, Lab, LabFunction, Mistake

EPS = 1e-5


def normalized(x, eps, ddof=0):
    """(x̂, 1/sqrt(var + eps)) along the last axis; ddof=1 gives the unbiased variance (a mistake here)."""
    centered = x - x.mean(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt((centered ** 2).sum(axis=-1, keepdims=True) / (x.shape[-1] - ddof) + eps)
    return centered * inv_std, inv_std


def forward(x, weight, bias, eps):
    x_hat, _ = normalized(x, eps)
    return x_hat * weight + bias, {}


def cases(rng):
    # D >= 3: with D = 2, x̂ is always ±1 and its gradient all but vanishes.
    d, n, batch, time = sizes(rng, 4, low=3, high=9)
    return [Case(f"x {shape}, weight and bias ({d},){why}",
                 {"x": away_from_zero(rng, shape) + rng.uniform(-1, 1),
                  "weight": away_from_zero(rng, (d,)), "bias": away_from_zero(rng, (d,))},
                 {"eps": EPS})
            for shape, why in (((n, d), ""), ((batch, time, d), ", two leading axes"))]


def _rows(x):
    """The leading axes of x, which weight and bias are shared across."""
    return tuple(range(x.ndim - 1))


def _grad_x(grad, x, weight, eps, through_mean=True, through_var=True, ddof=0):
    """grad_x with the chosen paths of the derivative; the mistakes below leave one out."""
    x_hat, inv_std = normalized(x, eps, ddof)
    g = grad * weight
    if through_mean:
        g = g - g.mean(axis=-1, keepdims=True)
    if through_var:
        g = g - x_hat * (grad * weight * x_hat).mean(axis=-1, keepdims=True)
    return inv_std * g


MISTAKES = (
    Mistake("grad_x", lambda **a: _grad_x(**a, through_mean=False),
            "the path through the mean is missing: mean(x) depends on every x_j, which subtracts "
            "mean(grad·weight) along the last axis"),
    Mistake("grad_x", lambda **a: _grad_x(**a, through_var=False),
            "the path through the variance is missing: var(x) depends on every x_j, which subtracts "
            "x̂·mean(grad·weight·x̂) along the last axis"),
    Mistake("grad_x", lambda **a: _grad_x(**a, through_mean=False, through_var=False),
            "the mean and the variance are treated as constants, but both depend on x: two terms are missing"),
    Mistake("grad_x", lambda grad, x, weight, eps: _grad_x(grad, x, np.ones_like(weight), eps),
            "weight is missing: the gradient with respect to x̂ is grad·weight, use it everywhere grad appears"),
    Mistake("grad_x", lambda **a: _grad_x(**a, ddof=1),
            "this uses the unbiased variance (dividing by D - 1); layer norm's variance divides by D"),
    Mistake("grad_weight", lambda grad, x, **_: (grad * x).sum(axis=_rows(x)),
            "grad_weight multiplies grad by the normalised x̂, not by x"),
    Mistake("grad_weight", lambda grad, x, eps, **_: (grad * normalized(x, eps, ddof=1)[0]).sum(axis=_rows(x)),
            "this x̂ uses the unbiased variance (dividing by D - 1); layer norm's variance divides by D"),
)

LAB = Lab(
    number=3,
    name="layer_norm",
    title="layer normalisation over the last axis: grad_x, grad_weight, grad_bias",
    file_name="lab3_layer_norm.py",
    functions=(
        LabFunction(name="layer_norm_backward", arguments=("grad", "x", "weight", "eps"),
                    gradients=("grad_x", "grad_weight", "grad_bias"), wrt=("x", "weight", "bias"),
                    forward=forward, make_cases=cases, mistakes=MISTAKES, broadcast=("weight", "bias")),
    ),
)
