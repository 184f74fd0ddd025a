"""Numerical gradient checking: does an op's backward agree with its forward?

gradcheck(fn, inputs) turns fn's output into one number L = Σ out·v, with a fixed random v of the
output's shape (so every output element counts, each with its own weight), then compares two
gradients of L for every element of every input that requires grad:

    analytic:  what backward computes (out.backward(v))
    numeric:   the central difference (L(x + eps) - L(x - eps)) / (2·eps), one element at a time

They must agree to |analytic - numeric| <= atol + rtol·|numeric|, and both must be finite: a NaN
or inf anywhere, in either gradient, is a failure of its own (NaN compares false with everything,
so without this rule it would pass every tolerance). This only works in float64:
the difference L(x + eps) - L(x - eps) cancels almost every digit of L, and float32 has too few.
It is the check every op in minilora passes, and the one a student runs on a backward they wrote.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from minilora import backend
from minilora.checks import check_number
from minilora.tensor import Tensor, no_grad


@dataclass(repr=False, eq=False)
class InputCheck:
    """How one input's gradient compared: arrays of its shape, and the element that is furthest off."""

    index: int
    name: Optional[str]
    analytic: np.ndarray
    numeric: np.ndarray
    atol: float
    rtol: float

    def __post_init__(self):
        with np.errstate(invalid="ignore"):  # inf - inf is NaN; such elements are non-finite below
            self.abs_err = np.abs(self.analytic - self.numeric)
            self.allowed = self.atol + self.rtol * np.abs(self.numeric)
            # Relative to the larger of the two values; atol as a floor keeps zero gradients from dividing by 0.
            scale = np.maximum(np.maximum(np.abs(self.analytic), np.abs(self.numeric)), self.atol)
            self.rel_err = self.abs_err / scale
            misses = self.abs_err / self.allowed
        self.nonfinite_analytic = ~np.isfinite(self.analytic)
        self.nonfinite_numeric = ~np.isfinite(self.numeric)
        self.nonfinite = self.nonfinite_analytic | self.nonfinite_numeric
        self.wrong = self.nonfinite | (self.abs_err > self.allowed)
        # The worst element is the first non-finite one, else the one that misses its allowance by
        # the largest factor.
        flat = int(np.argmax(self.nonfinite)) if self.nonfinite.any() else int(np.argmax(misses))
        self.worst_element = tuple(int(i) for i in np.unravel_index(flat, self.abs_err.shape))

    @property
    def label(self):
        return f"input {self.index}" + (f" ({self.name})" if self.name else "")

    @property
    def ok(self):
        return not self.wrong.any()

    @property
    def max_abs_err(self):
        return float(self.abs_err.max(initial=0.0))

    @property
    def max_rel_err(self):
        return float(self.rel_err.max(initial=0.0))

    @property
    def badness(self):
        if self.nonfinite.any():
            return np.inf
        return float((self.abs_err / self.allowed).max(initial=0.0))

    def nonfinite_message(self):
        """What is NaN or inf and where it first is, or None when both gradients are finite."""
        for which, mask, values, cause in (
                ("analytic", self.nonfinite_analytic, self.analytic,
                 "backward produced it: look for a division by zero, a sqrt or log of 0, or 0·inf"),
                ("numeric", self.nonfinite_numeric, self.numeric,
                 "the forward itself is NaN or inf at x ± eps: choose inputs inside the op's domain")):
            if mask.any():
                first = tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))
                return (f"the {which} gradient has {int(mask.sum())} non-finite element(s) (NaN or inf), "
                        f"the first at {first}: {float(values[first])}; {cause}")
        return None

    def hint(self):
        """A likely cause, when the wrong gradient has a recognisable pattern."""
        if self.nonfinite.any():
            return self.nonfinite_message()
        a, n = self.analytic, self.numeric

        def close(x, y):
            return bool(np.all(np.abs(x - y) <= self.atol + self.rtol * np.abs(y)))

        if not np.any(a) and np.any(n):
            return "the analytic gradient is all zeros: does backward return a gradient for this input (not None)?"
        if close(-a, n):
            return "analytic = -numeric everywhere: a sign error in backward?"
        if a.ndim == 2 and a.shape[0] == a.shape[1] and close(a.T, n):
            return "analytic is the numeric gradient transposed: a missing or extra transpose in backward?"
        nonzero = np.abs(n) > self.atol
        if nonzero.any():
            ratio = float(np.median(a[nonzero] / n[nonzero]))
            if close(a, ratio * n):
                return f"analytic = {ratio:.4g} × numeric everywhere: a constant factor is off" + _factor_cause(ratio)
        return None


