"""embedding: rows picked by integer ids, gradients accumulated into repeated rows."""

import numpy as np
import pytest

import minilora
from minilora import F
from minilora.backend import to_numpy


@pytest.mark.parametrize("idx_shape", [(5,), (2, 3), ()], ids=str)
def test_embedding_values_and_gradient(make, idx_shape):
    weight = make.randn(4, 3)
    idx = make.ints(4, *idx_shape)
    out = F.embedding(idx, weight)
    assert out.shape == idx_shape + (3,)
    np.testing.assert_array_equal(out.numpy(), weight.numpy()[idx.numpy()])
    minilora.assert_gradcheck(lambda w: F.embedding(idx, w), [weight])


def test_repeated_ids_accumulate(device):
    weight = minilora.tensor(np.zeros((3, 2)), device=device, requires_grad=True)
    idx = minilora.tensor([[1, 1], [2, 1]], device=device)
    grad = np.array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    F.embedding(idx, weight).backward(grad)
    np.testing.assert_array_equal(to_numpy(weight.grad), [[0, 0], [1 + 3 + 7, 2 + 4 + 8], [5, 6]])


def test_embedding_errors(make):
    weight = make.randn(4, 3)
    with pytest.raises(ValueError, match=r"\[0, 4\).*got values from 0 to 4"):
        F.embedding(minilora.tensor([0, 4], device=make.device), weight)
    with pytest.raises(ValueError, match=r"\[0, 4\).*got values from -1 to 2"):
        F.embedding(minilora.tensor([-1, 2], device=make.device), weight)
    with pytest.raises(TypeError, match="integer indices"):
        F.embedding(make.randn(2, requires_grad=False), weight)
    with pytest.raises(ValueError, match=r"shape \(V, D\)"):
        F.embedding(make.ints(3, 2), make.randn(3))


def test_float32_weight(device):
    weight = minilora.tensor(np.ones((3, 2)), dtype="float32", device=device, requires_grad=True)
    out = F.embedding(minilora.tensor([0, 2], device=device), weight)
    out.sum().backward()
    assert out.dtype == weight.grad.dtype == np.float32
