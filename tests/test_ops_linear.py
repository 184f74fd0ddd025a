"""F.linear: values against x·Wᵀ + b in NumPy, gradients numerically, only the gradients asked for."""

import numpy as np
import pytest

import minilora
from minilora import F
from minilora.backend import to_numpy

LEADING = [(), (5,), (2, 3), (2, 1, 3)]  # x is (*lead, in): a vector, rows, batch×time, more dims


@pytest.mark.parametrize("lead", LEADING, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_linear_values_and_gradients(make, lead, bias):
    x, w = make.randn(*lead, 4), make.randn(3, 4)
    b = make.randn(3) if bias else None
    y = F.linear(x, w, b)
    expected = x.numpy() @ w.numpy().T + (b.numpy() if bias else 0.0)
    assert y.shape == (*lead, 3)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
    if bias:
        minilora.assert_gradcheck(F.linear, [x, w, b], names=["x", "weight", "bias"])
    else:
        minilora.assert_gradcheck(F.linear, [x, w], names=["x", "weight"])


@pytest.mark.parametrize("wanted", [(True, False, False), (False, True, False), (False, False, True),
                                    (False, True, True)], ids=["x", "weight", "bias", "weight+bias"])
def test_only_inputs_that_require_grad_get_one(make, wanted):
    x, w, b = (make.randn(*shape, requires_grad=r) for shape, r in zip([(2, 3, 4), (5, 4), (5,)], wanted))
    minilora.assert_gradcheck(F.linear, [x, w, b], names=["x", "weight", "bias"])
    y = F.linear(x, w, b)
    # The backward itself skips the products nobody asked for (it returns None for them).
    grads = y._ctx.function.backward(y._ctx, y.data)
    assert [g is not None for g in grads] == list(wanted)
    y.sum().backward()
    assert [t.grad is not None for t in (x, w, b)] == list(wanted)


def test_gradients_match_the_formulas(make):
    # dx = g·W, dW = gᵀ·x and db = Σ g over every leading dim, written out in NumPy.
    x, w, b = make.randn(2, 3, 4), make.randn(5, 4), make.randn(5)
    g = make.randn(2, 3, 5, requires_grad=False).numpy()
    F.linear(x, w, b).backward(g)
    np.testing.assert_allclose(to_numpy(x.grad), g @ w.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_numpy(w.grad), np.einsum("btn,btk->nk", g, x.numpy()), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_numpy(b.grad), g.sum(axis=(0, 1)), rtol=1e-12, atol=1e-12)
    assert w.grad.flags.c_contiguous


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_float32_stays_float32(rng, bias):
    x = minilora.tensor(rng.standard_normal((2, 3, 4)).astype("float32"), requires_grad=True)
    w = minilora.tensor(rng.standard_normal((5, 4)).astype("float32"), requires_grad=True)
    b = minilora.tensor(rng.standard_normal(5).astype("float32"), requires_grad=True) if bias else None
    y = F.linear(x, w, b)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == w.grad.dtype == np.float32
    if bias:
        assert b.grad.dtype == np.float32


def test_inputs_are_left_unchanged(make):
    x, w, b = make.randn(3, 4), make.randn(2, 4), make.randn(2)
    before = [t.numpy().copy() for t in (x, w, b)]
    F.linear(x, w, b).sum().backward()
    for t, original in zip((x, w, b), before):
        np.testing.assert_array_equal(t.numpy(), original)


def test_linear_rejects_bad_inputs(make):
    x, w = make.randn(2, 4), make.randn(3, 4)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 4\).*got shape \(2, 5\)"):
        F.linear(make.randn(2, 5), w)
    with pytest.raises(ValueError, match=r"weight must be 2-D.*got shape \(4,\)"):
        F.linear(x, make.randn(4))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\).*got shape \(4,\)"):
        F.linear(x, w, make.randn(4))
    with pytest.raises(TypeError, match="weight must be a Tensor, got ndarray"):
        F.linear(x, w.numpy())
    with pytest.raises(TypeError, match="bias must be a Tensor or None, got list"):
        F.linear(x, w, [0.0, 0.0, 0.0])
