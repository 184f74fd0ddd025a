"""The NumPy reference of the fused LoRA op (minilora.kernels.reference): the ground truth.

Its forward is checked against the formula written with einsum, and its backward against central
differences of that forward, in float64, so that neither side is produced by the code under test.
"""

import numpy as np
import pytest

from minilora.kernels import reference

SHAPES = [(1, 1, 1, 1), (5, 3, 7, 2), (6, 8, 4, 3), (2, 5, 9, 6)]  # (M, K, N, r)


def random_problem(rng, M, K, N, r, dtype=np.float64):
    shapes = {"x": (M, K), "W": (N, K), "A": (r, K), "B": (N, r), "bias": (N,), "dy": (M, N)}
    arrays = {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
    arrays["scaling"] = float(rng.uniform(0.5, 2.0))
    return arrays


def einsum_forward(x, W, A, B, scaling, bias):
    u = np.einsum("mk,jk->mj", x, A)
    return np.einsum("mk,nk->mn", x, W) + scaling * np.einsum("mj,nj->mn", u, B) + bias


def central_difference(f, array, eps=1e-6):
    """d f / d array, one element at a time (f returns a number)."""
    grad = np.empty_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + eps
        up = f()
        array[index] = saved - eps
        down = f()
        array[index] = saved
        grad[index] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_the_formula(rng, shape):
    p = random_problem(rng, *shape)
    y, u = reference.lora_forward(p["x"], p["W"], p["A"], p["B"], p["scaling"], p["bias"])
    np.testing.assert_allclose(u, np.einsum("mk,jk->mj", p["x"], p["A"]), rtol=1e-12, atol=1e-12)
    expected = einsum_forward(p["x"], p["W"], p["A"], p["B"], p["scaling"], p["bias"])
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_forward_without_bias_adds_nothing(rng):
    p = random_problem(rng, 3, 4, 5, 2)
    y, _ = reference.lora_forward(p["x"], p["W"], p["A"], p["B"], p["scaling"])
    expected = einsum_forward(p["x"], p["W"], p["A"], p["B"], p["scaling"], 0.0)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_backward_matches_central_differences(rng, shape):
    p = random_problem(rng, *shape)
    x, W, A, B, s, bias, dy = (p[k] for k in ("x", "W", "A", "B", "scaling", "bias", "dy"))
    _, u = reference.lora_forward(x, W, A, B, s, bias)
    dx, dA, dB = reference.lora_backward(dy, x, W, A, B, u, s)

    def loss():  # L = Σ y·dy, so dL/dy = dy
        return float((einsum_forward(x, W, A, B, s, bias) * dy).sum())

    for name, grad, array in (("dx", dx, x), ("dA", dA, A), ("dB", dB, B)):
        np.testing.assert_allclose(grad, central_difference(loss, array), rtol=1e-6, atol=1e-8,
                                   err_msg=name)


def test_float32_stays_float32(rng):
    p = random_problem(rng, 4, 6, 5, 2, dtype=np.float32)
    y, u = reference.lora_forward(p["x"], p["W"], p["A"], p["B"], p["scaling"], p["bias"])
    grads = reference.lora_backward(p["dy"], p["x"], p["W"], p["A"], p["B"], u, p["scaling"])
    assert [a.dtype for a in (y, u, *grads)] == [np.float32] * 5
