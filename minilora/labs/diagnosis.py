"""Hints for a gradient that fails the numerical check, read from how it is wrong.

From the most specific to the most general:
  1. it equals one of the lab's typical mistakes (Mistake in the lab's spec), which says what slipped;
  2. it does not scale with the incoming gradient, though a backward is linear in it;
  3. it is off by exactly a named option of the lab (scaling): that factor is missing or doubled;
  4. gradcheck's own patterns: all zeros, the sign flipped, transposed, off by a constant factor.
"""

import numpy as np


def hint_for(function, gradient, check, returned, arguments, doubled, options):
    """One hint for `gradient`, or None.

    check: its gradcheck InputCheck; returned: the student's array for the incoming gradient in
    arguments[0]; doubled: the student's array for twice that gradient (None if that call failed).
    """
    return (_matching_mistake(function, gradient, returned, arguments)
            or _linearity(gradient, function.grad_argument, returned, doubled)
            or _named_factor(gradient, check, options)
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
            except ValueError:  # a formula that does not apply to this case's shapes
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


def _named_factor(gradient, check, options):
    a, n = check.analytic, check.numeric
    nonzero = np.abs(n) > check.atol
    if not nonzero.any():
        return None
    ratio = float(np.median(a[nonzero] / n[nonzero]))
    if not np.allclose(a, ratio * n, rtol=1e-4, atol=check.atol):
        return None
    for name, value in options.items():
        if not isinstance(value, float) or value in (0.0, 1.0):
            continue
        if np.isclose(ratio * value, 1.0, rtol=1e-4):
            return f"{gradient} is the right value divided by {name} ({value:.4g}): the factor {name} is missing"
        if np.isclose(ratio, value, rtol=1e-4):
            return f"{gradient} is the right value times {name} ({value:.4g}): {name} is applied twice"
    return None
