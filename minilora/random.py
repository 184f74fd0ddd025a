"""Random numbers for initialisation and dropout, reproducible with `minilora.manual_seed`.

NumPy draws on "cpu" and CuPy draws on "cuda", each from its own generator, so a seed fixes the
numbers on each device (the two devices do not produce the same numbers as each other).
"""

import numpy as np

from minilora import backend

_generators = {}
_seed = 0


def manual_seed(seed):
    """Restart every device's generator from `seed` (an int >= 0)."""
    global _seed
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    _seed = int(seed)
    _generators.clear()


def _generator(device):
    if device not in _generators:
        if device == "cpu":
            _generators[device] = np.random.default_rng(_seed)
        else:
            _generators[device] = backend.xp_for("cuda").random.RandomState(_seed)
    return _generators[device]


def randn(shape, dtype="float32", device="cpu"):
    """Standard normal samples, an array of `shape` on `device`."""
    dtype = backend.parse_dtype(dtype)
    return _generator(device).standard_normal(size=shape, dtype=dtype)


def rand(shape, dtype="float32", device="cpu"):
    """Uniform samples in [0, 1), an array of `shape` on `device`."""
    dtype = backend.parse_dtype(dtype)
    gen = _generator(device)
    draw = gen.random if device == "cpu" else gen.random_sample
    return draw(size=shape, dtype=dtype)
