"""sum, mean, max over axes (int, negative, tuple, None) with keepdims: values and gradients."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

import minilora
from minilora import F
from minilora.backend import to_numpy

AXES = [None, 0, 1, -1, (0, 2), (-1, 0), (0, 1, 2)]
REDUCTIONS = {"sum": (F.sum, np.sum), "mean": (F.mean, np.mean), "max": (F.max, np.max)}


@pytest.mark.parametrize("name", REDUCTIONS)
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduction_values_and_gradients(make, name, axis, keepdims):
    op, reference = REDUCTIONS[name]
    x = make.distinct(2, 3, 4)  # no ties, so max has one winner per slice
    out = op(x, axis=axis, keepdims=keepdims)
    expected = reference(x.numpy(), axis=axis, keepdims=keepdims)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    minilora.assert_gradcheck(lambda t: op(t, axis=axis, keepdims=keepdims), [x])


@st.composite
def shapes_and_axes(draw):
    shape = draw(array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=3))
    axis = draw(st.one_of(st.none(), st.lists(st.integers(0, max(len(shape) - 1, 0)), unique=True).map(tuple)))
    if shape == () and axis:
        axis = None
    return shape, axis


@given(shape_axis=shapes_and_axes(), name=st.sampled_from(["sum", "mean"]), keepdims=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_sum_and_mean_over_any_axes(device, shape_axis, name, keepdims, seed):
    shape, axis = shape_axis
    op, reference = REDUCTIONS[name]
    x = minilora.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True, device=device)
    out = op(x, axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(out.numpy(), reference(x.numpy(), axis=axis, keepdims=keepdims), rtol=1e-12, atol=1e-12)
    minilora.assert_gradcheck(lambda t: op(t, axis=axis, keepdims=keepdims), [x])


def test_max_splits_the_gradient_evenly_between_ties(device):
    x = minilora.tensor([[1.0, 3.0, 3.0], [5.0, 2.0, 5.0]], device=device, requires_grad=True)
    x.max(axis=1).backward(np.array([1.0, 4.0], dtype=np.float32))
    np.testing.assert_array_equal(to_numpy(x.grad), [[0.0, 0.5, 0.5], [2.0, 0.0, 2.0]])


def test_max_over_everything_with_ties(device):
    x = minilora.tensor([[2.0, 0.0], [2.0, 2.0]], device=device, requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [[1 / 3, 0.0], [1 / 3, 1 / 3]], rtol=1e-6)


def test_tensor_methods_reduce(make):
    x = make.randn(3, 4)
    xv = x.numpy()
    np.testing.assert_allclose(x.sum().numpy(), xv.sum(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x.mean(axis=1).numpy(), xv.mean(axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x.max(axis=0, keepdims=True).numpy(), xv.max(axis=0, keepdims=True), rtol=0)


def test_mean_gradient_is_one_over_count(make):
    x = make.randn(4, 5)
    x.mean(axis=1).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), np.full((4, 5), 1 / 5), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", REDUCTIONS)
def test_bad_axes(make, name):
    op = REDUCTIONS[name][0]
    x = make.randn(2, 3)
    with pytest.raises(ValueError, match=r"axis=2 is out of range.*2 dimension"):
        op(x, axis=2)
    with pytest.raises(ValueError, match="same axis twice"):
        op(x, axis=(0, -2))
    with pytest.raises(TypeError, match="axis must be an int"):
        op(x, axis=1.0)


@pytest.mark.parametrize("name", REDUCTIONS)
def test_float32_stays_float32(device, name):
    x = minilora.tensor([[1.0, 2.0], [3.0, 5.0]], device=device, requires_grad=True)
    out = REDUCTIONS[name][0](x, axis=0)
    out.sum().backward()
    assert out.dtype == x.grad.dtype == np.float32
