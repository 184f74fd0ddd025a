"""Linear, Embedding, LayerNorm, Dropout: forward against NumPy formulas, gradients numerically."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minilora
from minilora import nn


def _x(rng, *shape, dtype="float64"):
    return minilora.tensor(rng.standard_normal(shape).astype(dtype))


# ---- Linear -------------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=3), n_in=st.integers(1, 5),
       n_out=st.integers(1, 5), bias=st.booleans())
def test_linear_matches_numpy_for_any_leading_shape(lead, n_in, n_out, bias, rng):
    layer = nn.Linear(n_in, n_out, bias=bias).to(dtype="float64")
    if bias:
        layer.bias.data[...] = rng.standard_normal(n_out)  # zero-initialised: make it count
    x = _x(rng, *lead, n_in)
    y = layer(x)
    expected = x.numpy() @ layer.weight.numpy().T + (layer.bias.numpy() if bias else 0.0)
    assert y.shape == (*lead, n_out)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_linear_shapes_init_and_float32(rng):
    minilora.manual_seed(0)
    layer = nn.Linear(300, 200)
    assert layer.weight.shape == (200, 300) and layer.bias.shape == (200,)
    assert layer.weight.dtype == np.float32 and layer.weight.requires_grad
    assert abs(layer.weight.numpy().std() - 0.02) < 0.001 and abs(layer.weight.numpy().mean()) < 0.001
    assert not layer.bias.numpy().any()
    y = layer(minilora.tensor(rng.standard_normal((4, 300)).astype("float32")))
    assert y.dtype == np.float32
    assert nn.Linear(3, 2, bias=False).bias is None
    assert [n for n, _ in nn.Linear(3, 2, bias=False).named_parameters()] == ["weight"]


def test_linear_gradients(rng):
    layer = nn.Linear(4, 3).to(dtype="float64")
    x = _x(rng, 2, 5, 4).requires_grad_()
    result = minilora.gradcheck(lambda x, w, b: layer(x), [x, layer.weight, layer.bias])
    assert result.ok, result.report()


def test_linear_rejects_bad_sizes_and_inputs():
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match="out_features"):
        nn.Linear(3, 2.5)
    with pytest.raises(ValueError, match=r"in_features must be a positive int, got np.int64\(3\) "
                                         r"\(a NumPy int64: pass int\(...\)\)"):
        nn.Linear(np.int64(3), 2)
    for value in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="init_std must be"):
            nn.Linear(3, 2, init_std=value)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        nn.Linear(3, 2)(minilora.tensor(np.ones((2, 4), dtype="float32")))


# ---- Embedding ----------------------------------------------------------------------------------
def test_embedding_looks_up_rows_and_accumulates_repeated_gradients(rng):
    emb = nn.Embedding(6, 4).to(dtype="float64")
    idx = minilora.tensor([[0, 5, 2], [2, 2, 1]])
    out = emb(idx)
    np.testing.assert_array_equal(out.numpy(), emb.weight.numpy()[idx.numpy()])
    upstream = rng.standard_normal((2, 3, 4))
    out.backward(upstream)
    expected = np.zeros((6, 4))
    np.add.at(expected, idx.numpy(), upstream)  # row 2 is used three times
    np.testing.assert_allclose(emb.weight.grad, expected, rtol=1e-12, atol=1e-12)
    result = minilora.gradcheck(lambda w: emb(idx), [emb.weight])
    assert result.ok, result.report()


# ---- LayerNorm ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_matches_numpy(bias, rng):
    ln = nn.LayerNorm(5, eps=1e-5, bias=bias).to(dtype="float64")
    assert np.all(ln.weight.numpy() == 1.0) and (not bias or not ln.bias.numpy().any())
    ln.weight.data[...] = rng.standard_normal(5)
    if bias:
        ln.bias.data[...] = rng.standard_normal(5)
    x = _x(rng, 3, 2, 5) * 4.0 + 1.5
    xn = x.numpy()
    mean, var = xn.mean(-1, keepdims=True), xn.var(-1, keepdims=True)
    expected = (xn - mean) / np.sqrt(var + 1e-5) * ln.weight.numpy() + (ln.bias.numpy() if bias else 0.0)
    np.testing.assert_allclose(ln(x).numpy(), expected, rtol=1e-10, atol=1e-12)
    inputs = [x.detach().requires_grad_()] + ln.parameters()
    result = minilora.gradcheck(lambda x, *params: ln(x), inputs)
    assert result.ok, result.report()


def test_layernorm_rejects_wrong_width_and_eps(rng):
    with pytest.raises(ValueError, match="eps"):
        nn.LayerNorm(4, eps=0)
    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps must be a finite number"):
            nn.LayerNorm(4, eps=value)
        with pytest.raises(ValueError, match="eps must be a finite number"):
            minilora.F.layer_norm(_x(rng, 2, 4), eps=value)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        nn.LayerNorm(4)(_x(rng, 2, 3))
    with pytest.raises(ValueError, match=r"LayerNorm expects input \(\.\.\., 4\), got shape \(\)"):
        nn.LayerNorm(4)(minilora.tensor(1.0))
    with pytest.raises(TypeError, match="LayerNorm: x must be a Tensor, got list"):
        nn.LayerNorm(4)([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match=r"layer_norm needs x of shape \(\.\.\., D\) with D >= 1, got shape \(2, 0\)"):
        minilora.F.layer_norm(minilora.tensor(np.zeros((2, 0))))


# ---- Dropout ------------------------------------------------------------------------------------
def test_dropout_statistics_scaling_and_eval_identity(rng):
    minilora.manual_seed(7)
    p = 0.3
    drop = nn.Dropout(p)
    x = minilora.tensor(rng.uniform(1.0, 2.0, size=(200, 500)).astype("float32"))
    y = drop(x).numpy()
    kept = y != 0
    # 100,000 draws: the kept fraction is within a few standard deviations (0.0014) of 1 - p.
    assert abs(kept.mean() - (1 - p)) < 0.01
    np.testing.assert_allclose(y[kept], x.numpy()[kept] / (1 - p), rtol=1e-6)
    drop.eval()
    assert np.array_equal(drop(x).numpy(), x.numpy())
    assert nn.Dropout(0.0)(x) is x


def test_dropout_gradient_uses_the_same_mask(rng):
    drop = nn.Dropout(0.5)
    x = _x(rng, 4, 6).requires_grad_()
    minilora.manual_seed(3)
    y = drop(x)
    y.backward(np.ones((4, 6)))
    np.testing.assert_array_equal(x.grad, (y.numpy() != 0) * 2.0)


@pytest.mark.parametrize("p", [-0.1, 1.0, "0.5", True])
def test_dropout_rejects_bad_probability(p):
    with pytest.raises(ValueError, match="p must be"):
        nn.Dropout(p)


# ---- Sequential ---------------------------------------------------------------------------------
def test_sequential_calls_modules_in_order(rng):
    first, second = nn.Linear(3, 4), nn.Linear(4, 2)
    model = nn.Sequential(first, nn.Dropout(0.0), second).to(dtype="float64")
    x = _x(rng, 5, 3)
    w1, b1, w2, b2 = (p.numpy() for p in (first.weight, first.bias, second.weight, second.bias))
    expected = (x.numpy() @ w1.T + b1) @ w2.T + b2
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-12, atol=1e-12)
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert math.isclose(model.num_parameters(), 3 * 4 + 4 + 4 * 2 + 2)
