"""The compiled CPU ops beside the fused one (csrc/cpu/op_*.cpp, minilora/kernels/compiled.py):
products, layer norm, softmax (plain and causal with a scale) and GELU.

Each is checked against its NumPy op (the same op run under use_backend("numpy"), which is the
reference code path), in float32 and float64, on shapes that are no multiple of any vector width
(one row, 3 features, odd lengths); its compiled function is called on NaN-filled outputs so that
an element it forgot to write fails; its gradient is checked numerically in float64.
"""

import numpy as np
import pytest

import minilora
from minilora import backend, gradcheck
from minilora import functional as F
from minilora.kernels import compiled, cpp, use_backend

pytestmark = pytest.mark.skipif(backend.extension_status()[0] is None,
                                reason="minilora._C is not built: the compiled ops cannot run")
C = backend.extension_status()[0]

DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def products_on_the_gemm(monkeypatch):
    """Products go to the GEMM only on more than one thread (compiled.products_here): here always,
    so that these tests check it on a one-core machine too."""
    monkeypatch.setattr(compiled, "products_here", lambda: True)
# ‖out - ref‖ / ‖ref‖ (DESIGN.md), plus an absolute floor for outputs near zero.
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}


def assert_close(out, ref, dtype):
    out, ref = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape
    assert np.isfinite(out).all()
    error = np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30)
    assert error <= TOLERANCE[dtype] or np.abs(out - ref).max() <= TOLERANCE[dtype] * 1e-3, error


def both_paths(fn, arrays, dtype):
    """fn(*tensors) and its gradients with respect to every input, on the compiled path and on the
    NumPy reference; compared, and the compiled path checked to have run."""
    results = []
    for reference in (False, True):
        tensors = [minilora.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
        if reference:
            with use_backend("numpy"):
                assert not compiled.runs(tensors[0].data)
                out = fn(*tensors)
                out.backward(np.cos(np.arange(out.size)).reshape(out.shape).astype(dtype))
        else:
            assert compiled.runs(tensors[0].data)
            out = fn(*tensors)
            out.backward(np.cos(np.arange(out.size)).reshape(out.shape).astype(dtype))
        results.append([out.data] + [t.grad for t in tensors])
    for fast, ref in zip(*results):
        if fast is None or ref is None:  # an input the function leaves out has no gradient on either path
            assert fast is None and ref is None
        else:
            assert_close(fast, ref, dtype)


ROWS = [(1, 3), (5, 7), (2, 3, 17), (4, 33)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROWS)
@pytest.mark.parametrize("affine", ["weight and bias", "weight", "bias", "neither"])
def test_layer_norm_matches_numpy(rng, dtype, shape, affine):
    x = rng.standard_normal(shape) * 3 + 1
    w, b = rng.standard_normal(shape[-1]), rng.standard_normal(shape[-1])
    has_w, has_b = "weight" in affine, "bias" in affine
    both_paths(lambda x, w, b: F.layer_norm(x, w if has_w else None, b if has_b else None, eps=1e-3),
               [x, w, b], dtype)


def test_layer_norm_with_a_frozen_scale_and_shift(rng):
    # the LoRA case: LayerNorm's weight and bias frozen, their gradients neither computed nor set
    x = minilora.tensor(rng.standard_normal((4, 6)), requires_grad=True)
    w, b = minilora.tensor(rng.standard_normal(6)), minilora.tensor(rng.standard_normal(6))
    F.layer_norm(x, w, b).sum().backward()
    assert x.grad is not None and w.grad is None and b.grad is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROWS)
def test_softmax_matches_numpy(rng, dtype, shape):
    both_paths(lambda x: F.softmax(x, axis=-1), [rng.standard_normal(shape) * 4], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 5, 5), (2, 3, 7, 7), (4, 9)])
def test_causal_softmax_matches_numpy(rng, dtype, shape):
    both_paths(lambda x: F.causal_softmax(x, scale=0.37), [rng.standard_normal(shape) * 4], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (3, 7), (2, 5, 33), (70001,)])
