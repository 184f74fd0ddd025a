"""reshape, transpose/permute/swapaxes, concatenate, split, stack: values and gradients."""

import numpy as np
import pytest

import minilora
from minilora import F
from minilora.backend import to_numpy


@pytest.mark.parametrize("args", [((6, 4),), (6, 4), ([3, -1],), (-1,), (2, 1, 12)], ids=str)
def test_reshape(make, args):
    x = make.randn(2, 3, 4)
    out = x.reshape(*args)
    flat = args[0] if len(args) == 1 else args
    np.testing.assert_array_equal(out.numpy(), x.numpy().reshape(flat))
    minilora.assert_gradcheck(lambda t: t.reshape(*args), [x])


def test_reshape_errors(make):
    x = make.randn(2, 3)
    with pytest.raises(ValueError, match=r"shape \(2, 3\) \(6 elements\) into shape \(4,\)"):
        x.reshape(4)
    with pytest.raises(ValueError, match="into shape"):
        x.reshape(-1, -1)
    with pytest.raises(ValueError, match="into shape"):
        x.reshape(-1, 4)
    with pytest.raises(TypeError, match="must be ints"):
        x.reshape(2.0, 3)


@pytest.mark.parametrize("axes", [(), (0, 2, 1), (2, 0, 1), (-1, 0, 1)], ids=str)
def test_transpose(make, axes):
    x = make.randn(2, 3, 4)
    expected = np.transpose(x.numpy(), axes or None)
    np.testing.assert_array_equal(x.transpose(*axes).numpy(), expected)
    np.testing.assert_array_equal(F.transpose(x, axes).numpy(), expected)
    minilora.assert_gradcheck(lambda t: t.transpose(*axes), [x])


def test_T_permute_swapaxes(make):
    x = make.randn(2, 3, 4)
    np.testing.assert_array_equal(x.T.numpy(), x.numpy().T)
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), x.numpy().transpose(1, 2, 0))
    np.testing.assert_array_equal(F.swapaxes(x, -2, -1).numpy(), np.swapaxes(x.numpy(), -2, -1))
    minilora.assert_gradcheck(lambda t: F.swapaxes(t, 0, -1) * t.T, [x])


def test_transpose_errors(make):
    x = make.randn(2, 3, 4)
    with pytest.raises(ValueError, match="permutation"):
        x.transpose(0, 0, 1)
    with pytest.raises(ValueError, match="permutation"):
        x.transpose(0, 1)
    with pytest.raises(ValueError, match="out of range"):
        x.transpose(0, 1, 3)
    with pytest.raises(ValueError, match="permute needs"):
        x.permute()


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate(make, axis):
    shapes = {0: [(1, 3), (2, 3), (3, 3)], 1: [(2, 1), (2, 3), (2, 2)], -1: [(2, 2), (2, 1), (2, 4)]}[axis]
    parts = [make.randn(*s) for s in shapes]
    out = F.concatenate(parts, axis=axis)
    np.testing.assert_array_equal(out.numpy(), np.concatenate([p.numpy() for p in parts], axis=axis))
    minilora.assert_gradcheck(lambda *ts: F.concatenate(list(ts), axis=axis), parts)


def test_concatenate_errors(make):
    with pytest.raises(ValueError, match="non-empty list"):
        F.concatenate([])
    with pytest.raises(ValueError, match=r"tensor 1 has shape \(3, 3\).*\(2, 2\)"):
        F.concatenate([make.randn(2, 2), make.randn(3, 3)], axis=1)
    with pytest.raises(TypeError, match="item 1 must be a Tensor"):
        F.concatenate([make.randn(2), np.ones(2)])


@pytest.mark.parametrize("sections, axis", [(3, 0), ([1, 4], 0), (2, 1), ([1], -1)], ids=str)
def test_split_values(make, sections, axis):
    x = make.randn(6, 4)
    pieces = F.split(x, sections, axis=axis)
    expected = np.split(x.numpy(), sections, axis=axis)
    assert isinstance(pieces, tuple) and len(pieces) == len(expected)
    for piece, e in zip(pieces, expected):
        np.testing.assert_array_equal(piece.numpy(), e)
    # Weight the pieces differently so a gradient sent to the wrong piece shows up.
    def weighted(t):
        return sum((p * (i + 1.0)).sum() for i, p in enumerate(F.split(t, sections, axis)))

    minilora.assert_gradcheck(weighted, [x])


def test_split_pieces_not_used_get_zero_gradient(make):
    x = make.randn(6, 2)
    q, k, v = F.split(x, 3, axis=0)
    (k * 2.0).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [[0, 0]] * 2 + [[2, 2]] * 2 + [[0, 0]] * 2)


def test_split_errors(make):
    x = make.randn(5, 2)
    with pytest.raises(ValueError, match="divisible by 2.*length 5"):
        F.split(x, 2)
    with pytest.raises(TypeError, match="int or a list"):
        F.split(x, 2.5)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_stack(make, axis):
    parts = [make.randn(2, 3) for _ in range(3)]
    out = F.stack(parts, axis=axis)
    np.testing.assert_array_equal(out.numpy(), np.stack([p.numpy() for p in parts], axis=axis))
    minilora.assert_gradcheck(lambda *ts: F.stack(list(ts), axis=axis), parts)
    with pytest.raises(ValueError, match="one shape"):
        F.stack([make.randn(2), make.randn(3)])
