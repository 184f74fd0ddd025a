"""add, sub, mul, div, neg, pow: values against NumPy and gradients against central differences."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import minilora
from minilora import F

BINARY = {
    "add": (F.add, lambda a, b: a + b),
    "sub": (F.sub, lambda a, b: a - b),
    "mul": (F.mul, lambda a, b: a * b),
    "div": (F.div, lambda a, b: a / b),
}
SHAPE_PAIRS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 3), (4, 1)), ((), (2, 3)), ((3, 1), (1, 3))]


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
def test_binary_op_values_and_gradients(make, name, shapes):
    op, formula = BINARY[name]
    a = make.randn(*shapes[0])
    b = make.positive(*shapes[1]) if name == "div" else make.randn(*shapes[1])
    out = op(a, b)
    np.testing.assert_allclose(out.numpy(), formula(a.numpy(), b.numpy()), rtol=1e-12, atol=1e-12)
    minilora.assert_gradcheck(op, [a, b], names=["a", "b"])


@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       name=st.sampled_from(list(BINARY)), seed=st.integers(0, 2**32 - 1))
def test_binary_ops_broadcast_any_shapes(device, shapes, name, seed):
    rng = np.random.default_rng(seed)
    op, formula = BINARY[name]
    (shape_a, shape_b), out_shape = shapes.input_shapes, shapes.result_shape
    a = minilora.tensor(rng.standard_normal(shape_a), requires_grad=True, device=device)
    b = minilora.tensor(rng.uniform(0.5, 2, shape_b), requires_grad=True, device=device)
    out = op(a, b)
    assert out.shape == out_shape
    np.testing.assert_allclose(out.numpy(), formula(a.numpy(), b.numpy()), rtol=1e-12, atol=1e-12)
    minilora.assert_gradcheck(op, [a, b])


def test_python_numbers_on_either_side(make):
    x = make.positive(2, 3)
    xv = x.numpy()
    for fn, expected in [(lambda t: 2.0 - t, 2.0 - xv), (lambda t: 3.0 / t, 3.0 / xv),
                         (lambda t: t * 4 + 1, xv * 4 + 1), (lambda t: -t, -xv)]:
        np.testing.assert_allclose(fn(x).numpy(), expected, rtol=1e-12, atol=1e-12)
        minilora.assert_gradcheck(fn, [x])


@pytest.mark.parametrize("exponent", [2, 3, 0.5, -1.5])
def test_pow(make, exponent):
    x = make.positive(3, 2)
    np.testing.assert_allclose((x ** exponent).numpy(), x.numpy() ** exponent, rtol=1e-12, atol=1e-12)
    minilora.assert_gradcheck(lambda t: t ** exponent, [x])


def test_pow_exponent_must_be_a_number(make):
    x = make.randn(2)
    with pytest.raises(TypeError, match="exponent"):
        x ** make.randn(2)


def test_pow_of_zero_has_a_zero_gradient_even_at_zero():
    x = minilora.tensor([0.0, 2.0], dtype="float64", requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])  # 0 · 0 ** -1 would be NaN at x = 0


@pytest.mark.parametrize("exponent", [np.float64(2.0), np.int64(2), np.float32(0.5)])
def test_a_numpy_exponent_keeps_float32_float32(exponent):
    x = minilora.tensor([1.0, 4.0], requires_grad=True)
    y = x ** exponent
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), np.array([1.0, 4.0]) ** float(exponent))
    with pytest.raises(TypeError, match="pow: exponent must be an int or a float, got bool True"):
        x ** True


def test_a_bool_mask_does_not_absorb_numbers():
    """np.asarray(3, dtype=bool) is True: mask * 3 would silently still be the mask."""
    mask = minilora.tensor([True, False])
    for other in (3, np.array([2, 3])):
        with pytest.raises(TypeError, match=r"cannot combine .* with a bool tensor \(a mask\); cast the mask first"):
            mask * other
    with pytest.raises(TypeError, match=r"cannot combine the float 2.5 with a bool tensor"):
        mask + 2.5
    np.testing.assert_array_equal((mask * True).numpy(), [True, False])
    np.testing.assert_array_equal((mask.to(dtype="int64") * 3).numpy(), [3, 0])


def test_two_numbers_is_an_error():
    with pytest.raises(TypeError, match="Tensor"):
        F.add(1.0, 2.0)


@pytest.mark.parametrize("name", BINARY)
def test_float32_stays_float32(device, name):
    a = minilora.tensor([[1.0, 2.0]], device=device, requires_grad=True)
    b = minilora.tensor([3.0, 4.0], device=device, requires_grad=True)
    out = BINARY[name][0](a, b)
    out.sum().backward()
    assert out.dtype == a.grad.dtype == b.grad.dtype == np.float32
