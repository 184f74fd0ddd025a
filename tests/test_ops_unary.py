"""exp, log, tanh, relu, gelu: values against NumPy formulas and gradients against central differences;
the ops defined on real numbers only refuse integer and bool tensors by name."""

import math

import numpy as np
import pytest

import minilora
from minilora import F
from minilora.backend import to_numpy


def gelu_formula(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


UNARY = {
    "exp": (F.exp, np.exp, "randn"),
    "log": (F.log, np.log, "positive"),
    "tanh": (F.tanh, np.tanh, "randn"),
    "relu": (F.relu, lambda x: np.maximum(x, 0), "away_from_zero"),
    "gelu": (F.gelu, gelu_formula, "randn"),
}


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)], ids=str)
def test_unary_values_and_gradients(make, name, shape):
    op, formula, kind = UNARY[name]
    x = getattr(make, kind)(*shape)
    np.testing.assert_allclose(op(x).numpy(), formula(x.numpy()), rtol=1e-12, atol=1e-15)
    minilora.assert_gradcheck(op, [x])


@pytest.mark.parametrize("name", ["exp", "log", "tanh", "relu"])
def test_tensor_methods(make, name):
    x = make.positive(3)
    np.testing.assert_allclose(getattr(x, name)().numpy(), UNARY[name][1](x.numpy()), rtol=1e-12, atol=1e-12)


def test_gelu_is_close_to_the_exact_erf_gelu():
    # The tanh form approximates x·Φ(x) (Φ the normal CDF) to within about 5e-4 everywhere.
    xs = np.linspace(-6, 6, 241)
    exact = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in xs]
    approx = F.gelu(minilora.tensor(xs)).numpy()
    np.testing.assert_allclose(approx, exact, atol=5e-4)
    assert np.abs(approx - exact).max() > 1e-5  # and it is an approximation, not the erf form


def test_relu_gradient_at_zero_is_zero(device):
    x = minilora.tensor([-1.0, 0.0, 2.0], device=device, requires_grad=True)
    F.relu(x).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [0.0, 0.0, 1.0])


@pytest.mark.parametrize("name", UNARY)
def test_float32_stays_float32(device, name):
    x = minilora.tensor([0.5, 1.5], device=device, requires_grad=True)
    out = UNARY[name][0](x)
    out.sum().backward()
    assert out.dtype == x.grad.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_far_from_zero_has_no_overflow_and_the_tanh_form_gradient(dtype):
    # GELU is computed as x·σ(2z); e^(-2z) overflows for x below about -9 (float32), which must
    # give y = -0 and a zero gradient, without a warning, and agree with the tanh form elsewhere.
    xs = np.array([-200.0, -50.0, -9.5, -3.0, -0.1, 0.0, 0.2, 4.0, 50.0, 200.0], dtype=dtype)
    x = minilora.tensor(xs, requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # NumPy's default ignores underflow
        y = F.gelu(x)
        y.sum().backward()
    xd = xs.astype(np.float64)
    z = math.sqrt(2 / math.pi) * (xd + 0.044715 * xd ** 3)
    t = np.tanh(z)
    slope = 0.5 * (1 + t) + 0.5 * xd * (1 - t * t) * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * xd ** 2)
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y.numpy(), gelu_formula(xd), **tolerance)
    np.testing.assert_allclose(x.grad, slope, **tolerance)


def test_gelu_on_arrays_larger_than_a_cache_block(rng):
    # Above ops/blocks.py's BLOCK values GELU works piece by piece, the last piece shorter; a
    # strided incoming gradient takes the whole-array path.
    from minilora.ops.blocks import BLOCK
    xs = rng.standard_normal((3, BLOCK // 2 + 7))
    x = minilora.tensor(xs, requires_grad=True)
    y = F.gelu(x)
    np.testing.assert_allclose(y.numpy(), gelu_formula(xs), rtol=1e-12, atol=1e-15)
    dy = rng.standard_normal((xs.shape[1], 3)).T  # the same shape as x, not C-contiguous
    y.backward(dy)
    t = np.tanh(math.sqrt(2 / math.pi) * (xs + 0.044715 * xs ** 3))
    slope = 0.5 * (1 + t) + 0.5 * xs * (1 - t * t) * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * xs ** 2)
    np.testing.assert_allclose(x.grad, dy * slope, rtol=1e-10, atol=1e-12)
    x.grad = None
    F.gelu(x).backward(np.ascontiguousarray(dy))  # and a contiguous one, piece by piece
    np.testing.assert_allclose(x.grad, dy * slope, rtol=1e-10, atol=1e-12)


# ---- ops on real numbers only -------------------------------------------------------------------
REAL_VALUED = {
    "Gelu": lambda x: F.gelu(x),
    "Softmax": lambda x: F.softmax(x, axis=-1),
    "LogSoftmax": lambda x: F.log_softmax(x, axis=-1),
    "CausalSoftmax": lambda x: F.causal_softmax(x, 0.5),
    "Normalize": lambda x: F.layer_norm(x),
    "CrossEntropy": lambda x: F.cross_entropy(x, minilora.tensor(np.array([0, 2, 1]))),
}


@pytest.mark.parametrize("name", REAL_VALUED)
@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_real_valued_ops_refuse_integer_and_bool_tensors_by_name(name, dtype):
    """Not NumPy's "Cannot cast ufunc output" from inside an in-place step: the op and the dtype."""
    x = minilora.tensor(np.arange(9).reshape(3, 3).astype(dtype))
    with pytest.raises(TypeError, match=rf"^{name}: input 0 has dtype {dtype}, expected a floating tensor "
                                        r"\(float32 or float64\)"):
        REAL_VALUED[name](x)
    assert REAL_VALUED[name](x.to(dtype="float64")).dtype == np.float64
