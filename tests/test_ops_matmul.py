"""matmul: NumPy's rules (batch broadcasting, 1-D operands), values and gradients."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import minilora
from minilora import F
from minilora.backend import to_numpy

SHAPE_PAIRS = [
    ((3, 4), (4, 2)),          # plain matrices
    ((2, 3, 4), (4, 5)),       # batch on the left, shared right matrix (a Linear layer)
    ((2, 1, 3, 4), (5, 4, 2)),  # batch dimensions broadcast both ways
    ((4,), (4, 3)),            # vector @ matrix
    ((2, 3, 4), (4,)),         # batched matrix @ vector
    ((4,), (4,)),              # dot product
    ((4,), (2, 4, 3)),         # vector @ batched matrix
]


@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
def test_matmul_values_and_gradients(make, shapes):
    a, b = make.randn(*shapes[0]), make.randn(*shapes[1])
    out = a @ b
    expected = np.matmul(a.numpy(), b.numpy())
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    minilora.assert_gradcheck(F.matmul, [a, b], names=["a", "b"])


@given(shapes=mutually_broadcastable_shapes(signature="(m?,n),(n,p?)->(m?,p?)", max_dims=4, max_side=3),
       seed=st.integers(0, 2**32 - 1))
def test_matmul_any_shapes(device, shapes, seed):
    rng = np.random.default_rng(seed)
    shape_a, shape_b = shapes.input_shapes
    a = minilora.tensor(rng.standard_normal(shape_a), requires_grad=True, device=device)
    b = minilora.tensor(rng.standard_normal(shape_b), requires_grad=True, device=device)
    out = a @ b
    assert out.shape == shapes.result_shape
    np.testing.assert_allclose(out.numpy(), np.matmul(a.numpy(), b.numpy()), rtol=1e-10, atol=1e-12)
    minilora.assert_gradcheck(F.matmul, [a, b])


def test_matmul_with_one_constant_side(make):
    x, w = make.randn(3, 4), make.randn(4, 2, requires_grad=False)
    (x @ w).sum().backward()
    assert w.grad is None
    np.testing.assert_allclose(to_numpy(x.grad), np.ones((3, 2)) @ w.numpy().T, rtol=1e-12, atol=1e-12)


def test_numpy_array_on_the_left_is_a_constant(rng):
    # ndarray @ Tensor must reach Tensor.__rmatmul__, not NumPy's own loop over a Tensor object.
    a = rng.standard_normal((2, 3))
    b = minilora.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    out = a @ b
    assert isinstance(out, minilora.Tensor)
    np.testing.assert_allclose(out.numpy(), a @ b.numpy(), rtol=1e-12, atol=1e-12)
    out.sum().backward()
    np.testing.assert_allclose(to_numpy(b.grad), a.T @ np.ones((2, 2)), rtol=1e-12, atol=1e-12)


def test_matmul_errors(make):
    with pytest.raises(ValueError, match=r"inner dimensions.*\(3, 4\).*\(5, 2\)"):
        make.randn(3, 4) @ make.randn(5, 2)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        F.matmul(make.randn(), make.randn(3))
    with pytest.raises(ValueError, match=r"batch dimensions.*\(2, 3, 4\).*\(3, 4, 5\)"):
        make.randn(2, 3, 4) @ make.randn(3, 4, 5)


def test_matmul_float32_stays_float32(device):
    a = minilora.tensor(np.ones((2, 3)), dtype="float32", device=device, requires_grad=True)
    b = minilora.tensor(np.ones((3,)), dtype="float32", device=device, requires_grad=True)
    out = a @ b
    out.sum().backward()
    assert out.dtype == a.grad.dtype == b.grad.dtype == np.float32
