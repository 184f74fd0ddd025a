"""check_number: the one check behind every numeric option (lr, eps, scaling, temperature, ...).

NaN compares false with everything, so a plain `value < 0` test lets it through, and one NaN
option turns every parameter it touches into NaN. Here NaN is always refused, and so is ±inf
unless the option gives inf a meaning (max_norm=inf: never clip).
"""

import math
import numbers


def check_number(name, value, low=None, above=None, below=None, allow_inf=False):
    """Raise unless `value` is a real number (not a bool) that is not NaN, finite unless allow_inf,
    and within the bounds given: low <= value, above < value, value < below. Returns it as given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if low is not None and below is not None:
        expected = f"in [{low}, {below})"
    else:
        bounds = [f">= {low}" if low is not None else None, f"> {above}" if above is not None else None,
                  f"< {below}" if below is not None else None]
        expected = " and ".join(b for b in bounds if b)
    finite = "a number" if allow_inf else "a finite number"
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be {finite}{f' ({expected})' if expected else ''}, got {value!r}")
    if ((low is not None and value < low) or (above is not None and value <= above)
            or (below is not None and value >= below)):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value
