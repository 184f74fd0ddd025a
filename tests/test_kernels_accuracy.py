"""The rounding bounds of minilora.kernels.accuracy: a correct float32 result always passes (also where
the terms cancel and a relative-norm tolerance fails), and a result missing a single term does not."""

import numpy as np
import pytest

from minilora.kernels import accuracy, bf16, reference

SHAPES = [(1, 1, 1, 1), (66, 1, 1, 18), (17, 33, 19, 5), (8, 40, 530, 4), (300, 20, 24, 3)]


def layer(rng, M, N, K, r):
    """float32 inputs of a layer, and the same values in float64."""
    arrays = [rng.standard_normal(shape).astype(np.float32)
              for shape in ((M, K), (N, K), (r, K), (N, r), (N,), (M, N))]
    return arrays, [a.astype(np.float64) for a in arrays], float(np.float32(rng.uniform(0.5, 4.0)))


def float32_forward(x, W, A, B, bias, s):
    """A correct float32 forward, rounded step by step (u rounded before y uses it, as the kernels do)."""
    u = x @ A.T
    return x @ W.T + np.float32(s) * (u @ B.T) + bias, u


def float32_backward(dy, x, W, A, B, u, s):
    v = dy @ B
    return dy @ W + np.float32(s) * (v @ A), np.float32(s) * (v.T @ x), np.float32(s) * (dy.T @ u)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_correct_float32_results_pass(seed, shape):
    (x, W, A, B, bias, dy), h, s = layer(np.random.default_rng(seed), *shape)
    y, u = float32_forward(x, W, A, B, bias, s)
    refs = reference.lora_forward(h[0], h[1], h[2], h[3], s, h[4])
    bounds = accuracy.forward_bounds(h[0], h[1], h[2], h[3], s, h[4], np.float32)
    for name, out, ref, bound in zip(("y", "u"), (y, u), refs, bounds):
        assert accuracy.check(name, out, ref, bound) is None
    grads = float32_backward(dy, x, W, A, B, u, s)
    u64 = u.astype(np.float64)
    refs = reference.lora_backward(h[5], h[0], h[1], h[2], h[3], u64, s)
    bounds = accuracy.backward_bounds(h[5], h[0], h[1], h[2], h[3], u64, s, np.float32)
    for name, out, ref, bound in zip(("dx", "dA", "dB"), grads, refs, bounds):
        assert accuracy.check(name, out, ref, bound) is None


@pytest.mark.parametrize("seed", range(4))
def test_cancellation_that_fails_a_relative_norm_tolerance_passes(seed):
    """At M = 66, N = 1, K = 1, r = 18 with W chosen so that x·Wᵀ nearly cancels s·u·Bᵀ, a correct
    float32 y is far more than 1e-5 off by ‖y − ref‖ / ‖ref‖, yet within the bound."""
    (x, W, A, B, bias, _), h, s = layer(np.random.default_rng(seed), 66, 1, 1, 18)
    W[...] = np.float32(-s * (B @ A))  # (1, 1): the base term cancels the LoRA term to float32
    y, _ = float32_forward(x, W, A, B, 0 * bias, s)
    x64, W64, A64, B64 = (a.astype(np.float64) for a in (x, W, A, B))
    y_ref, _ = reference.lora_forward(x64, W64, A64, B64, s)
    assert np.linalg.norm(y - y_ref) / np.linalg.norm(y_ref) > 1e-5
    bound, _ = accuracy.forward_bounds(x64, W64, A64, B64, s, None, np.float32)
    assert accuracy.check("y", y, y_ref, bound) is None


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_a_result_missing_one_term_fails(shape):
    """y without the last product of its sum over K (a loop bound off by one) is off by far more
    than rounding, on every shape, in float32 and float64."""
    rng = np.random.default_rng(0)
    M, N, K, r = shape
    _, (x, W, A, B, bias, _), s = layer(rng, *shape)
    y_ref, _ = reference.lora_forward(x, W, A, B, s, bias)
    missing = y_ref - np.outer(x[:, -1], W[:, -1])
    for dtype in (np.float32, np.float64):
        bound, _ = accuracy.forward_bounds(x, W, A, B, s, bias, dtype)
        assert accuracy.check("y", missing, y_ref, bound) is not None


