"""LoRALinear: forward and gradients against the NumPy formulas, gradcheck, dropout, init, adapters.

    y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ        dx = dy·W + s·(dy·B)·A    dA = s·(dy·B)ᵀ·x    dB = s·dyᵀ·(x·Aᵀ)
"""

import numpy as np
import pytest

import minilora
from minilora import F, backend, kernels
from minilora.function import Function
from minilora.gradcheck import gradcheck
from minilora.lora import LoRAAdapter, LoRALinear
from minilora.lora.layer import new_adapter
from minilora.nn import Linear, Parameter


def make_layer(rng, device, in_features=7, out_features=5, r=3, alpha=6.0, bias=True, dtype="float64"):
    """A LoRALinear with random W, b, A and a NON-ZERO B (with B = 0, dA is exactly zero)."""
    layer = LoRALinear(Linear(in_features, out_features, bias=bias), r=r, alpha=alpha).to(device, dtype)
    for p in [layer.base.weight, layer.lora_A, layer.lora_B] + ([layer.base.bias] if bias else []):
        p.data[...] = minilora.tensor(rng.standard_normal(p.shape), dtype=dtype, device=device).data
    return layer


def numpy_params(layer):
    bias = layer.base.bias.numpy() if layer.base.bias is not None else 0.0
    return layer.base.weight.numpy(), bias, layer.lora_A.numpy(), layer.lora_B.numpy(), layer.scaling


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(4,), (2, 3), (1,)])
def test_forward_matches_the_numpy_formula(rng, device, bias, lead):
    layer = make_layer(rng, device, bias=bias)
    x = rng.standard_normal(lead + (7,))
    y = layer(minilora.tensor(x, device=device))
    W, b, A, B, s = numpy_params(layer)
    assert s == 2.0  # alpha / r = 6 / 3
    expected = x @ W.T + b + s * (x @ A.T) @ B.T
    assert y.shape == lead + (5,)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_gradients_match_the_numpy_formulas_and_w_gets_none(rng, device):
    layer = make_layer(rng, device)
    x = minilora.tensor(rng.standard_normal((2, 4, 7)), requires_grad=True, device=device)
    dy = rng.standard_normal((2, 4, 5))
    layer(x).backward(minilora.tensor(dy, device=device))
    W, _, A, B, s = numpy_params(layer)
    xs, dys = x.numpy().reshape(-1, 7), dy.reshape(-1, 5)
    v = dys @ B                                                   # (M, r)
    host = backend.to_numpy
    np.testing.assert_allclose(host(x.grad), (dys @ W + s * v @ A).reshape(2, 4, 7), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(layer.lora_A.grad), s * v.T @ xs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(layer.lora_B.grad), s * dys.T @ (xs @ A.T), rtol=1e-12, atol=1e-12)
    assert layer.base.weight.grad is None and layer.base.bias.grad is None
    assert not layer.base.weight.requires_grad


def test_gradcheck_in_float64_with_a_nonzero_b(rng, device):
    layer = make_layer(rng, device, in_features=6, out_features=4, r=2)
    x = minilora.tensor(rng.standard_normal((3, 6)), requires_grad=True, device=device)
    def fn(x, A, B):
        return layer(x)

    result = gradcheck(fn, [x, layer.lora_A, layer.lora_B], names=["x", "A", "B"])
    assert result.ok, result.report()
    # Far inside the defaults: it passes with tolerances 100 times tighter too.
    strict = gradcheck(fn, [x, layer.lora_A, layer.lora_B], atol=1e-7, rtol=1e-5)
    assert strict.ok, strict.report()


class WrongLoRADelta(Function):
    """(x·Aᵀ)·Bᵀ with a planted bug: its backward reports twice the true dA."""

    @staticmethod
    def forward(ctx, x, A, B):
        u = x @ A.T
        ctx.save_for_backward(x, A, B, u)
        return u @ B.T

    @staticmethod
    def backward(ctx, dy):
        x, A, B, u = ctx.saved
        return dy @ B @ A, 2.0 * (dy @ B).T @ x, dy.T @ u


