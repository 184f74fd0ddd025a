"""The emulator's tensor-core instructions (csrc/cuda/mma.cuh, csrc/emulation/warp.cpp) against the
PTX ISA, and why the tf32x3 rung needs three products.

The fragment layouts below are the ISA's formulas ("Matrix Fragments for mma.m16n8k8", .tf32, and
"Matrix Fragments for mma.m16n8k16", .bf16), written out here from the ISA text, independently of
mma.cuh: each lane's registers are built from known matrices with them, one warp runs the emulated
mma.sync, and D must be A·B + C at every lane's accumulator positions. The inputs are chosen so
that every sum is exact in float32, so D is compared bit for bit. The conversions are checked
against rounding computed from its definition in float64 (nearest, ties away from zero for TF32;
nearest, ties to even for bf16), and minilora.kernels.bf16 against the same.
"""

import numpy as np
import pytest

from minilora.kernels import bf16, emulated

pytestmark = pytest.mark.emulated


# ---- the PTX ISA's fragment layouts ------------------------------------------------------------------
def group_and_thread(lane):
    return lane >> 2, lane % 4  # groupID, threadID_in_group


def tf32_a(lane, i):
    """m16n8k8 .tf32, A (16 x 8): row = groupID for a0 and a2, groupID + 8 for a1 and a3;
    col = threadID_in_group for a0 and a1, threadID_in_group + 4 for a2 and a3."""
    g, t = group_and_thread(lane)
    return (g if i in (0, 2) else g + 8), (t if i in (0, 1) else t + 4)


def tf32_b(lane, i):
    """m16n8k8 .tf32, B (8 x 8): row = threadID_in_group for b0, threadID_in_group + 4 for b1;
    col = groupID."""
    g, t = group_and_thread(lane)
    return (t if i == 0 else t + 4), g


def bf16_a(lane, i):
    """m16n8k16 .bf16, A (16 x 16), a0..a7: row = groupID for 0 <= i < 2 or 4 <= i < 6, else
    groupID + 8; col = threadID_in_group * 2 + (i & 1) for i < 4, and 8 more for i >= 4."""
    g, t = group_and_thread(lane)
    return (g if i in (0, 1, 4, 5) else g + 8), t * 2 + (i & 1) + (8 if i >= 4 else 0)


def bf16_b(lane, i):
    """m16n8k16 .bf16, B (16 x 8), b0..b3: row = threadID_in_group * 2 + (i & 1) for i < 2, and 8
    more for i >= 2; col = groupID."""
    g, t = group_and_thread(lane)
    return t * 2 + (i & 1) + (8 if i >= 2 else 0), g


def accumulator(lane, i):
    """C and D (16 x 8 float32), c0..c3: row = groupID for c0 and c1, groupID + 8 for c2 and c3;
    col = threadID_in_group * 2 + (i & 1)."""
    g, t = group_and_thread(lane)
    return (g if i < 2 else g + 8), t * 2 + (i & 1)


def float_bits(values):
    return np.asarray(values, dtype=np.float32).view(np.uint32)


def lanes_of(matrix, layout, count, dtype=np.float32):
    """(32, count): element i of every lane's fragment of `matrix`, by `layout`."""
    return np.array([[matrix[layout(lane, i)] for i in range(count)] for lane in range(32)], dtype=dtype)


def accumulators(C):
    return lanes_of(C, accumulator, 4)


def exact_case(rng, inner, mantissa_bits):
    """A (16 x inner), B (inner x 8), C (16 x 8) whose products and sums are all exact in float32:
    A and B are small integers scaled to `mantissa_bits` significant bits."""
    top = 2 ** mantissa_bits
    A = rng.integers(-top, top, (16, inner)) / (top / 4)
    B = rng.integers(-top, top, (inner, 8)) / (top / 4)
    C = rng.integers(-2**12, 2**12, (16, 8)) / 64
    return A.astype(np.float32), B.astype(np.float32), C.astype(np.float32)