def _factor_cause(ratio):
    """The usual cause of a gradient off by `ratio`, for the two factors that have one."""
    if abs(ratio - 0.5) < 1e-3:
        return " (an input used twice whose two contributions were not both counted gives 0.5)"
    if abs(ratio - 2.0) < 1e-3:
        return " (a contribution counted twice gives 2)"
    return ""


@dataclass(repr=False, eq=False)
class GradcheckResult:
    """The outcome of gradcheck: `ok`, the largest errors, and where the worst element is. print() it."""

    inputs: list
    atol: float
    rtol: float

    def __post_init__(self):
        worst = max(self.inputs, key=lambda c: c.badness)
        self.ok = all(c.ok for c in self.inputs)
        self.max_abs_err = max(c.max_abs_err for c in self.inputs)
        self.max_rel_err = max(c.max_rel_err for c in self.inputs)
        self.worst_input = worst.index
        self.worst_name = worst.name
        self.worst_element = worst.worst_element
        self.analytic = float(worst.analytic[worst.worst_element])
        self.numeric = float(worst.numeric[worst.worst_element])

    def __str__(self):
        return self.report()

    __repr__ = __str__  # a notebook cell that ends in gradcheck(...) shows the report

    def report(self):
        """A readable account: what is wrong, where, by how much, and a hint when there is one."""
        rule = (f"An element passes when |analytic - numeric| <= atol + rtol·|numeric| "
                f"(atol={self.atol:g}, rtol={self.rtol:g}).")
        if self.ok:
            count = sum(c.analytic.size for c in self.inputs)
            labels = " and ".join(f"{c.label} of shape {c.analytic.shape}" for c in self.inputs)
            return (f"gradcheck passed for {labels}: {count} elements, max abs err {self.max_abs_err:.2e}, "
                    f"max rel err {self.max_rel_err:.2e}")
        worst = next(c for c in self.inputs if c.index == self.worst_input)
        e = self.worst_element
        if worst.nonfinite.any():
            lines = [f"gradcheck FAILED: the gradient of {worst.label} is not finite at element {e}: "
                     f"analytic {self.analytic:.6g}, numeric {self.numeric:.6g}"]
        else:
            lines = [f"gradcheck FAILED: the gradient of {worst.label} is wrong at element {e}: "
                     f"analytic {self.analytic:.6g}, numeric {self.numeric:.6g} "
                     f"(off by {worst.abs_err[e]:.3g}, allowed {worst.allowed[e]:.3g})"]
        for c in self.inputs:
            if c.ok:
                lines.append(f"  {c.label}, shape {c.analytic.shape}: ok (max abs err {c.max_abs_err:.2e})")
                continue
            lines.append(f"  {c.label}, shape {c.analytic.shape}: {int(c.wrong.sum())} of {c.wrong.size} elements "
                         f"wrong (max abs err {c.max_abs_err:.3g}, max rel err {c.max_rel_err:.3g})")
            hint = c.hint()
            if hint:
                lines.append(f"    hint: {hint}")
            if c.analytic.size <= 12:
                lines.append(f"    analytic: {np.array2string(c.analytic, precision=4)}".replace("\n", " "))
                lines.append(f"    numeric:  {np.array2string(c.numeric, precision=4)}".replace("\n", " "))
        lines.append(rule)
        return "\n".join(lines)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, names=None, seed=0):
    """Compare fn's analytic gradients (backward) with central differences, for every input that requires grad.

    fn: called as fn(*inputs); returns a float64 Tensor of any shape.
    inputs: a list or tuple of Tensors (or one Tensor); those with requires_grad=True must be float64 leaves.
        Others (integer indices, constants) are passed to fn unchanged.
    names: optional names of the inputs, used in the report ("input 1 (W)").
    seed: seeds the random weights v that turn a non-scalar output into one number.
    Returns a GradcheckResult; fn must be deterministic (seed dropout inside fn).
    The inputs' data is restored exactly and their .grad left as it was.
    """
    check_number("gradcheck: eps", eps, above=0)
    check_number("gradcheck: atol", atol, above=0)
    check_number("gradcheck: rtol", rtol, low=0)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    names = _check_names(names, len(inputs))
    checked = _check_inputs(inputs)

    out = fn(*inputs)
    _check_output(out)
    if out.size == 1:
        weights = np.ones(out.shape)  # a scalar output is checked as it is
    else:
        weights = np.random.default_rng(seed).standard_normal(out.shape)
    weights = backend.to_device(weights, out.device)

    analytic = _analytic_gradients(out, weights, [inputs[i] for i in checked])

    def objective():
        with no_grad():
            return float((fn(*inputs).data * weights).sum())

    checks = [InputCheck(i, names[i], a, _numeric_gradient(objective, inputs[i], eps), atol, rtol)
              for i, a in zip(checked, analytic)]
    return GradcheckResult(checks, atol, rtol)


