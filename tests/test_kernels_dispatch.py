"""How minilora.kernels picks a backend (dispatch.py), and its errors for backends it cannot use.

Which backend ran is observed by replacing the backends' functions with recording wrappers.
"""

import numpy as np
import pytest

from minilora import backend
from minilora.kernels import (BACKENDS, available_backends, backend_status, default_backend, dispatch,
                              lora_backward, lora_forward, reference, use_backend)

EXTENSION, EXTENSION_REASON = backend.extension_status()
needs_extension = pytest.mark.skipif(EXTENSION is None,
                                     reason=f"the C++ op is not built ({EXTENSION_REASON}); "
                                     "tests/test_build.py fails for it")


@pytest.fixture
def arrays(rng):
    M, K, N, r = 3, 5, 4, 2
    return [rng.standard_normal(s) for s in ((M, K), (N, K), (r, K), (N, r))]


def test_every_backend_has_a_status_with_a_reason():
    for name in BACKENDS:
        usable, reason = backend_status(name)
        assert isinstance(usable, bool) and reason and "\n" not in reason
        assert (name in available_backends()) == usable
    assert backend_status("numpy")[0]


@needs_extension
@pytest.mark.parametrize("rows, K, N, expected", [
    (dispatch.CPP_MIN_ROWS, 128, 64, "cpp"),          # at the thresholds: M·K·N = 2²¹
    (dispatch.CPP_MIN_ROWS - 1, 128, 64, "numpy"),    # one row too few
    (4096, dispatch.CPP_MIN_FEATURES, 32, "cpp"),
    (4096, dispatch.CPP_MIN_FEATURES - 1, 64, "numpy"),  # too few input features
    (4096, 64, dispatch.CPP_MIN_FEATURES - 1, "numpy"),  # too few output features
    (dispatch.CPP_MIN_ROWS, 64, 64, "numpy"),         # enough of each, too little work
    (dispatch.CPP_MIN_ROWS, 300, 64, "numpy"),        # more input features than rows
    (300, 300, 300, "cpp"),
])
def test_numpy_arrays_of_large_layers_go_to_cpp_when_it_is_built(calls, rng, rows, K, N, expected):
    assert default_backend("cpu") == "cpp"
    r = 4
    x, W, A, B = (rng.standard_normal(s) for s in ((rows, K), (N, K), (r, K), (N, r)))
    assert default_backend("cpu", (rows, K, N, r)) == expected
    y, u = lora_forward(x, W, A, B, 2.0)
    lora_backward(np.ones_like(y), x, W, A, B, u, 2.0)
    assert calls == [expected, expected]


def test_choice_precedence_argument_then_block_then_environment(calls, arrays, monkeypatch):
    monkeypatch.setenv("MINILORA_BACKEND", "numpy")
    lora_forward(*arrays, 1.0)
    assert calls[-1] == "numpy"
    if EXTENSION is not None:
        with use_backend("cpp"):
            lora_forward(*arrays, 1.0)
            assert calls[-1] == "cpp"
            with use_backend("numpy"):
                lora_forward(*arrays, 1.0)
                assert calls[-1] == "numpy"
            lora_forward(*arrays, 1.0)  # the outer block is back in force
            assert calls[-1] == "cpp"
            lora_forward(*arrays, 1.0, backend="numpy")
            assert calls[-1] == "numpy"
    assert len(calls) == (5 if EXTENSION is not None else 1)


def test_unknown_backend_names_where_it_came_from(arrays, monkeypatch):
    monkeypatch.delenv("MINILORA_BACKEND", raising=False)
    with pytest.raises(ValueError, match=r"backend must be one of \('numpy', 'cpp', 'cuda', 'cupy'\), "
                                         "got 'blas'"):
        lora_forward(*arrays, 1.0, backend="blas")
    with pytest.raises(ValueError, match=r"use_backend\(name\) must be one of"):
        with use_backend("gpu"):
            pass
    monkeypatch.setenv("MINILORA_BACKEND", "fast")
    with pytest.raises(ValueError, match=r"environment variable MINILORA_BACKEND must be one of .* "
                                         "got 'fast'"):
        lora_forward(*arrays, 1.0)


@pytest.mark.parametrize("name", ["cuda", "cupy"])
def test_gpu_backends_refuse_numpy_arrays(arrays, name):
    with pytest.raises(ValueError, match=rf"backend '{name}' \(from backend=\) works on CuPy arrays, but the "
                                         "arrays are NumPy arrays"):
        lora_forward(*arrays, 1.0, backend=name)


def test_variant_is_only_for_the_cuda_backend(arrays):
    with pytest.raises(ValueError, match=r"variant= applies only to backend 'cuda', got variant='tiled' "
                                         "with backend 'numpy'"):
        lora_forward(*arrays, 1.0, backend="numpy", variant="tiled")