def test_tf32_mma_follows_the_isa_layout(emulator, rng):
    A, B, C = exact_case(rng, 8, 10)
    a = float_bits(lanes_of(A, tf32_a, 4))
    b = float_bits(lanes_of(B, tf32_b, 2))
    d = emulator.mma("tf32", a, b, accumulators(C))
    D = C.astype(np.float64) + A.astype(np.float64) @ B.astype(np.float64)
    np.testing.assert_array_equal(d, accumulators(D))


def test_bf16_mma_follows_the_isa_layout(emulator, rng):
    A, B, C = exact_case(rng, 16, 7)

    def packed(matrix, layout, registers):
        """Two bf16 values to a register, the lower-numbered element in the low 16 bits."""
        halves = float_bits(lanes_of(matrix, layout, 2 * registers)) >> 16
        return halves[:, 0::2] | (halves[:, 1::2] << 16)

    d = emulator.mma("bf16", packed(A, bf16_a, 4), packed(B, bf16_b, 2), accumulators(C))
    D = C.astype(np.float64) + A.astype(np.float64) @ B.astype(np.float64)
    np.testing.assert_array_equal(d, accumulators(D))


def test_a_lane_missing_from_the_mma_is_warp_divergence(emulator):
    zeros = np.zeros((32, 4), np.uint32)
    for at_barrier in (False, True):
        with pytest.raises(emulated.EmulationError, match=r"warp divergence in block \(0, 0, 0\): lanes of warp 0"):
            emulator.mma("tf32", zeros, zeros[:, :2], np.zeros((32, 4)), absent=5, absent_at_barrier=at_barrier)
    with pytest.raises(emulated.EmulationError, match=r"the warp is not whole \(the block has 20 threads\)"):
        emulator.mma("bf16", zeros, zeros[:, :2], np.zeros((32, 4)), threads=20)


# ---- the conversions -------------------------------------------------------------------------------------
def rounded(values, mantissa_bits, ties):
    """float32 values rounded to `mantissa_bits` stored mantissa bits, from the definition, in float64:
    the two neighbours on the grid of the value's binade, the nearer one, a tie away from zero
    (ties="away") or to the even neighbour (ties="even"). Normal numbers only (as tested here)."""
    x = np.abs(values.astype(np.float64))
    quantum = 2.0 ** (np.floor(np.log2(x)) - mantissa_bits)
    low = np.floor(x / quantum)
    rest = x / quantum - low
    up = rest > 0.5
    if ties == "away":
        up |= rest == 0.5
    else:
        up |= (rest == 0.5) & (low % 2 == 1)
    return (np.sign(values) * (low + up) * quantum).astype(np.float32)


def awkward_floats(rng):
    """Random normal floats, and exact ties for both formats (the dropped bits exactly one half)."""
    values = (rng.standard_normal(4000) * 10.0 ** rng.integers(-30, 30, 4000)).astype(np.float32)
    bits = float_bits(values)
    tf32_ties = ((bits & ~np.uint32(0x1FFF)) | np.uint32(0x1000)).view(np.float32)
    bf16_ties = ((bits & ~np.uint32(0xFFFF)) | np.uint32(0x8000)).view(np.float32)
    return np.concatenate([values, tf32_ties, bf16_ties, np.float32([1.0, -3.0, 65504.0])])


def test_to_tf32_rounds_to_nearest_ties_away(emulator, rng):
    values = awkward_floats(rng)
    assert (emulator.round("tf32", values) & 0x1FFF == 0).all()
    np.testing.assert_array_equal(emulator.round("tf32", values).view(np.float32),
                                  rounded(values, 10, "away"))


def test_to_bf16_rounds_to_nearest_ties_to_even(emulator, rng):
    values = awkward_floats(rng)
    expected = rounded(values, 7, "even")
    bits = emulator.round("bf16", values)
    np.testing.assert_array_equal((bits.astype(np.uint32) << 16).view(np.float32), expected)
    np.testing.assert_array_equal(bf16.round_to_bfloat16(values), expected)
    np.testing.assert_array_equal(bf16.to_bfloat16(values), bits.astype(np.uint16))


