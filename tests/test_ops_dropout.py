"""dropout: inverted scaling, reproducible masks, identity when off, gradients through the mask."""

import numpy as np
import pytest

import minilora
from minilora import F
from minilora.backend import to_numpy


def test_identity_when_not_training_or_p_zero(make):
    x = make.randn(3, 4)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0, training=True) is x


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, "0.5", None, True])
def test_p_is_validated(make, p):
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\)"):
        F.dropout(make.randn(2), p, training=True)


def test_a_numpy_p_keeps_float32_float32():
    x = minilora.tensor(np.ones(8, dtype=np.float32))
    assert F.dropout(x, np.float64(0.5), training=True).dtype == np.float32
    assert minilora.nn.Dropout(np.float32(0.25)).p == 0.25


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_drops_a_fraction_p_and_scales_the_rest(device, p):
    minilora.manual_seed(7)
    x = minilora.tensor(np.random.default_rng().uniform(1, 2, 100_000), dtype="float32", device=device)
    out = F.dropout(x, p, training=True).numpy()
    kept = out != 0
    assert abs((~kept).mean() - p) < 0.01  # 100k draws: the standard error is below 0.002
    np.testing.assert_allclose(out[kept], x.numpy()[kept] / (1 - p), rtol=1e-6)
    assert out.dtype == np.float32


def test_mask_is_reproducible_with_manual_seed(make):
    x = make.randn(50)
    minilora.manual_seed(3)
    first = F.dropout(x, 0.5).numpy()
    minilora.manual_seed(3)
    second = F.dropout(x, 0.5).numpy()
    third = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, third)


def test_gradient_flows_through_the_same_mask(make):
    x = make.randn(4, 5)

    def fn(t):
        minilora.manual_seed(11)  # the same mask on every call, as gradcheck needs
        return F.dropout(t, 0.3, training=True)

    minilora.assert_gradcheck(fn, [x])
    out = fn(x)
    out.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), (out.numpy() != 0) / 0.7, rtol=1e-12, atol=1e-12)
