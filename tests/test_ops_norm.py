"""layer_norm over the last axis: value against the formula, gradients for x, weight and bias."""

import numpy as np
import pytest

import minilora
from minilora import F, backend


def layer_norm_formula(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


@pytest.mark.parametrize("affine", ["both", "weight only", "none"])
def test_layer_norm_values_and_gradients(make, affine):
    x = make.randn(2, 3, 5)
    weight = make.randn(5) if affine != "none" else None
    bias = make.randn(5) if affine == "both" else None
    out = F.layer_norm(x, weight, bias, eps=1e-5)
    expected = layer_norm_formula(x.numpy(), None if weight is None else weight.numpy(),
                                  None if bias is None else bias.numpy(), 1e-5)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    inputs = [t for t in (x, weight, bias) if t is not None]
    minilora.assert_gradcheck(lambda *ts: F.layer_norm(*ts, eps=1e-5) if len(ts) == 3 else F.layer_norm(*ts),
                              inputs, names=["x", "weight", "bias"][:len(inputs)])


def test_layer_norm_output_has_zero_mean_unit_variance(make):
    x = make.randn(4, 64)
    out = F.layer_norm(x * 5.0 + 3.0, eps=1e-12).numpy()
    np.testing.assert_allclose(out.mean(axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=-1), 1.0, rtol=1e-9)


def test_layer_norm_errors(make):
    x = make.randn(2, 4)
    with pytest.raises(ValueError, match=r"weight must be a Tensor of shape \(4,\).*got \(3,\)"):
        F.layer_norm(x, make.randn(3))
    with pytest.raises(ValueError, match=r"bias must be a Tensor of shape \(4,\)"):
        F.layer_norm(x, None, make.randn(4, 1))
    with pytest.raises(ValueError, match="eps must be > 0, got 0"):
        F.layer_norm(x, eps=0)


def test_float32_stays_float32(device):
    x = minilora.tensor([[1.0, 2.0, 4.0]], device=device, requires_grad=True)
    w = minilora.tensor([1.0, 0.5, 2.0], device=device, requires_grad=True)
    out = F.layer_norm(x, w, w)
    out.sum().backward()
    assert out.dtype == x.grad.dtype == w.grad.dtype == np.float32


def test_a_constant_row_has_finite_correct_gradients(make):
    # A constant row has variance 0: only eps keeps 1/sqrt(var + eps) finite, in the forward and in
    # the backward, and its normalised output is exactly 0.
    x = make.randn(3, 6)
    x.data[1] = 2.5
    weight, bias = make.randn(6), make.randn(6)
    out = F.layer_norm(x, weight, bias, eps=1e-5)
    np.testing.assert_allclose(out.numpy()[1], bias.numpy(), rtol=0, atol=1e-12)
    out.backward(make.randn(3, 6).data)
    assert np.isfinite(backend.to_numpy(x.grad)).all() and np.isfinite(backend.to_numpy(weight.grad)).all()
    x.grad = weight.grad = bias.grad = None
    minilora.assert_gradcheck(lambda *ts: F.layer_norm(*ts, eps=1e-5), [x, weight, bias],
                              names=["x", "weight", "bias"])