def test_conversions_keep_nan_and_inf(emulator):
    """±inf stay, NaN stays NaN; 3.4e38 is a TF32 number's neighbour but past bf16's largest
    (3.3895e38) by more than half a step, so it becomes inf in bf16."""
    special = np.float32([np.inf, -np.inf, np.nan, 3.4e38])
    tf32 = emulator.round("tf32", special).view(np.float32)
    assert tf32[0] == np.inf and tf32[1] == -np.inf and np.isnan(tf32[2])
    assert np.isfinite(tf32[3]) and abs(tf32[3] / np.float32(3.4e38) - 1) < 2.0 ** -11
    for out in ((emulator.round("bf16", special) << 16).view(np.float32), bf16.round_to_bfloat16(special)):
        assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2]) and out[3] == np.inf


def test_bfloat16_helpers_refuse_other_dtypes():
    with pytest.raises(TypeError, match=r"to_bfloat16 takes a float32 array, got float64"):
        bf16.to_bfloat16(np.ones(3))
    with pytest.raises(TypeError, match=r"from_bfloat16 takes a uint16 array of bfloat16 bits, got int32"):
        bf16.from_bfloat16(np.ones(3, np.int32))


# ---- why the tf32x3 rung makes three products ---------------------------------------------------------------
ONE_PRODUCT = ("lora_mma.cu",
               "      mma_m16n8k8_tf32(small[mi][ni], a_hi[mi], b_lo[ni], small[mi][ni]);\n"
               "      mma_m16n8k8_tf32(small[mi][ni], a_lo[mi], b_hi[ni], small[mi][ni]);\n", "")


def test_one_tf32_product_fails_the_float32_bound_that_three_pass(emulator):
    """The tf32x3 kernel with only its hi·hi product (plain TF32) is off by about 2^-11 of the terms,
    some hundred times float32's bound; the same inputs pass with all three products."""
    one = emulated.load(replace=emulated.mutant(*ONE_PRODUCT))
    shape = (17, 33, 19, 5)
    three_failures = emulated.check_layer(emulator, "tf32x3", np.float32, *shape, np.random.default_rng(1))
    one_failures = emulated.check_layer(one, "tf32x3", np.float32, *shape, np.random.default_rng(1))
    assert three_failures == []
    assert any(line.startswith("in order: y:") for line in one_failures), one_failures


def test_tf32x3_splits_values_next_to_float32_max_without_overflow(emulator, rng):
    """FLT_MAX and its neighbours round to infinity as TF32 (to nearest), which would make lo = x - hi
    -inf and y NaN; the split rounds those toward zero instead, so a finite x·Wᵀ (x near 3.4e38, W
    and A near 1e-30, not subnormal) comes out finite and to float32 accuracy."""
    M, K, N, r = 16, 12, 9, 2
    biggest = np.finfo(np.float32).max
    x = (biggest * rng.uniform(0.5, 1.0, (M, K))).astype(np.float32)
    x[0, :4] = [biggest, np.nextafter(biggest, 0), -biggest, np.float32(3.40279e38)]
    assert np.isinf(emulator.round("tf32", x[0, :4]).view(np.float32)).all()  # the case at hand
    W = (rng.standard_normal((N, K)) * 1e-30).astype(np.float32)
    A = (rng.standard_normal((r, K)) * 1e-30).astype(np.float32)
    B = rng.standard_normal((N, r)).astype(np.float32)
    y, u = emulator.forward(x, W, A, B, 0.5, None, "tf32x3")
    x64, W64, A64, B64 = (a.astype(np.float64) for a in (x, W, A, B))
    u_ref = x64 @ A64.T
    y_ref = x64 @ W64.T + 0.5 * u_ref @ B64.T
    scale = np.abs(x64) @ np.abs(W64).T + 0.5 * (np.abs(x64) @ np.abs(A64).T) @ np.abs(B64).T
    assert np.isfinite(y).all() and np.isfinite(u).all()
    assert np.abs(y - y_ref).max() <= 1e-5 * scale.max()
    assert np.abs(u - u_ref).max() <= 1e-5 * (np.abs(x64) @ np.abs(A64).T).max()


