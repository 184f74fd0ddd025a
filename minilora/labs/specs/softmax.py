"""Lab 2, softmax: the gradient of s = softmax(x) over the last axis, written with s itself.

    s_i = exp(x_i) / Σ_j exp(x_j)        ds_i/dx_j = s_i·(δ_ij - s_j)
    grad_x = s·(grad - Σ_j grad_j·s_j)   (the sum along the last axis, kept for broadcasting)
"""

import numpy as np

from minilora.labs.draw import sizes
from minilora.labs.spec import Case, Lab, LabFunction, Mistake
from minilora.ops.softmax import log_softmax_array


def forward(x):
    s = np.exp(log_softmax_array(np, x, axis=-1))
    return s, {"s": s}


def cases(rng):
    n, batch, time = sizes(rng, 3)
    # Spread 2 makes s far from uniform, so every term of the Jacobian is sizeable.
    return [Case(f"x {shape}{why}", {"x": 2 * rng.standard_normal(shape)})
            for shape, why in (((n,), ", one vector"), ((batch, n), ", a batch of rows"),
                               ((batch, time, n), ", two leading axes"))]


MISTAKES = (
    Mistake("grad_x", lambda grad, s: grad * s * (1 - s),
            "grad·s·(1 - s) is only the diagonal of the Jacobian: every s_i also depends on every x_j "
            "through the sum in the denominator (ds_i/dx_j = -s_i·s_j for j ≠ i)"),
    Mistake("grad_x", lambda grad, s: s * (grad - (grad * s).sum(axis=0, keepdims=True)),
            "the sum Σ_j grad_j·s_j runs over the first axis; softmax normalises over the last one, "
            "so sum over axis=-1"),
    Mistake("grad_x", lambda grad, s: grad - (grad * s).sum(axis=-1, keepdims=True),
            "the factor s in front is missing: grad_x = s·(grad - Σ_j grad_j·s_j)"),
    Mistake("grad_x", lambda grad, s: s * (grad - grad.sum(axis=-1, keepdims=True)),
            "the sum must weight each grad_j by s_j: Σ_j grad_j·s_j, not Σ_j grad_j"),
    Mistake("grad_x", lambda grad, s: grad - s * grad.sum(axis=-1, keepdims=True),
            "this is the backward of log_softmax (grad - s·Σ grad), not of softmax"),
    Mistake("grad_x", lambda grad, s: grad * s,
            "grad·s is only the direct term: the term -s·Σ_j grad_j·s_j is missing (every s_i also depends on "
            "every x_j through the sum in the denominator)"),
    Mistake("grad_x", lambda grad, s: s * (grad + (grad * s).sum(axis=-1, keepdims=True)),
            "the sum term has the wrong sign: grad_x = s·(grad - Σ_j grad_j·s_j)"),
    Mistake("grad_x", lambda grad, s: s * (grad - (grad * s).sum()),
            "the sum runs over every element at once; each row is its own softmax: sum along axis=-1 "
            "with keepdims=True"),
)

LAB = Lab(
    number=2,
    name="softmax",
    title="softmax over the last axis: grad_x from the output s",
    file_name="lab2_softmax.py",
    functions=(
        LabFunction(name="softmax_backward", arguments=("grad", "s"), gradients=("grad_x",), wrt=("x",),
                    forward=forward, make_cases=cases, mistakes=MISTAKES),
    ),
)
