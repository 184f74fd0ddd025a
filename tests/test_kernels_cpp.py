"""The C++ fused LoRA op (csrc/lora_cpu.cpp through minilora.kernels.cpp) against the reference.

Inputs are fresh random numbers (never zeros); the reference runs in float64 on the very same
values, and the C++ result must agree to ‖out − ref‖ / ‖scale‖ <= 1e-12 (float64) or 1e-5
(float32). `scale` is the reference computed on the absolute values of the inputs, the size of the
terms each output sums. It equals ‖ref‖ up to a small factor, except where a short sum of large
terms nearly cancels (a lone u = x·Aᵀ with M = r = 1, say): there no order of summation gets
float32 within 1e-5 of the tiny result, so measuring against ‖ref‖ would fail a correct kernel.
Outputs handed to the compiled functions are filled with NaN first, so an element the loops forgot
to write fails. Every test of values runs on each instruction set this CPU runs (the baseline
included, forced through the `isa` argument or `cpp.use_isa`). Shapes straddle the GEMM's blocks:
tile heights 6, 12 and 24 rows, widths of one and two vectors (4 to 32 columns), inner blocks of
at most 64 to 512 positions (K + r crossing them), column blocks of the packed right operand, and
the size above which threads start (2²⁰ multiply-adds).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora import backend
from minilora.kernels import cpp, lora_backward, lora_forward, reference

EXTENSION, EXTENSION_REASON = backend.extension_status()
pytestmark = pytest.mark.skipif(EXTENSION is None, reason=f"the C++ op is not built ({EXTENSION_REASON});"
                                " tests/test_build.py fails for it")

TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]

ISAS = cpp.available_isas() if EXTENSION is not None else ()

# (M, K, N, r): all ones, K = 3, N = 1, odd N, r = 1, r = 256 (more than K); one past the tile
# heights (7, 13, 25 rows) and widths (N = 17, 33: one vector and one lane, two vectors and one);
# K + r across the inner blocks (K = 700, r = 9: several blocks whose last holds both terms);
# a shape above the size where threads start (2²⁰ multiply-adds), with ragged edges; a wide C,
# whose rows are split into blocks small enough for their rows of C to stay in L2 (N = 1100: three
# to seven blocks of rows, even on one thread); and a long inner dimension, whose packed right
# operand fills the L3 budget in more than one column block.
SHAPES = [
    (1, 1, 1, 1),
    (1, 3, 5, 1),
    (4, 3, 1, 2),
    (7, 5, 9, 3),
    (3, 17, 31, 1),
    (2, 16, 7, 256),
    (13, 70, 17, 5),
    (25, 65, 33, 6),
    (9, 700, 13, 9),
    (130, 40, 64, 4),
    (259, 300, 70, 5),
    (300, 40, 1100, 4),
    (2, 4100, 600, 3),
]


def relative_error(out, ref, scale):
    return np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(scale)


def reference_outputs(a, scaling):
    """y, u, dx, dA, dB from the float64 reference, by name; `a` holds 2-D float64 inputs."""
    y, u = reference.lora_forward(a["x"], a["W"], a["A"], a["B"], scaling, a["bias"])
    grads = reference.lora_backward(a["dy"], a["x"], a["W"], a["A"], a["B"], u, scaling)
    return dict(zip(("y", "u", "dx", "dA", "dB"), (y, u, *grads)))


class Problem:
    """Random inputs in `dtype`, and the float64 reference computed from exactly those values."""

    def __init__(self, rng, M, K, N, r, dtype, batch=None):
        lead = batch if batch is not None else (M,)
        shapes = {"x": lead + (K,), "W": (N, K), "A": (r, K), "B": (N, r), "bias": (N,),
                  "dy": lead + (N,)}
        self.arrays = {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
        self.scaling = float(rng.uniform(0.5, 4.0))
        self.dtype = dtype
        a = {name: v.astype(np.float64).reshape(-1, v.shape[-1]) for name, v in self.arrays.items()}
        a["bias"] = a["bias"].reshape(-1)
        self.ref = reference_outputs(a, self.scaling)
        self.scale = reference_outputs({name: np.abs(v) for name, v in a.items()}, self.scaling)

    def __getitem__(self, name):
        return self.arrays[name]

    def assert_close(self, name, out):
        assert out.dtype == self.dtype, f"{name} has dtype {out.dtype}, expected {self.dtype}"
        ref = self.ref[name]
        err = relative_error(out.reshape(ref.shape), ref, self.scale[name])
        assert err <= TOLERANCE[self.dtype], f"{name}: relative error {err:.3g}"


def poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_compiled_forward_and_backward_write_every_element(rng, shape, dtype, with_bias, isa):
    M, K, N, r = shape
    p = Problem(rng, M, K, N, r, dtype)
    y, u = poisoned((M, N), dtype), poisoned((M, r), dtype)
    bias = p["bias"] if with_bias else None
    EXTENSION.lora_forward_cpu(p["x"], p["W"], p["A"], p["B"], p.scaling, bias, y, u, isa=isa)
    if not with_bias:
        y = y + p["bias"]  # the reference includes the bias; add it after the kernel ran without it
    p.assert_close("y", y)
    p.assert_close("u", u)

    dx, dA, dB = poisoned((M, K), dtype), poisoned((r, K), dtype), poisoned((N, r), dtype)
    EXTENSION.lora_backward_cpu(p["dy"], p["x"], p["W"], p["A"], p["B"], u, p.scaling, dx, dA, dB,
                                isa=isa)
    p.assert_close("dx", dx)
    p.assert_close("dA", dA)
    p.assert_close("dB", dB)


@pytest.mark.parametrize("isa", ISAS)
def test_no_rows_gives_empty_outputs_and_zero_gradients(isa):
    # M = 0 (an empty batch) reaches only the compiled functions: the public entry points refuse it.
    K, N, r = 5, 4, 3
    x, dy = np.ones((0, K), np.float32), np.ones((0, N), np.float32)
    W, A, B = np.ones((N, K), np.float32), np.ones((r, K), np.float32), np.ones((N, r), np.float32)
    y, u = poisoned((0, N), np.float32), poisoned((0, r), np.float32)
    EXTENSION.lora_forward_cpu(x, W, A, B, 2.0, None, y, u, isa=isa)
    dx, dA, dB = poisoned((0, K), np.float32), poisoned((r, K), np.float32), poisoned((N, r), np.float32)
    EXTENSION.lora_backward_cpu(dy, x, W, A, B, u, 2.0, dx, dA, dB, isa=isa)
    assert (dA == 0).all() and (dB == 0).all()


def test_the_best_instruction_set_is_the_default_and_the_baseline_always_runs():
    assert ISAS[0] == EXTENSION.cpu_best_isa() and ISAS[-1] == "baseline"
    assert set(ISAS) <= set(cpp.ISAS)


@pytest.mark.parametrize("isa", ISAS)
def test_use_isa_and_the_environment_variable_choose_the_code(rng, monkeypatch, isa):
    p = Problem(rng, 30, 20, 40, 3, np.float32)
    monkeypatch.setenv("MINILORA_CPU_ISA", isa)
    assert cpp.isa() == isa
    y, u = cpp.forward(p["x"], p["W"], p["A"], p["B"], p.scaling, p["bias"])
    p.assert_close("y", y)
    monkeypatch.delenv("MINILORA_CPU_ISA")
    with cpp.use_isa(isa):
        assert cpp.isa() == isa
        dx, dA, dB = cpp.backward(p["dy"], p["x"], p["W"], p["A"], p["B"], u, p.scaling)
    assert cpp.isa() == ISAS[0]
    for name, out in (("dx", dx), ("dA", dA), ("dB", dB)):
        p.assert_close(name, out)


def test_unknown_or_unsupported_instruction_set_is_a_clear_error(rng, monkeypatch):
    p = small(rng)
    with pytest.raises(ValueError, match=r"use_isa\(name\) must be one of .*got 'sse9'"):
        with cpp.use_isa("sse9"):
            pass
    monkeypatch.setenv("MINILORA_CPU_ISA", "neon")
    with pytest.raises(ValueError, match=r"environment variable MINILORA_CPU_ISA must be one of"):
        cpp.forward(p["x"], p["W"], p["A"], p["B"], p.scaling)
    assert not cpp.status()[0] and "MINILORA_CPU_ISA" in cpp.status()[1]
    y, u = poisoned((4, 5), np.float32), poisoned((4, 2), np.float32)
    with pytest.raises(ValueError, match=r"isa must be 'baseline', 'avx2', 'avx512' or ''"):
        EXTENSION.lora_forward_cpu(p["x"], p["W"], p["A"], p["B"], 1.0, None, y, u, isa="neon")
    missing = [name for name in cpp.ISAS if name not in ISAS]
    if missing:  # an instruction set this CPU lacks is refused, never run
        with pytest.raises(ValueError, match=rf"isa={missing[0]}: this CPU cannot run it"):
            EXTENSION.lora_forward_cpu(p["x"], p["W"], p["A"], p["B"], 1.0, None, y, u, isa=missing[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_public_entry_points_with_batch_dims(rng, dtype):
    p = Problem(rng, None, 6, 5, 3, dtype, batch=(2, 3))
    y, u = lora_forward(p["x"], p["W"], p["A"], p["B"], p.scaling, p["bias"], backend="cpp")
    assert y.shape == (2, 3, 5) and u.shape == (2, 3, 3)
    p.assert_close("y", y)
    p.assert_close("u", u)
    dx, dA, dB = lora_backward(p["dy"], p["x"], p["W"], p["A"], p["B"], u, p.scaling, backend="cpp")
    assert dx.shape == (2, 3, 6)
    for name, out in (("dx", dx), ("dA", dA), ("dB", dB)):
        p.assert_close(name, out)


@given(M=st.integers(1, 40), K=st.integers(1, 80), N=st.integers(1, 80), r=st.integers(1, 20),
       dtype=st.sampled_from(DTYPES), with_bias=st.booleans(), seed=st.integers(0, 2**32 - 1),
       isa=st.sampled_from(ISAS or ("baseline",)))
def test_any_shape_matches_the_reference(M, K, N, r, dtype, with_bias, seed, isa):
    p = Problem(np.random.default_rng(seed), M, K, N, r, dtype)
    bias = p["bias"] if with_bias else None
    with cpp.use_isa(isa):
        y, u = cpp.forward(p["x"], p["W"], p["A"], p["B"], p.scaling, bias)
        grads = cpp.backward(p["dy"], p["x"], p["W"], p["A"], p["B"], u, p.scaling)
    p.assert_close("y", y if with_bias else y + p["bias"])
    p.assert_close("u", u)
    for name, out in zip(("dx", "dA", "dB"), grads):
        p.assert_close(name, out)


def test_strided_views_are_copied_by_the_public_entry_point(rng):
    p = Problem(rng, 5, 4, 6, 2, np.float64)
    W_view = np.asfortranarray(p["W"])  # same values, column-major
    x_view = np.repeat(p["x"], 2, axis=1)[:, ::2]  # same values, strided
    y, u = lora_forward(x_view, W_view, p["A"], p["B"], p.scaling, p["bias"], backend="cpp")
    p.assert_close("y", y)
    p.assert_close("u", u)


def test_inputs_are_left_unchanged(rng):
    p = Problem(rng, 9, 7, 5, 3, np.float32)
    before = {name: a.copy() for name, a in p.arrays.items()}
    y, u = cpp.forward(p["x"], p["W"], p["A"], p["B"], p.scaling, p["bias"])
    cpp.backward(p["dy"], p["x"], p["W"], p["A"], p["B"], u, p.scaling)
    for name, a in p.arrays.items():
        np.testing.assert_array_equal(a, before[name], err_msg=name)


# ---- bad inputs: clear errors before any compiled code runs -------------------------------------
def small(rng, dtype=np.float32):
    return Problem(rng, 4, 6, 5, 2, dtype)


def test_non_contiguous_input_to_the_compiled_entry_is_refused(rng):
    p = small(rng)
    with pytest.raises(ValueError, match=r"W must be C-contiguous.*strides"):
        cpp.forward(p["x"], np.asfortranarray(p["W"]), p["A"], p["B"], p.scaling)
    with pytest.raises(ValueError, match=r"dy must be C-contiguous"):
        _, u = cpp.forward(p["x"], p["W"], p["A"], p["B"], p.scaling)
        cpp.backward(np.asfortranarray(p["dy"]), p["x"], p["W"], p["A"], p["B"], u, p.scaling)
    # The compiled function itself never copies or casts: pybind11 refuses the call.
    y, u = poisoned((4, 5), np.float32), poisoned((4, 2), np.float32)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        EXTENSION.lora_forward_cpu(p["x"][:, ::2], p["W"][:, ::2], p["A"][:, ::2], p["B"], 1.0, None, y, u)


def test_compiled_entry_never_casts(rng):
    p = small(rng, np.float32)
    y, u = poisoned((4, 5), np.float64), poisoned((4, 2), np.float64)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        EXTENSION.lora_forward_cpu(p["x"], p["W"], p["A"], p["B"], 1.0, None, y, u)
    assert np.isnan(y).all()


def test_compiled_entry_checks_shapes_itself(rng):
    p = small(rng, np.float64)
    y, u = poisoned((4, 5), np.float64), poisoned((4, 3), np.float64)
    with pytest.raises(ValueError, match=r"u has shape \(4, 3\), expected \(4, 2\)"):
        EXTENSION.lora_forward_cpu(p["x"], p["W"], p["A"], p["B"], 1.0, None, y, u)


@pytest.mark.parametrize("call", ["cpp.forward", "lora_forward"])
def test_wrong_and_mixed_dtypes(rng, call):
    p = small(rng)
    forward = cpp.forward if call == "cpp.forward" else lora_forward
    with pytest.raises(TypeError, match=r"x has dtype int64, expected float32 or float64"):
        forward(np.ones((4, 6), dtype=np.int64), p["W"], p["A"], p["B"], p.scaling)
    with pytest.raises(TypeError, match=r"A has dtype float64 but x has float32"):
        forward(p["x"], p["W"], p["A"].astype(np.float64), p["B"], p.scaling)
    with pytest.raises(TypeError, match=r"x must be a NumPy or CuPy array, got list"):
        forward(p["x"].tolist(), p["W"], p["A"], p["B"], p.scaling)


def test_mismatched_shapes_name_the_argument(rng):
    p = small(rng)
    x, W, A, B, s = p["x"], p["W"], p["A"], p["B"], p.scaling
    expected = r"W has shape \(5, 5\), expected \(5, 6\) \(\(N, K\) with K = x.shape\[-1\] = 6\)"
    with pytest.raises(ValueError, match=expected):
        cpp.forward(x, W[:, :5].copy(), A, B, s)
    with pytest.raises(ValueError, match=r"B has shape \(5, 3\), expected \(5, 2\)"):
        cpp.forward(x, W, A, np.ones((5, 3), np.float32), s)
    with pytest.raises(ValueError, match=r"bias has shape \(4,\), expected \(5,\)"):
        lora_forward(x, W, A, B, s, bias=np.ones(4, np.float32))
    _, u = cpp.forward(x, W, A, B, s)
    with pytest.raises(ValueError, match=r"dy has shape \(4, 4\), expected \(4, 5\)"):
        cpp.backward(np.ones((4, 4), np.float32), x, W, A, B, u, s)
    with pytest.raises(ValueError, match=r"x must be 2-D \(M, K\) here, got shape \(1, 4, 6\)"):
        cpp.forward(x[None], W, A, B, s)


def test_rank_zero_is_a_clear_error(rng):
    p = small(rng)
    with pytest.raises(ValueError, match=r"LoRA rank r = A.shape\[0\] is 0; it must be at least 1"):
        cpp.forward(p["x"], p["W"], np.ones((0, 6), np.float32), np.ones((5, 0), np.float32), p.scaling)


def test_scaling_must_be_a_number(rng):
    p = small(rng)
    with pytest.raises(TypeError, match=r"scaling must be a real number, got str"):
        cpp.forward(p["x"], p["W"], p["A"], p["B"], "2")
