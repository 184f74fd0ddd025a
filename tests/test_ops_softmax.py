"""softmax and log_softmax: values against the textbook formula, stability, gradients."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

import minilora
from minilora import F


def softmax_formula(x, axis):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_and_log_softmax(make, axis):
    x = make.randn(2, 3, 4)
    expected = softmax_formula(x.numpy(), axis)
    np.testing.assert_allclose(F.softmax(x, axis=axis).numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F.log_softmax(x, axis=axis).numpy(), np.log(expected), rtol=1e-12, atol=1e-12)
    minilora.assert_gradcheck(lambda t: F.softmax(t, axis=axis), [x])
    minilora.assert_gradcheck(lambda t: F.log_softmax(t, axis=axis), [x])


@given(shape=array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), data=st.data(),
       seed=st.integers(0, 2**32 - 1))
def test_softmax_any_shape(device, shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = minilora.tensor(np.random.default_rng(seed).standard_normal(shape) * 3, requires_grad=True, device=device)
    out = F.softmax(x, axis=axis)
    np.testing.assert_allclose(out.numpy(), softmax_formula(x.numpy(), axis), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.numpy().sum(axis=axis), 1.0, rtol=1e-12, atol=1e-12)
    minilora.assert_gradcheck(lambda t: F.softmax(t, axis=axis), [x])


def test_large_logits_do_not_overflow(device):
    # exp(1000) is inf in float64; the max is subtracted first, so the answer is finite and exact.
    x = minilora.tensor([[1000.0, 1001.0, 1002.0]], dtype="float32", device=device)
    expected = softmax_formula(np.array([[0.0, 1.0, 2.0]]), -1)
    np.testing.assert_allclose(F.softmax(x).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(F.log_softmax(x).numpy(), np.log(expected), rtol=1e-6)
    assert F.softmax(x).dtype == F.log_softmax(x).dtype == np.float32


def test_log_softmax_of_a_very_unlikely_class_is_finite(device):
    x = minilora.tensor([0.0, -200.0], dtype="float64", device=device)
    expected = [-np.log1p(np.exp(-200.0)), -200.0]
    np.testing.assert_allclose(F.log_softmax(x).numpy(), expected, rtol=1e-12, atol=1e-15)


def test_softmax_bad_axis(make):
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        F.softmax(make.randn(2, 3), axis=2)