def test_a_wrong_da_hides_behind_a_zero_b_but_not_behind_a_nonzero_one(rng):
    """Why the checks above use a non-zero B: with B = 0 the true dA is 0, and so is twice it."""
    x = minilora.tensor(rng.standard_normal((3, 6)), requires_grad=True)
    A = minilora.tensor(rng.standard_normal((2, 6)), requires_grad=True)
    zero_B = minilora.tensor(np.zeros((4, 2)), requires_grad=True)
    assert gradcheck(WrongLoRADelta.apply, [x, A, zero_B]).ok
    B = minilora.tensor(rng.standard_normal((4, 2)), requires_grad=True)
    result = gradcheck(WrongLoRADelta.apply, [x, A, B])
    assert not result.ok and result.worst_input == 1


def test_zero_b_gives_the_base_output(rng, device):
    layer = LoRALinear(Linear(9, 6), r=4, alpha=8).to(device)
    x = minilora.tensor(rng.standard_normal((5, 9)), dtype="float32", device=device)
    assert not np.any(layer.lora_B.numpy()) and np.any(layer.lora_A.numpy())
    base = layer.base(x).numpy()
    # The reference computes x·Wᵀ as Linear does and adds s·u·0 = 0: the very same bits.
    with kernels.use_backend("numpy" if device == "cpu" else "cupy"):
        assert np.array_equal(layer(x).numpy(), base)
    # A fused kernel sums x·Wᵀ in its own order: equal up to float32 rounding.
    np.testing.assert_allclose(layer(x).numpy(), base, rtol=1e-6, atol=1e-6)
    layer.disabled = True
    assert np.array_equal(layer(x).numpy(), base)


def test_dropout_applies_to_the_input_of_a_only(rng, device):
    layer = make_layer(rng, device)
    layer.adapters["default"].dropout = 0.5
    x = minilora.tensor(rng.standard_normal((6, 7)), device=device)
    minilora.manual_seed(3)
    dropped = F.dropout(x, 0.5, True).numpy()     # the mask the layer will draw with the same seed
    minilora.manual_seed(3)
    y = layer(x).numpy()
    W, b, A, B, s = numpy_params(layer)
    xs = x.numpy()
    assert (dropped == 0).any() and not np.allclose(dropped, xs)
    np.testing.assert_allclose(y, xs @ W.T + b + s * (dropped @ A.T) @ B.T, rtol=1e-12, atol=1e-12)
    layer.eval()  # no dropout in evaluation: the plain formula again
    np.testing.assert_allclose(layer(x).numpy(), xs @ W.T + b + s * (xs @ A.T) @ B.T, rtol=1e-12, atol=1e-12)


def test_gradcheck_through_the_dropout_path(rng):
    layer = make_layer(rng, "cpu", in_features=5, out_features=4, r=2)
    layer.adapters["default"].dropout = 0.3
    x = minilora.tensor(rng.standard_normal((4, 5)), requires_grad=True)

    def fn(x, A, B):
        minilora.manual_seed(11)  # the same mask on every call, as gradcheck needs
        return layer(x)
    result = gradcheck(fn, [x, layer.lora_A, layer.lora_B])
    assert result.ok, result.report()


def test_gaussian_and_kaiming_initialisation():
    minilora.manual_seed(0)
    gaussian = new_adapter(256, 64, r=64, alpha=64, init="gaussian")
    A = gaussian.lora_A.numpy()
    assert A.shape == (64, 256) and A.dtype == np.float32
    assert abs(A.std() - 1 / 16) < 0.05 / 16 and abs(A.mean()) < 0.01 / 16 * 16 ** 0.5
    kaiming = new_adapter(256, 64, r=64, alpha=64, init="kaiming").lora_A.numpy()
    assert np.abs(kaiming).max() <= 1 / 16 and abs(kaiming.std() - 1 / 16 / 3 ** 0.5) < 0.05 / 16
    assert not np.any(gaussian.lora_B.numpy()) and gaussian.lora_B.shape == (64, 64)
    assert gaussian.scaling == 1.0


