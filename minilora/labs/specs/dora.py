"""Lab 7, dora: the backward of the DoRA layer, with the norm detached as in the DoRA paper and PEFT.

    V = W + s·B·A (N, K)      n = ‖V‖ per output row, over the input axis (N,)
    z = x·Wᵀ + s·(x·Aᵀ)·Bᵀ = x·Vᵀ      y = (m / n) ⊙ z      m (N,) the trainable magnitude

With n a constant in the backward (detached: minilora.lora.dora and PEFT do the same):

    g = dy ⊙ (m / n)      dx = g·W + s·(g·B)·A      dA = s·(g·B)ᵀ·x      dB = s·gᵀ·(x·Aᵀ)
    dm = Σ_rows dy ⊙ z / n

that is, lab 4's LoRA backward on g, and one sum for dm.

Detached, for the checker: each case holds n, computed from its own W, A and B, as an input of
the forward that gets no gradient (like LoRA's dropout mask). Central differences then move A
and B with n held where it was, which is exactly what a detached backward computes. The
student's function does not receive n: computing it (the axis, the scaling) is part of the lab.

The inputs make every mistake below large: m / n is drawn per row in [0.4, 0.7] or [1.3, 2] (so
leaving out m, n or both changes every column by a different factor), s·B·A is at least as large as W
(so a norm without s, or of W alone, is far off), and one case has a square W, as attention's
projections do, where a norm over the wrong axis keeps its shape; elsewhere that mistake raises,
and the error's hint names it.
"""

import numpy as np

from minilora.kernels import reference
from minilora.labs.draw import away_from_zero, rank_first, sizes
from minilora.labs.spec import Case, Lab, LabFunction, Mistake


def forward(x, W, A, B, m, norm, scaling):
    z, _ = reference.lora_forward(x, W, A, B, scaling)
    return z * (m / norm), {}


def row_norm(W, A, B, scaling):
    """n = ‖W + s·B·A‖ over the input axis, one value per output row (N,)."""
    V = W + scaling * (B @ A)
    return np.sqrt((V * V).sum(axis=1))


def _case(rng, x_shape, n, rank, why):
    k = x_shape[-1]
    scaling = float(rng.uniform(1.5, 4.0))  # never 1, so a missing scaling shows
    arrays = {"x": away_from_zero(rng, x_shape), "W": away_from_zero(rng, (n, k)),
              "A": away_from_zero(rng, (rank, k)), "B": away_from_zero(rng, (n, rank))}
    norm = row_norm(arrays["W"], arrays["A"], arrays["B"], scaling)
    # m / n per row, never near 1: a backward without m, or without n, is off in every column.
    ratio = np.where(rng.random(n) < 0.5, rng.uniform(0.4, 0.7, n), rng.uniform(1.3, 2.0, n))
    arrays["m"] = norm * ratio
    arrays["norm"] = norm  # the detached norm: a constant of the forward, not an argument of the backward
    description = (f"x {x_shape}, W ({n}, {k}), A ({rank}, {k}), B ({n}, {rank}), m ({n},), "
                   f"scaling {scaling:.3g}{why}")
    return Case(description, arrays, {"scaling": scaling})


def cases(rng):
    rank, m, k, n = rank_first(sizes(rng, 4))
    rank2, batch, time, k2, n2 = rank_first(sizes(rng, 5))
    m3, k3 = sizes(rng, 2)
    return [_case(rng, (m, k), n, rank, ""),
            _case(rng, (batch, time, k2), n2, rank2, ", x with two leading axes"),
            _case(rng, (m3, k3), k3, 1, ", W square (out = in, as attention's projections), rank 1")]