def test_gelu_matches_numpy(rng, dtype, shape):
    x = rng.standard_normal(shape) * 4
    x.reshape(-1)[:1] = -30.0  # e = 1 + exp(60) overflows float32 to inf: y = -0, gradient 0
    both_paths(F.gelu, [x], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M, K, N", [(1, 3, 1), (7, 3, 5), (33, 17, 65), (300, 70, 40)])
def test_linear_matches_numpy(rng, dtype, M, K, N):
    x, w, b = rng.standard_normal((2, M, K)), rng.standard_normal((N, K)), rng.standard_normal(N)
    both_paths(F.linear, [x, w, b], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("a_shape, b_shape", [((3, 1, 5, 3), (1, 2, 3, 7)), ((5, 3), (2, 3, 4)),
                                              ((2, 9, 4), (2, 4, 9)), ((3,), (2, 3, 5))])
def test_matmul_matches_numpy_with_broadcast_batches(rng, dtype, a_shape, b_shape):
    both_paths(lambda a, b: a @ b, [rng.standard_normal(a_shape), rng.standard_normal(b_shape)], dtype)


def test_attention_with_transposed_views_matches_numpy(rng):
    # q·kᵀ and weights·v on the (B, T, nh, hd) -> (B, nh, T, hd) views the GPT makes, never copied
    def attention(q, k, v):
        q, k, v = (t.reshape(2, 5, 3, 4).transpose(0, 2, 1, 3) for t in (q, k, v))
        weights = F.causal_softmax(q @ k.transpose(0, 1, 3, 2), scale=0.5)
        return weights @ v
    both_paths(attention, [rng.standard_normal((2, 5, 12)) for _ in range(3)], np.float32)


def test_causal_softmax_is_scale_mask_then_softmax(rng):
    x = minilora.tensor(rng.standard_normal((2, 6, 6)))
    future = np.triu(np.ones((6, 6), dtype=bool), k=1)
    with use_backend("numpy"):
        expected = F.softmax((x * 0.3).masked_fill(minilora.tensor(future), float("-inf")), axis=-1).numpy()
    out = F.causal_softmax(x, scale=0.3).numpy()
    assert_close(out, expected, np.float64)
    assert (out[..., future] == 0).all()


@pytest.mark.parametrize("reference", [False, True])
def test_gradients_numerically_in_float64(make, reference):
    if make.device != "cpu":
        pytest.skip("the compiled ops take NumPy arrays")
    x, w, b = make.randn(3, 5), make.randn(5), make.randn(5)
    s = make.randn(2, 4, 4)
    W, bias = make.randn(4, 5), make.randn(4)
    cases = [(lambda x, w, b: F.layer_norm(x, w, b), [x, w, b]), (lambda s: F.softmax(s, axis=-1), [s]),
             (lambda s: F.causal_softmax(s, scale=0.7), [s]), (F.gelu, [x]),
             (F.linear, [x, W, bias]), (lambda s, x: s[:, :, :3] @ x, [s, x])]
    for fn, inputs in cases:
        if reference:
            with use_backend("numpy"):
                result = gradcheck(fn, inputs)
        else:
            result = gradcheck(fn, inputs)
        assert result.ok, result


# ---- the compiled functions themselves: every element written, shapes checked --------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_output_element_is_written(rng, dtype):
    def nan_like(a, shape=None):
        return np.full(a.shape if shape is None else shape, np.nan, dtype=dtype)

    x = rng.standard_normal((3, 7, 7)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    outputs = []
    y = nan_like(x)
    C.softmax_forward_cpu(x, 0.5, True, y)
    dx = nan_like(x)
    C.softmax_backward_cpu(g, y, 0.5, dx)
    w = rng.standard_normal(7).astype(dtype)
    x_hat, inv_std, ln = nan_like(x), nan_like(x, (3, 7, 1)), nan_like(x)
    C.layer_norm_forward_cpu(x, 1e-5, w, None, x_hat, inv_std, ln)
    dn, dw, db = nan_like(x), nan_like(w), nan_like(w)
    C.layer_norm_backward_cpu(g, x_hat, inv_std, w, dn, dw, db)
    gy, ge, gd = nan_like(x), nan_like(x), nan_like(x)
    C.gelu_forward_cpu(x, gy, ge)
    C.gelu_backward_cpu(g, x, ge, gd)
    prod = nan_like(x, (3, 7, 5))
    C.matmul_cpu(x, np.broadcast_to(rng.standard_normal((7, 5)).astype(dtype), (3, 7, 5)), prod, None)
    outputs += [y, dx, x_hat, inv_std, ln, dn, dw, db, gy, ge, gd, prod]
    for out in outputs:
        assert np.isfinite(out).all()


@pytest.mark.parametrize("isa", cpp.available_isas())
def test_products_on_every_instruction_set(rng, isa):
    a = rng.standard_normal((4, 37, 19)).astype(np.float32).transpose(0, 2, 1)  # (4, 19, 37), strided
    b = rng.standard_normal((37, 23)).astype(np.float32)
    bias = rng.standard_normal(23).astype(np.float32)
    with cpp.use_isa(isa):
        out = compiled.matmul(a, b, bias)
    assert_close(out, a.astype(np.float64) @ b + bias, np.float32)


def test_compiled_functions_refuse_mismatched_shapes_and_casts(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="y must have as many values as x"):
        C.softmax_forward_cpu(x, 1.0, False, np.empty((3, 5), np.float32))
    with pytest.raises(ValueError, match="R must have"):
        C.matmul_cpu(x, np.ones((5, 2), np.float32), np.empty((3, 2), np.float32), None)
    with pytest.raises(TypeError):  # a float64 output never meets a float32 input by a silent cast
        C.gelu_forward_cpu(x, np.empty((3, 4)), np.empty((3, 4)))


def test_causal_softmax_checks_its_arguments():
    with pytest.raises(ValueError, match="scale"):
        F.causal_softmax(minilora.tensor(np.ones((2, 2))), scale=0.0)
    with pytest.raises(ValueError, match=r"\(\.\.\., T, T_k\)"):
        F.causal_softmax(minilora.tensor(np.ones(3)), scale=1.0)
    with pytest.raises(TypeError, match="scores must be a Tensor"):
        F.causal_softmax(np.ones((2, 2)), scale=1.0)


def test_integer_and_small_products_stay_with_numpy(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the GEMM ran")
    monkeypatch.setattr(C, "matmul_cpu", refuse, raising=False)
    a = np.arange(60 * 60).reshape(60, 60)
    assert not compiled.runs(a)
    assert (compiled.matmul(a, a.T) == a @ a.T).all()
    small = np.ones((2, 16, 16))  # 16·16·16 multiply-adds per product: below PRODUCT_MIN_WORK
    assert (compiled.matmul(small, small) == 16).all()


def test_use_backend_none_keeps_the_choice_around_it(rng):
    x = rng.standard_normal((2, 3))
    with use_backend(None):
        assert compiled.runs(x)
    with use_backend("numpy"), use_backend(None):
        assert not compiled.runs(x)
