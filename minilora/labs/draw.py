"""Random sizes and values for lab cases, chosen so that a wrong backward cannot pass by luck.

Sizes within a case are distinct and at least 2: with M = K a missing transpose keeps the right
shape, and with a size of 1 a missing sum over that axis does too. A case that wants a size of 1
(an axis that broadcasts, rank 1) writes the 1 itself. Values are never near zero, so no term of a
gradient can vanish on the test inputs.
"""

import zlib

import numpy as np


def sizes(rng, count, low=2, high=8):
    """`count` distinct ints in [low, high), in random order."""
    return [int(n) for n in rng.choice(np.arange(low, high), size=count, replace=False)]


def rank_first(values):
    """The smallest value first: a LoRA rank drawn with the layer's sizes stays below them."""
    return [min(values)] + [v for v in values if v != min(values)]


def away_from_zero(rng, shape, low=0.5, high=1.5):
    """float64 values with |v| in [low, high) and random signs."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, size=shape)


def case_rng(seed, *names):
    """A Generator for one part of a check, from the base seed and the names that say which part
    ("softmax", "softmax_backward", "case 2"): each case draws from its own stream, so what one
    case draws, or whether it runs at all, never changes another's inputs."""
    key = zlib.crc32("/".join(names).encode())
    return np.random.default_rng(np.random.SeedSequence([seed, key]))