def test_one_dimensional_x_is_one_row(arrays):
    x, W, A, B = arrays
    y, u = lora_forward(x[0], W, A, B, 1.5, backend="numpy")
    y2, u2 = reference.lora_forward(x[:1], W, A, B, 1.5)
    assert y.shape == (4,) and u.shape == (2,)
    np.testing.assert_allclose(y, y2[0], rtol=1e-12, atol=1e-12)
    dx, dA, dB = lora_backward(np.ones(4), x[0], W, A, B, u, 1.5, backend="numpy")
    assert dx.shape == (5,) and dA.shape == A.shape and dB.shape == B.shape


@pytest.mark.parametrize("name", ["numpy", "cpp"])
def test_empty_batch_gives_empty_outputs_and_zero_adapter_gradients(arrays, name):
    if name not in available_backends():
        pytest.skip(f"backend {name} is not available here: {backend_status(name)[1]}")
    x, W, A, B = arrays
    y, u = lora_forward(x[:0].reshape(0, 0, 5), W, A, B, 1.0, bias=np.ones(4), backend=name)
    assert y.shape == (0, 0, 4) and u.shape == (0, 0, 2)
    dx, dA, dB = lora_backward(np.ones((0, 0, 4)), x[:0].reshape(0, 0, 5), W, A, B, u, 1.0, backend=name)
    assert dx.shape == (0, 0, 5)
    np.testing.assert_array_equal(dA, np.zeros(A.shape))
    np.testing.assert_array_equal(dB, np.zeros(B.shape))


@pytest.mark.parametrize("name", ["numpy", "cpp"])
def test_scaling_must_be_finite_in_the_arrays_dtype(arrays, name):
    if name not in available_backends():
        pytest.skip(f"backend {name} is not available here: {backend_status(name)[1]}")
    x, W, A, B = arrays
    for scaling in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="scaling must be a finite number"):
            lora_forward(x, W, A, B, scaling, backend=name)
        with pytest.raises(ValueError, match="scaling must be a finite number"):
            lora_backward(np.ones((3, 4)), x, W, A, B, np.ones((3, 2)), scaling, backend=name)
    as32 = [a.astype(np.float32) for a in arrays]
    with pytest.raises(ValueError, match=r"scaling 1e\+300 is not representable in float32"):
        lora_forward(*as32, 1e300, backend=name)
    y, _ = lora_forward(x, W, A, B, 1e300, backend=name)  # float64 holds it
    assert y.dtype == np.float64


@needs_extension
def test_output_buffers_that_alias_an_input_are_refused(arrays):
    from minilora.kernels import cpp
    x, W, A, B = arrays
    y, u = np.empty((3, 4)), np.empty((3, 2))
    with pytest.raises(ValueError, match="the output u shares memory with x"):
        cpp.forward(x, W, A, B, 1.0, out=(y, x.reshape(-1)[:6].reshape(3, 2)))
    with pytest.raises(ValueError, match="the output y shares memory with u"):
        cpp.forward(x, W, A, B, 1.0, out=(y, y.reshape(-1)[:6].reshape(3, 2)))
    dy = np.ones((3, 4))
    with pytest.raises(ValueError, match="the output dB shares memory with dy"):
        cpp.backward(dy, x, W, A, B, u, 1.0, out=(np.empty((3, 5)), np.empty((2, 5)), dy.reshape(-1)[:8].reshape(4, 2)))
    y.flags.writeable = False
    with pytest.raises(ValueError, match="the output y is read-only"):
        cpp.forward(x, W, A, B, 1.0, out=(y, u))
    # Separate buffers are written in place and match the reference.
    y, u = np.full((3, 4), np.nan), np.full((3, 2), np.nan)
    got = cpp.forward(x, W, A, B, 1.5, out=(y, u))
    assert got[0] is y and got[1] is u
    expected, _ = reference.lora_forward(x, W, A, B, 1.5)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_backward_checks_u_against_the_forward(arrays):
    x, W, A, B = arrays
    y, u = lora_forward(x, W, A, B, 1.0, backend="numpy")
    with pytest.raises(ValueError, match=r"u has shape \(3, 3\), expected \(3, 2\)"):
        lora_backward(np.ones_like(y), x, W, A, B, np.ones((3, 3)), 1.0)


@pytest.mark.gpu
def test_cupy_arrays_use_a_gpu_backend(cuda_device, rng):
    cupy = backend.xp_for(cuda_device)
    host = [rng.standard_normal(s) for s in ((2, 3, 5), (4, 5), (2, 5), (4, 2))]
    y, u = lora_forward(*(cupy.asarray(a) for a in host), 1.5)
    assert default_backend("cuda") in available_backends()
    expected, _ = reference.lora_forward(host[0].reshape(6, 5), *host[1:], 1.5)
    np.testing.assert_allclose(backend.to_numpy(y), expected.reshape(2, 3, 4), rtol=1e-10, atol=1e-12)
    assert u.shape == (2, 3, 2)
