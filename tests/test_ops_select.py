"""Indexing, where and masked_fill: values against NumPy, gradients (with repeated indices)."""

import numpy as np
import pytest

import minilora
from minilora import F
from minilora.backend import to_numpy

INDEXES = {
    "int": lambda dev: 1,
    "negative int": lambda dev: (-1, 2),
    "slices": lambda dev: (slice(1, None), slice(None, None, -2)),
    "None and ...": lambda dev: (None, Ellipsis, 1),
    "int list": lambda dev: [2, 0, 2],
    "int array": lambda dev: (slice(None), np.array([[0, 3], [3, 3]])),
    "int tensor": lambda dev: minilora.tensor([[1, 1], [0, 2]], device=dev),
    "bool mask": lambda dev: minilora.tensor([True, False, True], device=dev),
    "two int arrays": lambda dev: ([0, 2, 2], [1, 1, 4]),
}


@pytest.mark.parametrize("name", INDEXES)
def test_getitem_values_and_gradients(make, name):
    x = make.randn(3, 5)
    index = INDEXES[name](make.device)
    items = index if isinstance(index, tuple) else (index,)
    np_index = tuple(i.numpy() if isinstance(i, minilora.Tensor) else i for i in items)
    np.testing.assert_array_equal(x[index].numpy(), x.numpy()[np_index])
    minilora.assert_gradcheck(lambda t: t[index], [x])


def test_full_boolean_mask(make):
    x = make.randn(3, 4)
    mask = x > 0
    np.testing.assert_array_equal(x[mask].numpy(), x.numpy()[x.numpy() > 0])
    minilora.assert_gradcheck(lambda t: t[mask] * 3.0, [x])


def test_repeated_indices_accumulate(device):
    x = minilora.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    idx = minilora.tensor([0, 0, 2, 0], device=device)
    x[idx].backward(np.array([1.0, 2.0, 5.0, 4.0], dtype=np.float32))
    np.testing.assert_array_equal(to_numpy(x.grad), [7.0, 0.0, 5.0])


def test_index_errors(make):
    x = make.randn(3)
    with pytest.raises(TypeError, match="integers or booleans"):
        x[make.randn(2, requires_grad=False)]
    with pytest.raises(TypeError, match="integers or booleans"):
        x[[0.5]]


def test_empty_list_index(make):
    x = make.randn(3, 2)
    assert x[[]].shape == (0, 2)


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4), (3, 4)), ((3, 1), (4,), (3, 4)), ((4,), (2, 1, 4), ())],
                         ids=str)
def test_where(make, shapes):
    cond = minilora.tensor(make.rng.random(shapes[0]) > 0.5, device=make.device)
    a, b = make.randn(*shapes[1]), make.randn(*shapes[2])
    np.testing.assert_array_equal(F.where(cond, a, b).numpy(), np.where(cond.numpy(), a.numpy(), b.numpy()))
    minilora.assert_gradcheck(lambda s, t: F.where(cond, s, t), [a, b], names=["a", "b"])


def test_where_with_numbers(make):
    x = make.randn(4)
    np.testing.assert_array_equal(F.where(x > 0, x, 0.0).numpy(), np.where(x.numpy() > 0, x.numpy(), 0.0))
    with pytest.raises(TypeError, match="cond must be a boolean Tensor"):
        F.where(x, x, 0.0)


def test_masked_fill_values_and_gradient(make):
    x = make.randn(2, 3, 3)
    causal = minilora.tensor(np.triu(np.ones((3, 3), dtype=bool), k=1), device=make.device)
    out = x.masked_fill(causal, -1e9)
    np.testing.assert_array_equal(out.numpy(), np.where(causal.numpy(), -1e9, x.numpy()))
    minilora.assert_gradcheck(lambda t: F.masked_fill(t, causal, 7.0), [x])
    out.sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), np.broadcast_to(~causal.numpy(), (2, 3, 3)).astype(float))


def test_masked_fill_with_minus_infinity_before_softmax(make):
    scores = make.randn(2, 4, 4)
    causal = minilora.tensor(np.triu(np.ones((4, 4), dtype=bool), k=1), device=make.device)
    probs = F.softmax(scores.masked_fill(causal, float("-inf")), axis=-1).numpy()
    assert np.all(probs[:, causal.numpy()] == 0)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-12, atol=1e-12)


def test_masked_fill_errors(make):
    x = make.randn(3, 3)
    with pytest.raises(ValueError, match=r"mask of shape \(2, 3, 3\) does not broadcast to x's shape \(3, 3\)"):
        x.masked_fill(minilora.tensor(np.ones((2, 3, 3), dtype=bool), device=make.device), 0.0)
    with pytest.raises(TypeError, match="mask must be a boolean Tensor"):
        x.masked_fill(x, 0.0)