def test_several_adapters_in_one_layer(rng):
    layer = make_layer(rng, "cpu", r=2)
    other = LoRAAdapter(Parameter(rng.standard_normal((4, 7))), Parameter(rng.standard_normal((5, 4))), 0.5)
    layer.add_adapter("other", other)
    x = rng.standard_normal((3, 7))
    W, b, A, B, s = numpy_params(layer)
    first = layer(minilora.tensor(x)).numpy()
    np.testing.assert_allclose(first, x @ W.T + b + s * (x @ A.T) @ B.T, rtol=1e-12, atol=1e-12)
    layer.active_adapter = "other"
    assert layer.r == 4 and layer.scaling == 0.5 and layer.lora_A is other.lora_A
    A2, B2 = other.lora_A.numpy(), other.lora_B.numpy()
    np.testing.assert_allclose(layer(minilora.tensor(x)).numpy(), x @ W.T + b + 0.5 * (x @ A2.T) @ B2.T, rtol=1e-12, atol=1e-12)
    layer.active_adapter = "missing"   # a layer without the active adapter is the base layer
    assert np.array_equal(layer(minilora.tensor(x)).numpy(), layer.base(minilora.tensor(x)).numpy())
    with pytest.raises(RuntimeError, match="no adapter named 'missing'"):
        layer.lora_A
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["base.weight", "base.bias", "adapters.default.lora_A", "adapters.default.lora_B",
                     "adapters.other.lora_A", "adapters.other.lora_B"]


def test_bad_layers_and_adapters_are_rejected(rng):
    with pytest.raises(ValueError, match="r must be an int in \\[1, min\\(in, out\\)\\] = \\[1, 5\\]"):
        LoRALinear(Linear(7, 5), r=6)
    with pytest.raises(TypeError, match="wraps a Linear"):
        LoRALinear(minilora.nn.LayerNorm(4), r=1)
    layer = LoRALinear(Linear(7, 5), r=2)
    with pytest.raises(ValueError, match="this layer needs \\(3, 7\\) and \\(5, 3\\)"):
        layer.add_adapter("x", LoRAAdapter(Parameter(np.ones((3, 6), np.float32)),
                                           Parameter(np.ones((5, 3), np.float32)), 1.0))
    with pytest.raises(TypeError, match="float64"):
        layer.add_adapter("x", LoRAAdapter(Parameter(np.ones((3, 7))), Parameter(np.ones((5, 3))), 1.0))
    with pytest.raises(ValueError, match="already exists"):
        layer.add_adapter("default", new_adapter(7, 5, 1, 1))
    with pytest.raises(ValueError, match="adapter_name must be an identifier"):
        layer.add_adapter("a.b", new_adapter(7, 5, 1, 1))
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        new_adapter(7, 5, 1, 0)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(dropout="0.1"), ValueError, "dropout must be a number in [0, 1), got '0.1'"),
    (dict(dropout=1.0), ValueError, "dropout must be a number in [0, 1), got 1.0"),
    (dict(alpha="8"), ValueError, "alpha must be a finite number > 0, got '8'"),
    (dict(use_rslora="yes"), TypeError, "use_rslora must be True or False, got 'yes'"),
    (dict(use_dora=1), TypeError, "use_dora must be True or False, got 1"),
    (dict(r=2.0), ValueError, "r must be an int in [1, min(in, out)] = [1, 3] for this layer, got 2.0"),
])
def test_layer_arguments_are_checked_as_lora_config_checks_them(kwargs, error, words):
    with pytest.raises(error) as info:
        LoRALinear(Linear(4, 3), **({"r": 2} | kwargs))
    assert words in str(info.value)


def test_a_numpy_rank_and_alpha_make_the_same_layer_as_python_ones():
    layer = LoRALinear(Linear(4, 3), r=np.int64(2), alpha=np.float32(6))
    assert type(layer.r) is int and layer.r == 2 and layer.scaling == 3.0


def test_an_empty_batch_goes_through_like_through_linear(rng, device):
    layer = LoRALinear(Linear(6, 4, device=device), r=2, alpha=4)
    layer.lora_B.data[...] = backend.xp_for(device).asarray(rng.standard_normal((4, 2)), dtype="float32")
    x = minilora.tensor(np.zeros((0, 3, 6), dtype=np.float32), requires_grad=True, device=device)
    y = layer(x)
    assert y.shape == layer.base(x).shape == (0, 3, 4) and y.dtype == np.float32
    y.sum().backward()
    assert x.grad.shape == (0, 3, 6)
    # Sums over no rows: the adapter's gradients are zeros, not garbage.
    np.testing.assert_array_equal(backend.to_numpy(layer.lora_A.grad), np.zeros((2, 6)))
    np.testing.assert_array_equal(backend.to_numpy(layer.lora_B.grad), np.zeros((4, 2)))
    out = F.lora_linear(x[:, 0], layer.weight, layer.lora_A, layer.lora_B, 2.0, bias=layer.bias)
    assert out.shape == (0, 4)