def test_check_reports_nan_and_the_worst_element():
    ref = np.ones((2, 3))
    out = ref.copy()
    out[1, 2] = np.nan
    out[0, 0] = 1.5
    message = accuracy.check("dB", out, ref, np.full((2, 3), 1e-6))
    assert message.startswith("dB: 2 of 6 elements")
    assert "worst at (1, 2)" in message
    assert accuracy.check("dB", out[:1], ref, ref) == "dB has shape (1, 3), expected (2, 3)"


# ---- the bfloat16 bounds (the bf16 rung) -------------------------------------------------------------
def bf16_layer(rng, M, N, K, r):
    """float32 inputs that are bfloat16 values (the bias float32), and the same in float64."""
    (x, W, A, B, bias, dy), _, s = layer(rng, M, N, K, r)
    x, W, A, B, dy = (bf16.round_to_bfloat16(a) for a in (x, W, A, B, dy))
    arrays = (x, W, A, B, bias, dy)
    return arrays, [a.astype(np.float64) for a in arrays], s


def bf16_step_by_step(x, W, A, B, bias, dy, s):
    """A correct bf16 layer in float32: each product on bf16 values, summed in float32, and each
    intermediate (s·u, s·v, v, u) rounded to bfloat16 where a product reads it."""
    bf = bf16.round_to_bfloat16
    u = x @ A.T
    y = x @ W.T + bf(np.float32(s) * u) @ B.T + bias
    v = dy @ B
    dx = dy @ W + bf(np.float32(s) * v) @ A
    dA = np.float32(s) * (bf(v).T @ x)
    dB = np.float32(s) * (dy.T @ bf(u))
    return (y, u), (dx, dA, dB)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_correct_bf16_results_pass_the_bfloat16_bounds_and_not_float32s(seed, shape):
    arrays, h, s = bf16_layer(np.random.default_rng(seed), *shape)
    (y, u), grads = bf16_step_by_step(*arrays, s)
    u64 = u.astype(np.float64)
    refs = (reference.lora_forward(h[0], h[1], h[2], h[3], s, h[4]) +
            reference.lora_backward(h[5], h[0], h[1], h[2], h[3], u64, s))
    outs = (y, u) + grads
    names = ("y", "u", "dx", "dA", "dB")

    def bounds(operands):
        return (accuracy.forward_bounds(h[0], h[1], h[2], h[3], s, h[4], np.float32, operands) +
                accuracy.backward_bounds(h[5], h[0], h[1], h[2], h[3], u64, s, np.float32, operands))

    for name, out, ref, bound in zip(names, outs, refs, bounds("bfloat16")):
        assert accuracy.check(name, out, ref, bound) is None, name
    # The float32 bounds are too tight for the rounded intermediates (u alone is not rounded).
    failing = [name for name, out, ref, bound in zip(names, outs, refs, bounds(None))
               if accuracy.check(name, out, ref, bound) is not None]
    assert {"y", "dx", "dA", "dB"} & set(failing)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bf16_results_with_a_wrong_term_fail_the_bfloat16_bounds(shape):
    """y missing the last product of its sum over K, or with the LoRA term unscaled (s·u read as u,
    s != 1): both are caught."""
    arrays, h, s = bf16_layer(np.random.default_rng(1), *shape)
    x, W, A, B, bias, _ = arrays
    (y, u), _ = bf16_step_by_step(*arrays, s)
    y_ref, _ = reference.lora_forward(h[0], h[1], h[2], h[3], s, h[4])
    bound, _ = accuracy.forward_bounds(h[0], h[1], h[2], h[3], s, h[4], np.float32, "bfloat16")
    missing = y - np.outer(x[:, -1], W[:, -1])
    assert accuracy.check("y", missing, y_ref, bound) is not None
    unscaled = x @ W.T + bf16.round_to_bfloat16(u) @ B.T + bias
    assert accuracy.check("y", unscaled, y_ref, bound) is not None


def test_bounds_refuse_an_unknown_operand_precision():
    x = np.ones((2, 2))
    with pytest.raises(ValueError, match=r"operands must be None or 'bfloat16', got 'float16'"):
        accuracy.forward_bounds(x, x, x, x, 1.0, None, np.float32, "float16")