def _grads(dy, x, W, A, B, m, scaling, detached=True, norm_scaling=None, norm_axis=1, use_m=True, use_n=True,
           lora_dx_scaling=True, dm_over_n=True, dm_times_m=False):
    """(dx, dA, dB, dm), right by default; each option makes one of the mistakes below."""
    N, K = W.shape
    x2, dy2 = x.reshape(-1, K), dy.reshape(-1, N)
    V = W + scaling * (B @ A)
    in_norm = W + (scaling if norm_scaling is None else norm_scaling) * (B @ A)
    n = np.sqrt((in_norm * in_norm).sum(axis=norm_axis))
    z = x2 @ V.T
    g = dy2 * ((m if use_m else 1.0) / (n if use_n else 1.0))
    dx = g @ W + (scaling if lora_dx_scaling else 1.0) * ((g @ B) @ A)
    dV = g.T @ x2  # the gradient reaching V = W + s·B·A through z
    if not detached:  # n = ‖V‖ differentiated too: dn_i/dV_i = V_i / n_i
        dV = dV - (m * (dy2 * z).sum(axis=0) / n ** 3)[:, None] * V
    dA = scaling * (B.T @ dV)
    dB = scaling * (dV @ A.T)
    dm = (dy2 * z).sum(axis=0) / (n if dm_over_n else 1.0) * (m if dm_times_m else 1.0)
    return dx.reshape(x.shape), dA, dB, dm


def _wrong(gradient, hint, **mistake):
    """The Mistake in `gradient` that _grads makes with the options `mistake`."""
    index = ("dx", "dA", "dB", "dm").index(gradient)
    return Mistake(gradient, lambda **a: _grads(**a, **mistake)[index], hint)


DETACHED_HINT = ("the norm n = ‖W + s·B·A‖ is detached: a constant in the backward (as in the DoRA paper and PEFT), "
                 "so {} gets no term from differentiating n; this one differentiates through it")
LIKE_LORA_HINT = ("{} is plain LoRA's: in DoRA the gradient reaches x·Wᵀ + s·u·Bᵀ scaled per output column, "
                  "g = dy ⊙ (m / n); run LoRA's backward on g")
AXIS_HINT = ("n has one value per output row (N,): the norm of each row of W + s·B·A, over the input axis "
             "(axis=1); a norm over axis 0 gives one value per input column")
NO_S_HINT = "n is the norm of W + s·B·A, with the scaling s: ‖W + B·A‖ leaves s out"

MISTAKES = (
    _wrong("dA", DETACHED_HINT.format("dA"), detached=False),
    _wrong("dB", DETACHED_HINT.format("dB"), detached=False),
    _wrong("dx", LIKE_LORA_HINT.format("dx"), use_m=False, use_n=False),
    _wrong("dA", LIKE_LORA_HINT.format("dA"), use_m=False, use_n=False),
    _wrong("dB", LIKE_LORA_HINT.format("dB"), use_m=False, use_n=False),
    _wrong("dx", "m is missing: the gradient reaching the bracket is dy ⊙ (m / n), not dy / n", use_m=False),
    _wrong("dx", "1 / n is missing: the gradient reaching the bracket is dy ⊙ (m / n), not dy ⊙ m", use_n=False),
    _wrong("dx", "the LoRA part of dx, (g·B)·A, is missing the factor scaling", lora_dx_scaling=False),
    _wrong("dm", "dm = Σ_rows dy ⊙ z / n with z = x·Wᵀ + s·u·Bᵀ: the division by the norm n is missing",
           dm_over_n=False),
    _wrong("dm", "this is Σ_rows dy ⊙ y: the derivative of (m / n) ⊙ z with respect to m is z / n, without m",
           dm_times_m=True),
    _wrong("dx", NO_S_HINT, norm_scaling=1.0),
    _wrong("dm", NO_S_HINT, norm_scaling=1.0),
    _wrong("dm", "n is the norm of the adapted weight W + s·B·A, not of W alone (‖W‖ is only where m starts)",
           norm_scaling=0.0),
    # Right shapes only for a square W; elsewhere m / n fails to broadcast and error_hints names it.
    *(_wrong(gradient, AXIS_HINT, norm_axis=0) for gradient in ("dx", "dA", "dB", "dm")),
)

LAB = Lab(
    number=7,
    name="dora",
    title="the DoRA layer y = (m / ‖W + s·B·A‖) ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ): dx, dA, dB, dm with the norm detached",
    file_name="lab7_dora.py",
    functions=(
        LabFunction(name="dora_backward", arguments=("dy", "x", "W", "A", "B", "m", "scaling"),
                    gradients=("dx", "dA", "dB", "dm"), wrt=("x", "A", "B", "m"), forward=forward, make_cases=cases,
                    mistakes=MISTAKES, broadcast=("A", "B", "m"),
                    error_hints=(("could not be broadcast together", AXIS_HINT),)),
    ),
)
