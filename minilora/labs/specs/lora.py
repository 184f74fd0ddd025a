"""Lab 4, lora: the backward of the LoRA layer, with the base weight W frozen; then with dropout.

    u = x·Aᵀ        y = x·Wᵀ + s·u·Bᵀ          (s = scaling)
    v = dy·B        dx = dy·W + s·v·A        dA = s·vᵀ·x        dB = s·dyᵀ·u

With leading axes on x (a batch of sequences), dA and dB sum over every row of every sequence.
B is drawn non-zero: at B = 0 (how LoRA starts) dA is exactly zero and would hide any bug in it.

Part 2 adds LoRA's dropout, which applies to the adapter's input only: with the kept values
rescaled, x_d = x·mask/(1 - p) (mask of 0s and 1s, p the probability of dropping), u = x_d·Aᵀ and
y = x·Wᵀ + s·u·Bᵀ. Then dA = s·vᵀ·x_d, dB = s·dyᵀ·u, and dx = dy·W + s·(v·A)·mask/(1 - p).
"""

import numpy as np

from minilora.kernels import reference
from minilora.labs.draw import away_from_zero, rank_first, sizes
from minilora.labs.spec import Case, Lab, LabFunction, Mistake


def forward(x, W, A, B, scaling):
    y, _ = reference.lora_forward(x, W, A, B, scaling)
    return y, {}


def dropout_forward(x, W, A, B, mask, scaling, p):
    dropped = x * mask / (1 - p)
    return x @ W.T + scaling * ((dropped @ A.T) @ B.T), {}


def _case(rng, x_shape, n, rank, why, dropout=False):
    k = x_shape[-1]
    scaling = float(rng.uniform(1.5, 4.0))  # never 1, so a missing scaling shows
    arrays = {"x": away_from_zero(rng, x_shape), "W": away_from_zero(rng, (n, k)),
              "A": away_from_zero(rng, (rank, k)), "B": away_from_zero(rng, (n, rank))}
    options = {"scaling": scaling}
    description = f"x {x_shape}, W ({n}, {k}), A ({rank}, {k}), B ({n}, {rank}), scaling {scaling:.3g}"
    if dropout:
        p = float(rng.uniform(0.2, 0.5))  # far from 0 (no dropout) and from 1 - p = p
        mask = (rng.random(x_shape) >= p).astype(np.float64)
        mask.flat[:2] = (0.0, 1.0)  # at least one value dropped and one kept
        arrays["mask"] = mask
        options["p"] = p
        description += f", dropout p {p:.2g}"
    return Case(description + why, arrays, options)


def cases(rng):
    rank, m, k, n = rank_first(sizes(rng, 4))
    rank2, batch, time, k2, n2 = rank_first(sizes(rng, 5))
    m3, k3, n3 = sizes(rng, 3)
    return [_case(rng, (m, k), n, rank, ""),
            _case(rng, (batch, time, k2), n2, rank2, ", x with two leading axes"),
            _case(rng, (m3, k3), n3, 1, ", rank 1")]


def dropout_cases(rng):
    rank, m, k, n = rank_first(sizes(rng, 4))
    rank2, batch, time, k2, n2 = rank_first(sizes(rng, 5))
    return [_case(rng, (m, k), n, rank, "", dropout=True),
            _case(rng, (batch, time, k2), n2, rank2, ", x with two leading axes", dropout=True)]


RESCALES = {"1/(1-p)": lambda p: 1 / (1 - p), "none": lambda p: 1.0, "1/p": lambda p: 1 / p}


