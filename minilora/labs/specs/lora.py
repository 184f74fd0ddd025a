"""Lab 4, lora: the backward of the LoRA layer, with the base weight W frozen.

    u = x·Aᵀ        y = x·Wᵀ + s·u·Bᵀ          (s = scaling)
    v = dy·B        dx = dy·W + s·v·A        dA = s·vᵀ·x        dB = s·dyᵀ·u

With leading axes on x (a batch of sequences), dA and dB sum over every row of every sequence.
B is drawn non-zero: at B = 0 (how LoRA starts) dA is exactly zero and would hide any bug in it.
"""

from minilora.kernels import reference
from minilora.labs.draw import away_from_zero, sizes
from minilora.labs.spec import Case, Lab, LabFunction, Mistake


def forward(x, W, A, B, scaling):
    y, _ = reference.lora_forward(x, W, A, B, scaling)
    return y, {}


def _case(rng, x_shape, n, rank, why):
    k = x_shape[-1]
    scaling = float(rng.uniform(1.5, 4.0))  # never 1, so a missing scaling shows
    return Case(f"x {x_shape}, W ({n}, {k}), A ({rank}, {k}), B ({n}, {rank}), scaling {scaling:.3g}{why}",
                {"x": away_from_zero(rng, x_shape), "W": away_from_zero(rng, (n, k)),
                 "A": away_from_zero(rng, (rank, k)), "B": away_from_zero(rng, (n, rank))},
                {"scaling": scaling})


def _rank_first(values):
    """The smallest value first: LoRA's rank is below the layer's sizes."""
    return [min(values)] + [v for v in values if v != min(values)]


def cases(rng):
    rank, m, k, n = _rank_first(sizes(rng, 4))
    rank2, batch, time, k2, n2 = _rank_first(sizes(rng, 5))
    m3, k3, n3 = sizes(rng, 3)
    return [_case(rng, (m, k), n, rank, ""),
            _case(rng, (batch, time, k2), n2, rank2, ", x with two leading axes"),
            _case(rng, (m3, k3), n3, 1, ", rank 1")]


MISTAKES = (
    Mistake("dx", lambda dy, W, **_: dy @ W,
            "dx is missing the LoRA path: x also reaches y through u = x·Aᵀ, which adds s·(dy·B)·A"),
    Mistake("dx", lambda dy, W, A, B, **_: dy @ W + (dy @ B) @ A,
            "the LoRA part of dx, (dy·B)·A, is missing the factor scaling"),
)

LAB = Lab(
    number=4,
    name="lora",
    title="the LoRA layer y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ: dx, dA, dB with W frozen",
    file_name="lab4_lora.py",
    functions=(
        LabFunction(name="lora_backward", arguments=("dy", "x", "W", "A", "B", "scaling"),
                    gradients=("dx", "dA", "dB"), wrt=("x", "A", "B"), forward=forward, make_cases=cases,
                    mistakes=MISTAKES),
    ),
)
