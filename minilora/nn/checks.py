"""Argument checks shared by the layers and GPTConfig, so every bad size reads the same way."""

import numbers


def positive_int(name, value):
    """Raise unless value is an int >= 1 (bools are rejected: True is not a size)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        # A NumPy integer is named as such: "got np.int64(3)" alone would read as a valid size.
        numpy_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        hint = f" (a NumPy {type(value).__name__}: pass int(...))" if numpy_int and value >= 1 else ""
        raise ValueError(f"{name} must be a positive int, got {value!r}{hint}")
    return value


def probability(name, value):
    """value as a float; ValueError unless it is a real number in [0, 1) (NumPy's too; a dropout
    rate of 1 would keep nothing)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)
