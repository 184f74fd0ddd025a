"""Argument checks shared by the layers and GPTConfig, so every bad size reads the same way."""


def positive_int(name, value):
    """Raise unless value is an int >= 1 (bools are rejected: True is not a size)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def probability(name, value):
    """Raise unless value is a number in [0, 1) (a dropout rate of 1 would keep nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)