def test_bf16_rung_rounds_every_operand_it_reads(emulator, rng):
    """float32 inputs give the bits that their bf16 roundings give (the kernel rounds x, W, A, B, dy
    and u as it stages them, to nearest even like round_to_bfloat16), and the outputs differ from the
    tf32x3 rung's, which does not round them."""
    h, s = emulated.random_layer(rng, 33, 20, 40, 4, np.float32)
    raw = {name: a.astype(np.float32) for name, a in h.items()}
    rounded_inputs = {name: (a if name == "bias" else bf16.round_to_bfloat16(a)) for name, a in raw.items()}
    u = (raw["x"] @ raw["A"].T).astype(np.float32)
    outputs = []
    for d, variant in ((raw, "bf16"), (rounded_inputs, "bf16"), (raw, "tf32x3")):
        y, u_out = emulator.forward(d["x"], d["W"], d["A"], d["B"], s, d["bias"], variant)
        outputs.append((y, u_out) + emulator.backward(d["dy"], d["x"], d["W"], d["A"], d["B"], u, s, variant))
    for name, from_raw, from_rounded, tf32x3 in zip(("y", "u", "dx", "dA", "dB"), *outputs):
        assert np.array_equal(from_raw.view(np.uint32), from_rounded.view(np.uint32)), name
        assert not np.array_equal(from_raw, tf32x3), name


def emulator_of_capability(major, minor):
    """The emulator built to report another compute capability than its own 9.0."""
    text = (emulated.CSRC / "emulation" / "warp.cpp").read_text()
    old = "cudaDevAttrComputeCapabilityMajor ? 9 : 0;"
    assert text.count(old) == 1
    new = f"cudaDevAttrComputeCapabilityMajor ? {major} : {minor};"
    return emulated.load(replace={"warp.cpp": text.replace(old, new)})


def test_a_gpu_without_mma_for_tf32_and_bf16_is_refused_before_any_launch(rng):
    """Built to report compute capability 7.5 (a T4), the host code of csrc/cuda refuses every
    tensor-core rung with the reason and launches nothing, while the fp32 rungs still run."""
    t4 = emulator_of_capability(7, 5)
    h, s = emulated.random_layer(rng, 5, 7, 3, 2, np.float32)
    d = {name: a.astype(np.float32) for name, a in h.items()}
    before = t4.launches()
    for variant in ("tf32x3", "bf16"):
        with pytest.raises(ValueError, match=rf"variant '{variant}' needs mma.sync on TF32 / bf16, compute "
                                             r"capability 8.0 or newer; GPU 0 has 7.5"):
            t4.forward(d["x"], d["W"], d["A"], d["B"], s, variant=variant)
    with pytest.raises(ValueError, match=r"variant 'wgmma' needs wgmma and TMA, compute capability 9.0 "
                                         r"\(an H100 or H200\); GPU 0 has 7.5$"):
        t4.forward(d["x"], d["W"], d["A"], d["B"], s, variant="wgmma")
    assert t4.launches() == before
    assert emulated.check_layer(t4, "fused", np.float32, 5, 7, 3, 2, rng) == []


def test_wgmma_is_refused_on_an_a100_where_the_mma_rungs_run(rng):
    """wgmma and TMA are sm_90a's, so on 8.0 (an A100) the wgmma rung is refused before any launch,
    naming the bf16 rung that does the same arithmetic there; and on a GPU newer than 9.0 too (the
    "a" features are not carried forward)."""
    for major, minor in ((8, 0), (10, 0)):
        gpu = emulator_of_capability(major, minor)
        h, s = emulated.random_layer(rng, 5, 7, 3, 2, np.float32)
        d = {name: a.astype(np.float32) for name, a in h.items()}
        before = gpu.launches()
        with pytest.raises(ValueError, match=rf"variant 'wgmma' needs wgmma and TMA, compute capability 9.0 "
                                             rf"\(an H100 or H200\); GPU 0 has {major}.{minor} \(the bf16 rung"):
            gpu.backward(d["dy"], d["x"], d["W"], d["A"], d["B"], d["x"][:, :2].copy(), s, variant="wgmma")
        assert gpu.launches() == before
        assert emulated.check_layer(gpu, "bf16", np.float32, 5, 7, 3, 2, rng) == []