def assert_gradcheck(fn, inputs, **options):
    """gradcheck that raises AssertionError with the full report when a gradient is wrong; returns the result."""
    result = gradcheck(fn, inputs, **options)
    if not result.ok:
        raise AssertionError(result.report())
    return result


def _check_names(names, count):
    if names is None:
        return [None] * count
    names = list(names)
    if len(names) != count:
        raise ValueError(f"gradcheck: names has {len(names)} entries for {count} inputs")
    return names


def _check_inputs(inputs):
    """Indices of the inputs to check; clear errors for inputs that cannot be checked."""
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"gradcheck: input {i} must be a Tensor, got {type(t).__name__}")
    checked = [i for i, t in enumerate(inputs) if t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is no gradient to check")
    for i in checked:
        t = inputs[i]
        if t.dtype != np.float64:
            raise TypeError(
                f"gradcheck: input {i} is {t.dtype}, but gradient checks need float64. The central difference "
                "subtracts two nearly equal values, L(x + eps) - L(x - eps), which cancels most digits: float32 "
                "keeps about 7, so with eps=1e-6 what is left is rounding noise. Use x.to(dtype='float64') "
                "(or module.to(dtype='float64')).")
        if t.size == 0:
            raise ValueError(f"gradcheck: input {i} has shape {t.shape}, no elements to check")
        if not t.is_leaf:
            raise ValueError(f"gradcheck: input {i} is the output of an op, not a leaf, so it gets no .grad; "
                             "pass x.detach().requires_grad_() instead")
        if not getattr(t.data.flags, "writeable", True):
            raise ValueError(f"gradcheck: input {i}'s data is read-only; pass a copy")
    for i in checked:
        for j, other in enumerate(inputs):
            if j != i and backend.xp_of(other.data).shares_memory(inputs[i].data, other.data):
                # Nudging one element of input i would move input j too, so the central difference
                # would measure both at once: a right gradient would be reported wrong.
                raise ValueError(f"gradcheck: inputs {min(i, j)} and {max(i, j)} share memory (views of one "
                                 "array, or one tensor twice); pass copies: minilora.tensor(array) makes one")
    return checked


def _check_output(out):
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if out.dtype != np.float64:
        raise TypeError(f"gradcheck: fn returned a {out.dtype} Tensor; with float64 inputs it must return float64")
    if not out.requires_grad:
        raise ValueError("gradcheck: fn's output does not depend on any input that requires grad "
                         "(or it was computed under no_grad())")


def _analytic_gradients(out, weights, tensors):
    """d(Σ out·weights)/d(tensor) for each tensor, by backward, as NumPy arrays; .grad restored afterwards."""
    previous = [t.grad for t in tensors]
    for t in tensors:
        t.grad = None
    try:
        out.backward(weights)
        # An input that fn did not use gets no .grad: its gradient is zero.
        return [np.zeros(t.shape) if t.grad is None else backend.to_numpy(t.grad).astype(np.float64)
                for t in tensors]
    finally:
        for t, g in zip(tensors, previous):
            t.grad = g


def _numeric_gradient(objective, tensor, eps):
    """Central differences, nudging one element of tensor.data at a time (in place, then restored)."""
    data = tensor.data
    grad = np.zeros(tensor.shape)
    for element in np.ndindex(*tensor.shape):
        original = data[element].item()
        try:
            data[element] = original + eps
            plus = objective()
            data[element] = original - eps
            minus = objective()
        finally:
            data[element] = original
        grad[element] = (plus - minus) / (2 * eps)
    return grad
