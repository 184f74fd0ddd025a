"""Hints for a gradient that fails the numerical check, read from how it is wrong.

From the most specific to the most general:
  1. it equals one of the lab's typical mistakes (Mistake in the lab's spec), which says what slipped;
  2. it does not scale with the incoming gradient, though a backward is linear in it;
  3. it is off by exactly a named option of the lab (scaling): that factor is missing or doubled;
  4. it is off by a constant factor: 1/n for a size n of the inputs is a mean where a sum belongs;
  5. gradcheck's own patterns: all zeros, the sign flipped, transposed.
A gradient wrong in a way none of these names gets no hint: a hint that guesses would mislead.
"""

import numpy as np


def hint_for(function, gradient, check, returned, arguments, doubled, options):
    """One hint for `gradient`, or None.

    check: its gradcheck InputCheck; returned: the student's array for the incoming gradient in
    arguments[0]; doubled: the student's array for twice that gradient (None if that call failed).
    """
    ratio = _ratio(check)
    return (_matching_mistake(function, gradient, returned, arguments)
            or _linearity(gradient, function.grad_argument, returned, doubled)
            or _named_factor(gradient, ratio, options)
            or _constant_factor(gradient, ratio, arguments)
            or check.hint())


def _same(x, y):
    return x.shape == y.shape and np.allclose(x, y, rtol=1e-6, atol=1e-9)


def _matching_mistake(function, gradient, returned, arguments):
    named = dict(zip(function.arguments, arguments))
    for mistake in function.mistakes:
        if mistake.gradient != gradient:
            continue
        with np.errstate(all="ignore"):
            try:
                wrong = np.asarray(mistake.formula(**named))
            except (ValueError, TypeError):  # a formula that does not apply to this case's shapes
                continue
        if _same(returned, wrong):
            return mistake.hint
    return None


def _linearity(gradient, grad_name, returned, doubled):
    if doubled is None or _same(doubled, 2 * returned):
        return None
    if _same(doubled, returned):
        return f"{gradient} stays the same when {grad_name} changes: the incoming gradient {grad_name} is not used"
    return (f"{gradient} does not double when {grad_name} doubles: a backward is linear in the incoming gradient "
            f"(it multiplies {grad_name} by local derivatives, never adds a constant to it or squares it)")


def _ratio(check):
    """r when the student's gradient is r × the numerical one everywhere (r not 0 or 1), else None."""
    a, n = check.analytic, check.numeric
    nonzero = np.abs(n) > check.atol
    if not nonzero.any():
        return None
    ratio = float(np.median(a[nonzero] / n[nonzero]))
    if not np.allclose(a, ratio * n, rtol=1e-4, atol=check.atol) or np.isclose(ratio, 0, atol=1e-6):
        return None
    return ratio


def _named_factor(gradient, ratio, options):
    if ratio is None:
        return None
    for name, value in options.items():
        if not isinstance(value, float) or value in (0.0, 1.0):
            continue
        if np.isclose(ratio * value, 1.0, rtol=1e-4):
            return f"{gradient} is the right value divided by {name} ({value:.4g}): the factor {name} is missing"
        if np.isclose(ratio, value, rtol=1e-4):
            return f"{gradient} is the right value times {name} ({value:.4g}): {name} is applied twice"
    return None


def _constant_factor(gradient, ratio, arguments):
    """A hint for a gradient that is the right one times a constant (a sign flip is gradcheck's)."""
    if ratio is None or np.isclose(ratio, -1, rtol=1e-4):
        return None
    sizes = set()
    for array in arguments:
        shape = getattr(array, "shape", ())
        sizes.update(shape)
        sizes.update(int(np.prod(shape[:k])) for k in range(2, len(shape) + 1))
    for n in sorted(s for s in sizes if s > 2):  # 2 is told apart below, as half or twice
        if np.isclose(ratio * n, 1, rtol=1e-4):
            return (f"{gradient} is the right value divided by {n}, a size of the inputs: a mean where a sum "
                    "belongs? (every copy or row adds its whole gradient)")
        if np.isclose(ratio, n, rtol=1e-4):
            return (f"{gradient} is the right value times {n}, a size of the inputs: a sum where a mean belongs, "
                    f"or a term added {n} times?")
    if np.isclose(ratio, 0.5, rtol=1e-4):
        return f"{gradient} is half the right value: one of two equal contributions is missing (or a mean over 2)"
    if np.isclose(ratio, 2, rtol=1e-4):
        return f"{gradient} is twice the right value: a contribution is counted twice"
    return f"{gradient} is {ratio:.4g} × the right value everywhere: a constant factor is off"
