"""F.lora_linear: values against the NumPy formula, float64 gradient checks over every input on each
backend that can run, the frozen-weight case LoRA trains in, and its argument checks."""

import numpy as np
import pytest

import minilora
from minilora import F, backend
from minilora.kernels import BACKENDS, backend_status, dispatch, use_backend

CPU_BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(not backend_status(name)[0],
                                                            reason=backend_status(name)[1]))
                for name in BACKENDS if dispatch.DEVICE_OF_BACKEND[name] == "cpu"]


def lora_inputs(make, batch=(2, 3), K=5, N=4, r=2, bias=True):
    x = make.randn(*batch, K)
    W, A, B = make.randn(N, K), make.randn(r, K), make.randn(N, r)
    return x, W, A, B, (make.randn(N) if bias else None)


def expected_output(x, W, A, B, scaling, bias):
    y = x @ W.T + scaling * (x @ A.T) @ B.T
    return y + bias if bias is not None else y


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_gradients_over_every_input_on_cpu_backends(rng, name, with_bias):
    make = CpuMaker(rng)
    x, W, A, B, b = lora_inputs(make, bias=with_bias)
    inputs = [t for t in (x, W, A, B, b) if t is not None]
    with use_backend(name):
        out = F.lora_linear(x, W, A, B, 1.7, bias=b)
        expected = expected_output(*(t.numpy() if t is not None else None for t in (x, W, A, B)), 1.7,
                                   b.numpy() if b is not None else None)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
        names = ["x", "weight", "lora_A", "lora_B", "bias"][:len(inputs)]
        minilora.assert_gradcheck(lambda *t: F.lora_linear(*t[:4], 1.7, bias=t[4] if with_bias else None),
                                  inputs, names=names)


def test_gradients_on_the_default_backend_of_each_device(make):
    x, W, A, B, b = lora_inputs(make, batch=(3,), K=6, N=3, r=3)
    minilora.assert_gradcheck(lambda *t: F.lora_linear(*t[:4], 0.5, bias=t[4]), [x, W, A, B, b],
                              names=["x", "weight", "lora_A", "lora_B", "bias"])


def test_frozen_weight_gets_no_gradient_and_A_B_get_the_formula(make):
    x, W, A, B, b = lora_inputs(make)
    W.requires_grad = False
    b.requires_grad = False
    y = F.lora_linear(x, W, A, B, 2.0, bias=b)
    dy = np.asarray(make.rng.standard_normal(y.shape))
    y.backward(backend.to_device(dy, make.device))
    assert W.grad is None and b.grad is None
    xs, Ws, As, Bs = (t.numpy().reshape(-1, t.shape[-1]) for t in (x, W, A, B))
    dy2 = dy.reshape(-1, dy.shape[-1])
    v = dy2 @ Bs
    np.testing.assert_allclose(backend.to_numpy(A.grad), 2.0 * v.T @ xs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(backend.to_numpy(B.grad), 2.0 * dy2.T @ (xs @ As.T), rtol=1e-10, atol=1e-10)
    expected_dx = (dy2 @ Ws + 2.0 * v @ As).reshape(x.shape)
    np.testing.assert_allclose(backend.to_numpy(x.grad), expected_dx, rtol=1e-10, atol=1e-10)


def test_float32_in_float32_out(rng):
    make = CpuMaker(rng)
    x, W, A, B, b = (t.to(dtype="float32") for t in lora_inputs(make))
    for t in (x, A, B):
        t.requires_grad = True
    y = F.lora_linear(x, W, A, B, 2.0, bias=b)
    y.sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32 and A.grad.dtype == np.float32


def test_backward_runs_on_the_backend_the_forward_used(rng, monkeypatch):
    make = CpuMaker(rng)
    x, W, A, B, _ = lora_inputs(make, bias=False)
    used = []
    monkeypatch.setattr(dispatch, "cpp_pays_off", lambda M, K, N: True)  # the default: "cpp" where built
    monkeypatch.setitem(dispatch._BACKWARD, "numpy",
                        lambda *args: used.append("numpy") or dispatch.reference.lora_backward(*args))
    with use_backend("numpy"):
        y = F.lora_linear(x, W, A, B, 1.0)
    y.sum().backward()  # outside the block, where the default backend would be another one
    assert used == ["numpy"]


def test_arguments_must_be_tensors_of_one_dtype(rng):
    make = CpuMaker(rng)
    x, W, A, B, _ = lora_inputs(make, bias=False)
    with pytest.raises(TypeError, match=r"lora_linear: lora_B must be a Tensor, got ndarray"):
        F.lora_linear(x, W, A, B.numpy(), 1.0)
    with pytest.raises(TypeError, match=r"different dtypes"):
        F.lora_linear(x, W.to(dtype="float32"), A, B, 1.0)
    with pytest.raises(TypeError, match=r"scaling must be a real number, got Tensor"):
        F.lora_linear(x, W, A, B, minilora.tensor(1.0))
    with pytest.raises(ValueError, match=r"A has shape \(2, 4\), expected \(2, 5\)"):
        F.lora_linear(x, W, make.randn(2, 4), B, 1.0)


class CpuMaker:
    """Random float64 tensors that require grad, on the CPU whatever the `device` fixture says."""

    def __init__(self, rng):
        self.rng = rng

    def randn(self, *shape):
        return minilora.tensor(self.rng.standard_normal(shape), requires_grad=True)