def _grads(dy, x, W, A, B, scaling, mask=None, p=0.0, rescale="1/(1-p)", lora_dx_factor=1.0, lora_dx_scaling=True,
           base_dx=True, drop_in_dA=True, drop_in_u=True, drop_in_dx=True, drop_all_dx=False):
    """(dx, dA, dB), right by default; each option makes one of the mistakes below."""
    N, K = W.shape
    x2, dy2 = x.reshape(-1, K), dy.reshape(-1, N)
    keep = np.ones_like(x2) if mask is None else mask.reshape(-1, K) * RESCALES[rescale](p)
    dropped = x2 * keep
    u = (dropped if drop_in_u else x2) @ A.T
    v = dy2 @ B
    lora_dx = lora_dx_factor * (scaling if lora_dx_scaling else 1.0) * (v @ A)
    through_W = dy2 @ W if base_dx else 0.0
    dx = (through_W + lora_dx) * keep if drop_all_dx else through_W + lora_dx * (keep if drop_in_dx else 1)
    dA = scaling * (v.T @ (dropped if drop_in_dA else x2))
    dB = scaling * (dy2.T @ u)
    return dx.reshape(x.shape), dA, dB


def _wrong(gradient, hint, **mistake):
    """The Mistake in `gradient` that _grads makes with the options `mistake`."""
    index = ("dx", "dA", "dB").index(gradient)
    return Mistake(gradient, lambda **a: _grads(**a, **mistake)[index], hint)


MISTAKES = (
    _wrong("dx", "dx is missing the LoRA path: x also reaches y through u = x·Aᵀ, which adds s·(dy·B)·A",
           lora_dx_factor=0.0),
    _wrong("dx", "dx is missing the path through the frozen W: W gets no gradient, but x still reaches y "
                 "through x·Wᵀ, which adds dy·W", base_dx=False),
    _wrong("dx", "the LoRA part of dx, (dy·B)·A, is missing the factor scaling", lora_dx_scaling=False),
    # (A scaling missing or doubled in dA or dB is named by the diagnosis from the numbers.)
    Mistake("dx", lambda **a: _grads(**a, lora_dx_factor=a["scaling"])[0],
            "the LoRA part of dx has scaling twice: it is s·(dy·B)·A, with s once"),
    _wrong("dx", "the LoRA part of dx has the wrong sign: dx = dy·W + s·(dy·B)·A", lora_dx_factor=-1.0),
)

DROP_HINT = ("the dropout rescales what it keeps by 1/(1 - p): the adapter sees x·mask/(1 - p), so that "
             "factor is in dA, in u (for dB) and in the LoRA part of dx")
P_HINT = "p is the probability of dropping a value, so kept values are scaled by 1/(1 - p), not 1/p"
DROPOUT_MISTAKES = MISTAKES + (
    _wrong("dA", "dA must use the input that reached A, the dropped x·mask/(1 - p), not x itself", drop_in_dA=False),
    _wrong("dB", "u in dB = s·dyᵀ·u is the forward's u, computed from the dropped x·mask/(1 - p)", drop_in_u=False),
    _wrong("dx", "the LoRA part of dx passes back through the dropout: multiply s·(dy·B)·A by mask/(1 - p)",
           drop_in_dx=False),
    _wrong("dx", "only the LoRA path goes through the dropout: dy·W reaches x directly, unmasked", drop_all_dx=True),
) + tuple(_wrong(gradient, hint, rescale=rescale)
          for rescale, hint in (("none", DROP_HINT), ("1/p", P_HINT)) for gradient in ("dx", "dA", "dB"))

LAB = Lab(
    number=4,
    name="lora",
    title="the LoRA layer y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ: dx, dA, dB with W frozen, then with dropout",
    file_name="lab4_lora.py",
    functions=(
        LabFunction(name="lora_backward", arguments=("dy", "x", "W", "A", "B", "scaling"),
                    gradients=("dx", "dA", "dB"), wrt=("x", "A", "B"), forward=forward, make_cases=cases,
                    mistakes=MISTAKES, broadcast=("A", "B")),
        LabFunction(name="lora_dropout_backward", arguments=("dy", "x", "W", "A", "B", "scaling", "mask", "p"),
                    gradients=("dx", "dA", "dB"), wrt=("x", "A", "B"), forward=dropout_forward,
                    make_cases=dropout_cases, mistakes=DROPOUT_MISTAKES, broadcast=("A", "B")),
    ),
)
