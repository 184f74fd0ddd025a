"""Lab 3, layer_norm: the gradients of layer normalisation over the last axis.

    x̂ = (x - mean(x)) / sqrt(var(x) + eps)        y = x̂·weight + bias

With g = grad·weight (the gradient with respect to x̂), every x_j moves x̂ directly, through the
mean and through the variance:

    grad_x = (g - mean(g) - x̂·mean(g·x̂)) / sqrt(var + eps)
    grad_weight = Σ grad·x̂        grad_bias = Σ grad        (sums over every leading axis)

The inputs make eps matter: with the GPT's eps = 1e-5 against rows of variance near 1, dropping
eps changes 1/sqrt(var + eps) by about 5e-6, far below the checker's tolerance (rtol 1e-3), and
that mistake would pass. So case 1 draws rows whose variance is comparable to eps = 1e-5, and
case 2 rows of variance 0.25 to 1 with an eps of 0.3 to 1: in both, eps moves every element of
the gradient by 10% or more.
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


def rows_with_variance(rng, shape, variance):
    """Values of `shape` whose every row (last axis) has a random mean and the variance variance·U(0.5, 2)."""
    z = away_from_zero(rng, shape)
    z = (z - z.mean(axis=-1, keepdims=True)) / z.std(axis=-1, keepdims=True)
    scale = np.sqrt(variance * rng.uniform(0.5, 2, size=shape[:-1] + (1,)))
    return z * scale + rng.uniform(-1, 1, size=shape[:-1] + (1,))


def forward(x, weight, bias, eps):
    x_hat, _ = normalized(x, eps)
    return x_hat * weight + bias, {}


def cases(rng):
    # D >= 3: with D = 2, x̂ is always ±1 and its gradient all but vanishes.
    d, n, batch, time = sizes(rng, 4, low=3, high=9)
    large_eps = float(rng.uniform(0.3, 1.0))
    drawn = []
    for shape, variance, eps, why in (((n, d), EPS, EPS, ", rows of variance near eps"),
                                      ((batch, time, d), 0.5, large_eps, ", two leading axes, eps near the variance")):
        drawn.append(Case(f"x {shape}, weight and bias ({d},), eps {eps:.2g}{why}",
                          {"x": rows_with_variance(rng, shape, variance),
                           "weight": away_from_zero(rng, (d,)), "bias": away_from_zero(rng, (d,))},
                          {"eps": eps}))
    return drawn


def _rows(x):
    """The leading axes of x, which weight and bias are shared across."""
    return tuple(range(x.ndim - 1))


def _grad_x(grad, x, weight, eps, through_mean=1, through_var=1, ddof=0, eps_in_scale=True):
    """grad_x with the chosen paths of the derivative, each with the sign given (0 leaves it out);
    eps_in_scale=False drops eps from the final 1/sqrt(var + eps) only. The mistakes below use them."""
    x_hat, inv_std = normalized(x, eps, ddof)
    if not eps_in_scale:
        inv_std = normalized(x, 0.0, ddof)[1]
    g = grad * weight
    return inv_std * (g - through_mean * g.mean(axis=-1, keepdims=True)
                      - through_var * x_hat * (g * x_hat).mean(axis=-1, keepdims=True))


EPS_HINT = ("eps is missing from sqrt(var + eps): the forward divides by sqrt(var + eps), so every 1/σ in the "
            "backward (and x̂ itself) has eps in it; use the eps argument")

MISTAKES = (
    Mistake("grad_x", lambda grad, x, weight, eps: _grad_x(grad, x, weight, 0.0), EPS_HINT),
    Mistake("grad_x", lambda **a: _grad_x(**a, eps_in_scale=False), EPS_HINT),
    Mistake("grad_weight", lambda grad, x, **_: (grad * normalized(x, 0.0)[0]).sum(axis=_rows(x)), EPS_HINT),
    Mistake("grad_x", lambda **a: _grad_x(**a, through_mean=-1),
            "the term through the mean has the wrong sign: grad_x = (g - mean(g) - x̂·mean(g·x̂)) / σ"),
    Mistake("grad_x", lambda **a: _grad_x(**a, through_var=-1),
            "the term through the variance has the wrong sign: grad_x = (g - mean(g) - x̂·mean(g·x̂)) / σ"),
    Mistake("grad_weight", lambda grad, x, weight, eps: (grad * normalized(x, eps)[0] * weight).sum(axis=_rows(x)),
            "grad_weight has an extra factor weight: y = x̂·weight + bias, so dy/dweight is x̂ alone"),
    Mistake("grad_x", lambda **a: _grad_x(**a, through_mean=0),
            "the path through the mean is missing: mean(x) depends on every x_j, which subtracts "
            "mean(grad·weight) along the last axis"),
    Mistake("grad_x", lambda **a: _grad_x(**a, through_var=0),
            "the path through the variance is missing: var(x) depends on every x_j, which subtracts "
            "x̂·mean(grad·weight·x̂) along the last axis"),
    Mistake("grad_x", lambda **a: _grad_x(**a, through_mean=0, through_var=0),
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
