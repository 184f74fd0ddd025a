"""cross_entropy: value against -mean log softmax[target], ignore_index, gradients, errors."""

import numpy as np
import pytest

import minilora
from minilora import F
from minilora.backend import to_numpy


def cross_entropy_formula(logits, targets, ignore_index=None):
    logits = logits.reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1)
    keep = np.ones(len(targets), bool) if ignore_index is None else targets != ignore_index
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    rows = np.nonzero(keep)[0]
    return -log_probs[rows, targets[rows]].mean()


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 6), (4,)], ids=str)
def test_cross_entropy_value_and_gradient(make, shape):
    logits = make.randn(*shape)
    targets = make.ints(shape[-1], *shape[:-1])
    loss = F.cross_entropy(logits, targets)
    assert loss.shape == ()
    np.testing.assert_allclose(loss.item(), cross_entropy_formula(logits.numpy(), targets.numpy()), rtol=1e-12)
    minilora.assert_gradcheck(lambda t: F.cross_entropy(t, targets), [logits])


@pytest.mark.parametrize("ignore_index", [-100, 0])
def test_ignore_index(make, ignore_index):
    logits = make.randn(3, 4, 5)
    t = make.rng.integers(1, 5, size=(3, 4))
    t[0, 1] = t[2, 0] = t[2, 3] = ignore_index
    targets = minilora.tensor(t, device=make.device)
    loss = F.cross_entropy(logits, targets, ignore_index=ignore_index)
    np.testing.assert_allclose(loss.item(), cross_entropy_formula(logits.numpy(), t, ignore_index), rtol=1e-12)
    minilora.assert_gradcheck(lambda x: F.cross_entropy(x, targets, ignore_index=ignore_index), [logits])
    loss.backward()
    assert not logits.grad[0, 1].any() and not logits.grad[2, 3].any()


def test_every_target_ignored_gives_zero_loss_and_gradient(make):
    logits = make.randn(2, 3)
    targets = minilora.tensor([-1, -1], device=make.device)
    loss = F.cross_entropy(logits, targets, ignore_index=-1)
    assert loss.item() == 0.0
    loss.backward()
    np.testing.assert_array_equal(to_numpy(logits.grad), np.zeros((2, 3)))


def test_gradient_is_softmax_minus_one_hot_over_count(make):
    logits = make.randn(4, 3)
    targets = make.ints(3, 4)
    F.cross_entropy(logits, targets).backward()
    x = logits.numpy()
    probs = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(to_numpy(logits.grad), (probs - np.eye(3)[targets.numpy()]) / 4, rtol=1e-12, atol=1e-12)


def test_cross_entropy_errors(make):
    logits = make.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"target 4 at position \(1, 2\) is out of range.*\[0, 4\)"):
        F.cross_entropy(logits, minilora.tensor([[0, 1, 2], [3, 0, 4]], device=make.device))
    with pytest.raises(ValueError, match=r"target -1 .*\[0, 4\) or ignore_index=-100"):
        F.cross_entropy(logits, minilora.tensor([[0, 1, 2], [3, -1, 0]], device=make.device), ignore_index=-100)
    with pytest.raises(ValueError, match=r"targets must have shape \(2, 3\).*got \(3, 2\)"):
        F.cross_entropy(logits, make.ints(4, 3, 2))
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(logits, make.randn(2, 3, requires_grad=False))


def test_float32_loss_stays_float32(device):
    logits = minilora.tensor([[1.0, 2.0, 0.5]], device=device, requires_grad=True)
    loss = F.cross_entropy(logits, minilora.tensor([1], device=device))
    loss.backward()
    assert loss.dtype == logits.grad.dtype == np.float32
