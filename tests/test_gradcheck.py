"""minilora.gradcheck: it passes correct ops, catches classic backward bugs, and reports them clearly.

Each planted bug is a Function whose forward is right and whose backward has one mistake that
students really make; the gradients keep the right shapes, so only a numerical check can see them.
"""

import numpy as np
import pytest

import minilora
from minilora import F
from minilora.function import Function


# ---- planted bugs ---------------------------------------------------------------------------------
class MatMulMissingTranspose(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        return grad @ b, a.T @ grad  # should be grad @ b.T; square matrices hide the shape error


class AddBiasWrongAxis(Function):
    """x (n, n) + bias (n,), the bias broadcast over the rows."""

    @staticmethod
    def forward(ctx, x, bias):
        return x + bias

    @staticmethod
    def backward(ctx, grad):
        return grad, grad.sum(axis=1)  # should sum over the rows, axis 0; same shape when x is square


class SubWrongSign(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, grad):
        return grad, grad  # should be -grad for b


def square_with_gradient(coefficient):
    """x * x whose backward returns grad·coefficient·x, where 2·grad·x is right."""

    class Square(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved
            return grad * coefficient * x

    return Square


SquareMissingAccumulation = square_with_gradient(1.0)   # x is used twice, and one use was not counted
SquareOffByPoint2 = square_with_gradient(0.4)           # a factor that has no usual cause


class MaxOffByOne(Function):
    """max over the last axis."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.max(axis=-1)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        winner = (x.argmax(axis=-1) + 1) % x.shape[-1]  # should be argmax itself
        return ctx.xp.eye(x.shape[-1])[winner] * grad[..., None]


class Exp(Function):
    """exp's forward; the planted bugs below give it wrong backwards."""

    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.exp(x)
        ctx.save_for_backward(y)
        return y


class ExpIgnoresIncomingGradient(Exp):
    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return y  # should be grad * y: right only when the output is summed with weight 1


class MeanMissingCount(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.mean(axis=0)

    @staticmethod
    def backward(ctx, grad):
        return ctx.xp.broadcast_to(grad, ctx.shape)  # should divide by the count, x.shape[0]


def _inputs(rng, *shapes):
    return [minilora.tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]


PLANTED_BUGS = {
    "matmul missing transpose": (MatMulMissingTranspose.apply, [(4, 4), (4, 4)], 0),
    "bias summed over the wrong axis": (AddBiasWrongAxis.apply, [(4, 4), (4,)], 1),
    "wrong sign": (SubWrongSign.apply, [(3, 2), (3, 2)], 1),
    "reused input counted once": (SquareMissingAccumulation.apply, [(3, 3)], 0),
    "max backward off by one": (MaxOffByOne.apply, [(3, 5)], 0),
    "incoming gradient ignored": (ExpIgnoresIncomingGradient.apply, [(2, 3)], 0),
    "mean missing 1/count": (MeanMissingCount.apply, [(4, 3)], 0),
}


@pytest.mark.parametrize("bug", PLANTED_BUGS)
def test_planted_bug_is_caught(rng, bug):
    fn, shapes, wrong_input = PLANTED_BUGS[bug]
    inputs = _inputs(rng, *shapes)
    result = minilora.gradcheck(fn, inputs)
    assert not result.ok
    assert result.worst_input == wrong_input
    assert result.max_abs_err > 1e-2
    assert abs(result.analytic - result.numeric) > 1e-2
    assert "FAILED" in str(result)
    with pytest.raises(AssertionError, match=f"gradient of input {wrong_input}"):
        minilora.assert_gradcheck(fn, inputs)


CORRECT = {
    "matmul": (F.matmul, [(4, 4), (4, 4)]),
    "bias add": (F.add, [(4, 4), (4,)]),
    "sub": (F.sub, [(3, 2), (3, 2)]),
    "square": (lambda x: x * x, [(3, 3)]),
    "max": (lambda x: x.max(axis=-1), [(3, 5)]),
    "exp": (F.exp, [(2, 3)]),
    "mean": (lambda x: x.mean(axis=0), [(4, 3)]),
    "linear + gelu + layer_norm": (lambda x, w, b: F.layer_norm(F.gelu(x @ w.T + b)), [(2, 3, 4), (5, 4), (5,)]),
}


@pytest.mark.parametrize("name", CORRECT)
def test_correct_ops_pass_with_tiny_errors(rng, name):
    fn, shapes = CORRECT[name]
    inputs = _inputs(rng, *shapes)
    result = minilora.gradcheck(fn, inputs)
    assert result.ok, result
    assert str(result).startswith("gradcheck passed")
    # Far inside the defaults: a correct backward passes with tolerances 100 times tighter too. (Not
    # a bound on max_rel_err alone: on an element near 0, rounding of about 1e-10 is large relative.)
    strict = minilora.gradcheck(fn, inputs, atol=1e-7, rtol=1e-5)
    assert strict.ok, strict


def test_report_names_the_input_element_and_values(rng):
    x, w = _inputs(rng, (4, 4), (4, 4))
    result = minilora.gradcheck(MatMulMissingTranspose.apply, [x, w], names=["x", "W"])
    # Recompute the true gradient independently and check the reported numbers against it.
    weights = np.random.default_rng(0).standard_normal((4, 4))
    true_grad_x = weights @ w.numpy().T
    buggy_grad_x = weights @ w.numpy()
    assert result.worst_name == "x"
    e = result.worst_element
    assert isinstance(e, tuple) and len(e) == 2
    # The central difference of this linear function is exact but for rounding: about
    # 1e-16·|L| / eps = 1e-10·|L| absolute, which is a large relative error on a small element.
    np.testing.assert_allclose(result.numeric, true_grad_x[e], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(result.analytic, buggy_grad_x[e], rtol=1e-12, atol=1e-12)
    report = str(result)
    assert f"input 0 (x) is wrong at element {e}" in report
    assert f"analytic {result.analytic:.6g}, numeric {result.numeric:.6g}" in report
    assert "input 1 (W), shape (4, 4): ok" in report


def test_hints_for_recognisable_mistakes(rng):
    sign = minilora.gradcheck(SubWrongSign.apply, _inputs(rng, (3, 2), (3, 2)))
    assert "sign error" in str(sign)
    factor = minilora.gradcheck(SquareMissingAccumulation.apply, _inputs(rng, (3, 3)))
    assert "analytic = 0.5 × numeric" in str(factor) and "used twice" in str(factor)


def test_a_factor_hint_names_a_cause_only_for_the_factor_it_fits(rng):
    report = str(minilora.gradcheck(SquareOffByPoint2.apply, _inputs(rng, (3, 3))))
    assert "analytic = 0.2 × numeric everywhere: a constant factor is off" in report
    assert "used twice" not in report


def test_scalar_output_is_checked_as_is(rng):
    (x,) = _inputs(rng, (3,))
    result = minilora.gradcheck(lambda t: (t * t).sum(), [x])
    assert result.ok
    # With a one-element output there is no random projection: the reported values are dL/dx itself.
    assert result.analytic == pytest.approx(2 * x.numpy()[result.worst_element])


def test_inputs_are_restored_and_grads_left_alone(rng):
    x, w = _inputs(rng, (3, 4), (4, 2))
    before_x, before_w = x.numpy().copy(), w.numpy().copy()
    w.grad = np.full((4, 2), 7.0)
    minilora.gradcheck(F.matmul, [x, w])
    np.testing.assert_array_equal(x.numpy(), before_x)  # bit for bit
    np.testing.assert_array_equal(w.numpy(), before_w)
    assert x.grad is None
    np.testing.assert_array_equal(w.grad, np.full((4, 2), 7.0))


def test_data_is_restored_even_when_fn_raises(rng):
    (x,) = _inputs(rng, (3,))
    before = x.numpy().copy()
    calls = []

    def fn(t):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("fails on a perturbed input")
        return t * 2.0

    with pytest.raises(RuntimeError, match="perturbed"):
        minilora.gradcheck(fn, [x])
    np.testing.assert_array_equal(x.numpy(), before)


def test_constants_and_integer_inputs_pass_through(rng):
    logits = minilora.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    targets = minilora.tensor(rng.integers(0, 3, 4))
    scale = minilora.tensor(rng.standard_normal(3))
    result = minilora.gradcheck(lambda x, t, s: F.cross_entropy(x * s, t), [logits, targets, scale])
    assert result.ok and result.worst_input == 0


def test_unused_input_has_zero_gradient(rng):
    x, unused = _inputs(rng, (3,), (2,))
    assert minilora.gradcheck(lambda a, b: a * 2.0, [x, unused]).ok


def test_float32_inputs_are_refused_with_the_reason(rng):
    x = minilora.tensor(rng.standard_normal(3), dtype="float32", requires_grad=True)
    with pytest.raises(TypeError, match=r"input 0 is float32.*float64.*cancels"):
        minilora.gradcheck(F.exp, [x])


def test_bad_arguments(rng):
    (x,) = _inputs(rng, (3,))
    with pytest.raises(ValueError, match="no input has requires_grad"):
        minilora.gradcheck(F.exp, [x.detach()])
    with pytest.raises(ValueError, match="not a leaf"):
        minilora.gradcheck(F.exp, [x * 2.0])
    with pytest.raises(TypeError, match="input 1 must be a Tensor"):
        minilora.gradcheck(lambda a, b: a, [x, 3.0])
    with pytest.raises(TypeError, match="fn must return a Tensor"):
        minilora.gradcheck(lambda a: a.numpy(), [x])
    with pytest.raises(ValueError, match="names has 2 entries for 1 inputs"):
        minilora.gradcheck(F.exp, [x], names=["x", "y"])
    with pytest.raises(ValueError, match="does not depend"):
        minilora.gradcheck(lambda a: a.detach() * 2.0, [x])


def test_inputs_that_share_memory_are_refused_rather_than_reported_wrong(rng):
    """Nudging one element of base[:3] moves base[1:] too: the difference quotient would measure
    both, and a right gradient would be reported wrong."""
    from minilora.tensor import Tensor

    base = rng.standard_normal(4)
    a, b = Tensor(base[:3], requires_grad=True), Tensor(base[1:], requires_grad=True)
    with pytest.raises(ValueError, match=r"inputs 0 and 1 share memory \(views of one array, or one tensor twice\)"):
        minilora.gradcheck(F.mul, [a, b])
    with pytest.raises(ValueError, match="inputs 0 and 1 share memory"):
        minilora.gradcheck(F.mul, [a, a])
    assert minilora.gradcheck(F.mul, [minilora.tensor(base[:3], requires_grad=True),
                                      minilora.tensor(base[1:], requires_grad=True)]).ok


def test_gradcheck_on_each_device(make):
    x, w = make.randn(2, 3), make.randn(3, 3)
    assert minilora.gradcheck(lambda a, b: F.softmax(a @ b), [x, w]).ok
    assert not minilora.gradcheck(MatMulMissingTranspose.apply, [make.randn(3, 3), w]).ok


# ---- NaN and inf are failures, and the default tolerances are the documented ones ---------------
class ExpGradientTimesNaN(Exp):
    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad * y * float("nan")


class ExpGradientOffBy(Exp):
    """exp whose backward is off by a relative `factor` and an absolute `offset` (set on the class)."""

    factor, offset = 1.0, 0.0

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad * y * ExpGradientOffBy.factor + ExpGradientOffBy.offset


def test_a_nan_analytic_gradient_fails_with_its_own_message(rng):
    (x,) = _inputs(rng, (2, 3))
    result = minilora.gradcheck(ExpGradientTimesNaN.apply, [x], names=["x"])
    assert not result.ok
    report = str(result)
    assert "gradient of input 0 (x) is not finite at element (0, 0)" in report
    assert "the analytic gradient has 6 non-finite element(s)" in report
    with pytest.raises(AssertionError, match="not finite"):
        minilora.assert_gradcheck(ExpGradientTimesNaN.apply, [x])


def test_a_nan_numeric_gradient_fails_too(rng):
    # log of a negative number is NaN in the forward, so L and every central difference are NaN,
    # while backward's 1/x is finite.
    x = minilora.tensor(np.array([1.0, -1.0, 2.0]), requires_grad=True)
    with np.errstate(invalid="ignore"):
        result = minilora.gradcheck(F.log, [x])
    assert not result.ok and result.worst_element == (0,)
    assert "the numeric gradient has 3 non-finite element(s)" in str(result) and "domain" in str(result)


def test_a_gradient_off_by_half_a_percent_fails_at_the_default_tolerances(rng, monkeypatch):
    (x,) = _inputs(rng, (3, 4))
    monkeypatch.setattr(ExpGradientOffBy, "factor", 1.005)
    # rtol=1e-3 by default: 0.5% off fails; the same check at rtol=1e-2 lets it through.
    assert not minilora.gradcheck(ExpGradientOffBy.apply, [x]).ok
    assert minilora.gradcheck(ExpGradientOffBy.apply, [x], rtol=1e-2).ok


def test_an_absolute_error_of_5e_5_on_a_zero_gradient_fails_at_the_default_tolerances(rng, monkeypatch):
    (x,) = _inputs(rng, (4,))
    monkeypatch.setattr(ExpGradientOffBy, "offset", 5e-5)
    fn = lambda t: ExpGradientOffBy.apply(t) * 0.0  # noqa: E731 (the true gradient is exactly 0)
    result = minilora.gradcheck(fn, [x])
    # atol=1e-5 by default: off by 5e-5 where the numeric gradient is 0 fails; atol=1e-4 passes.
    assert not result.ok and result.numeric == 0.0
    assert f"allowed {1e-5:.3g}" in str(result)
    assert minilora.gradcheck(fn, [x], atol=1e-4).ok


@pytest.mark.parametrize("option", ["eps", "atol", "rtol"])
def test_nan_and_inf_tolerances_are_refused(rng, option):
    (x,) = _inputs(rng, (3,))
    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"gradcheck: {option} must be a finite number"):
            minilora.gradcheck(F.exp, [x], **{option: value})
