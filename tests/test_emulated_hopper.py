"""The emulator's sm_90 instructions (csrc/emulation/hopper.h, run through hopper_probe.cpp) against
the PTX ISA and the CUDA driver API, with their formulas written out here in Python, apart from the
emulator's and from csrc/cuda/hopper.cuh, the way tests/test_emulated_mma.py checks mma.sync.

- TMA (`cp.async.bulk.tensor.2d`, a map from `cuTensorMapEncodeTiled`): every byte of the box as it
  lands in shared memory, with the 128-byte swizzle and without, boxes inside the tensor and
  hanging over its edges; the map's encoding rules of the driver API and the destination alignment
  of the ISA.
- `wgmma.mma_async.m64nNk16.f32.bf16.bf16`, both operands from shared memory through matrix
  descriptors: A and B stored by the ISA's canonical K-major 128B-swizzle layout, the four k16 slices
  of a 64-wide tile, d checked through the ISA's accumulator fragment layout; strides, and the
  descriptors the emulator refuses.

Where the swizzle comes from (the same for TMA and wgmma): the 128B swizzle permutes the 16-byte
chunks of every 128-byte line of shared memory by the line's place in a 1024-byte period, as a
function of the shared-memory address itself: bits 4-6 (the chunk) XOR bits 7-9 (the line),
CUTLASS's Swizzle<3, 4, 3>. The PTX ISA ("Matrix Descriptor Format") ties the pattern to addresses:
its repeating pattern starts on a 1024-byte boundary, and a matrix that does not start on one needs
the descriptor's base offset. For a tile of 128-byte rows starting on a 1024-byte boundary that is:
row r at r * 128, chunk c of the row at chunk c ^ (r % 8).
"""

import numpy as np
import pytest

from minilora.kernels import emulated
from minilora.kernels.bf16 import round_to_bfloat16

pytestmark = pytest.mark.emulated

LINE = 128   # bytes: one row of a 128B-swizzled tile, the swizzle's span
CHUNK = 16   # bytes: the unit the swizzle moves
ATOM = 1024  # bytes: 8 lines, the period of the swizzle (the "swizzle atom" of K-major 128B)
POISON = 0xFF  # a shared-memory byte nobody should read: 0xFFFF is a NaN in bf16


# ---- TMA: the box as the ISA lands it -----------------------------------------------------------------
def box_of(tensor, box, x, y):
    """The box (columns, rows) at column x, row y of `tensor`, element (r, c) = tensor[y + r, x + c],
    zero where that is outside the tensor (PTX ISA, "Tensors": out-of-bound elements of the bounding
    box are filled, with zeros for CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE; coordinates are signed)."""
    columns, rows = box
    out = np.zeros((rows, columns), tensor.dtype)
    r0, r1 = max(y, 0), min(y + rows, tensor.shape[0])
    c0, c1 = max(x, 0), min(x + columns, tensor.shape[1])
    if r0 < r1 and c0 < c1:
        out[r0 - y:r1 - y, c0 - x:c1 - x] = tensor[r0:r1, c0:c1]
    return out


def landed(tensor, box, x, y, swizzle_128, misalign=0):
    """The bytes the box leaves in shared memory that starts `misalign` bytes after a 1024-byte
    boundary. Without swizzle: row-major, row r at r * row bytes. With the 128B swizzle (rows of
    128 bytes here): row r at r * 128, its chunk c at chunk c ^ phase, the phase being the row's
    line in its 1024-byte period, (misalign / 128 + r) % 8: the XOR is of address bits, so a
    destination off a 1024-byte boundary shifts the pattern."""
    logical = box_of(tensor, box, x, y)
    plain = logical.view(np.uint8).reshape(logical.shape[0], -1)
    if not swizzle_128:
        return plain.ravel()
    assert plain.shape[1] == LINE, "the swizzled reference is written for 128-byte box rows"
    out = np.empty_like(plain).reshape(-1, LINE // CHUNK, CHUNK)
    chunks = plain.reshape(-1, LINE // CHUNK, CHUNK)
    for r in range(out.shape[0]):
        phase = (misalign // LINE + r) % 8
        for c in range(LINE // CHUNK):
            out[r, c ^ phase] = chunks[r, c]
    return out.ravel()


def bf16_bits_tensor(rng, rows, columns, padded):
    """Random bf16 bit patterns, rows x columns, the rows `padded` values apart (a column slice of a
    wider array, as a tile of a larger matrix is)."""
    wide = rng.integers(0, 2**16, (rows, padded), dtype=np.uint16)
    return wide[:, :columns]


# Boxes of 64 bf16 (128 bytes) a row in a 200 x 72 tensor: inside; at the right and bottom edges
# exactly; hanging over the right edge, the bottom, both, and the top-left corner (negative
# coordinates); wholly outside; a box whose rows are not a whole number of 8-row atoms.
BF16_BOXES = [((64, 64), 0, 0), ((64, 64), 8, 0), ((64, 64), 0, 136), ((64, 64), 40, 3),
              ((64, 64), 0, 170), ((64, 64), 40, 170), ((64, 16), -8, -3), ((64, 8), 72, 0),
              ((64, 13), 5, 190)]


@pytest.mark.parametrize("box, x, y", BF16_BOXES)
def test_tma_swizzled_bf16_box_lands_as_the_isa_says(emulator, rng, box, x, y):
    """Every byte of a CU_TENSOR_MAP_SWIZZLE_128B box of bf16 (128-byte rows), row stride padded to
    80 values (160 bytes), against `landed`: chunk c of row r at chunk c ^ (r % 8), zeros outside
    the tensor."""
    tensor = bf16_bits_tensor(rng, 200, 72, 80)
    shared = emulator.tma_box(tensor, box, x, y)
    np.testing.assert_array_equal(shared, landed(tensor, box, x, y, True))


@pytest.mark.parametrize("box, x, y", [((32, 24), 0, 0), ((32, 24), 0, 40), ((32, 24), 16, 10),
                                       ((32, 256), -4, -100)])
def test_tma_swizzled_float32_box_lands_as_the_isa_says(emulator, rng, box, x, y):
    """The same for float32 (32 values, 128 bytes, a row), from a column slice starting 4 values
    (16 bytes, the driver's alignment) into a 50 x 40 array."""
    tensor = rng.standard_normal((50, 40)).astype(np.float32)[:, 4:36]
    shared = emulator.tma_box(tensor, box, x, y)
    np.testing.assert_array_equal(shared, landed(tensor, box, x, y, True))


@pytest.mark.parametrize("dtype, box, x, y", [(np.uint16, (40, 10), 48, 195), (np.uint16, (72, 5), 0, 1),
                                              (np.uint16, (256, 2), -100, 198), (np.float32, (12, 7), 30, -2),
                                              (np.uint16, (64, 9), 3, 4)])
def test_tma_box_without_swizzle_is_row_major(emulator, rng, dtype, box, x, y):
    """CU_TENSOR_MAP_SWIZZLE_NONE: the box row-major, row r at r * (row bytes), rows of any multiple
    of 16 bytes (here 80, 144, 512, 48 and 128), zeros outside the tensor."""
    if dtype == np.uint16:
        tensor = bf16_bits_tensor(rng, 200, 72, 80)
    else:
        tensor = rng.standard_normal((50, 40)).astype(np.float32)
    shared = emulator.tma_box(tensor, box, x, y, swizzle_128=False)
    np.testing.assert_array_equal(shared, landed(tensor, box, x, y, False))
    if box == (64, 9):  # 128-byte rows: the 128B swizzle would move them, so the mode is honoured
        assert not np.array_equal(shared, emulator.tma_box(tensor, box, x, y))


def test_tma_swizzle_phase_follows_the_destination_address(emulator, rng):
    """cp.async.bulk.tensor needs a 128-byte aligned destination (PTX ISA); the 128B swizzle is of
    address bits 7-9, so a destination 128 bytes past a 1024-byte boundary lands row r with phase
    (r + 1) % 8, not r % 8: other bytes than at the boundary. 1024 bytes past one (a whole period)
    is the boundary again; without swizzle the bytes never depend on where they land."""
    tensor = bf16_bits_tensor(rng, 200, 72, 80)
    box, x, y = (64, 20), 4, 2
    at_boundary = emulator.tma_box(tensor, box, x, y)
    for misalign in (128, 384, 896):
        shared = emulator.tma_box(tensor, box, x, y, misalign=misalign)
        np.testing.assert_array_equal(shared, landed(tensor, box, x, y, True, misalign))
        assert not np.array_equal(shared, at_boundary)
    np.testing.assert_array_equal(emulator.tma_box(tensor, box, x, y, misalign=1024), at_boundary)
    plain = emulator.tma_box(tensor, box, x, y, swizzle_128=False)
    np.testing.assert_array_equal(emulator.tma_box(tensor, box, x, y, swizzle_128=False, misalign=128), plain)


def test_tma_destination_off_128_bytes_is_an_error(emulator, rng):
    """The shared-memory destination of cp.async.bulk.tensor must be 128-byte aligned (PTX ISA,
    cp.async.bulk.tensor); 64 or 16 bytes off is refused, with swizzle or without."""
    tensor = bf16_bits_tensor(rng, 20, 72, 80)
    for misalign, swizzle in ((64, True), (16, False), (1024 + 64, True)):
        with pytest.raises(emulated.EmulationError, match="not 128-byte aligned"):
            emulator.tma_box(tensor, (64, 8), 0, 0, swizzle_128=swizzle, misalign=misalign)


def refused(emulator, tensor, box, swizzle_128=True):
    with pytest.raises(ValueError, match=r"cuTensorMapEncodeTiled refused the map: CUresult 1$"):
        emulator.tma_box(tensor, box, 0, 0, swizzle_128=swizzle_128)


def test_tma_maps_the_driver_refuses(emulator, rng):
    """cuTensorMapEncodeTiled's rules (CUDA driver API, Tensor Map Object Management), each broken
    alone, give CUDA_ERROR_INVALID_VALUE (1); the same map with that one thing right is accepted:
    globalStrides a multiple of 16 bytes; boxDim non-zero and at most 256 each; boxDim[0] times the
    element size a multiple of 16 bytes (interleave NONE); with CU_TENSOR_MAP_SWIZZLE_128B the inner
    box dimension at most the 128-byte span; globalAddress 16-byte aligned."""
    wide = bf16_bits_tensor(rng, 300, 300, 304)
    ok = wide[:, :72]
    emulator.tma_box(ok, (64, 8), 0, 0)
    refused(emulator, bf16_bits_tensor(rng, 300, 72, 76), (64, 8))  # rows 152 bytes apart
    refused(emulator, ok, (64, 257))
    emulator.tma_box(ok, (64, 256), 0, 0)
    refused(emulator, wide, (264, 1), swizzle_128=False)
    emulator.tma_box(wide, (256, 1), 0, 0, swizzle_128=False)
    refused(emulator, ok, (0, 4), swizzle_128=False)
    refused(emulator, ok, (8, 0), swizzle_128=False)
    refused(emulator, ok, (12, 4), swizzle_128=False)  # 24-byte rows
    emulator.tma_box(ok, (16, 4), 0, 0, swizzle_128=False)
    refused(emulator, ok, (72, 8))  # 144-byte rows: past the 128B swizzle's span
    emulator.tma_box(ok, (72, 8), 0, 0, swizzle_128=False)
    refused(emulator, wide[:, 1:65], (64, 8))  # starts 2 bytes into a row
    emulator.tma_box(wide[:, 8:72], (64, 8), 0, 0)  # 16 bytes in: aligned


# ---- wgmma: operands in shared memory, accumulators in registers ----------------------------------------------
def descriptor(start, stride=ATOM, leading=16, swizzle=1, base_offset=0):
    """A wgmma matrix descriptor (PTX ISA, "Matrix Descriptor Format"): bits 0-13 encode(start
    address), 16-29 encode(leading dimension byte offset), 32-45 encode(stride dimension byte
    offset), 49-51 the base offset, 62-63 the swizzle mode (1: 128-byte), encode(x) =
    (x & 0x3FFFF) >> 4."""
    def encode(x):
        return (x & 0x3FFFF) >> 4
    return encode(start) | encode(leading) << 16 | encode(stride) << 32 | base_offset << 49 | swizzle << 62


def bf16_matrix(rng, rows, columns):
    return round_to_bfloat16(rng.standard_normal((rows, columns)).astype(np.float32))


def store_k_major(window, offset, matrix, stride=ATOM):
    """`matrix` (rows x 64 bf16 values, K along the row) into `window` at `offset` (on a 1024-byte
    boundary) in the canonical K-major 128B-swizzle layout (PTX ISA, "Shared Memory Matrix Layout":
    K-major 128B swizzle atoms of 8 rows of 8 x 16 bytes): row m at (m // 8) * stride + (m % 8) * 128,
    its 16-byte chunk c (values 8c .. 8c + 7) at chunk c ^ (m % 8)."""
    bits = (matrix.view(np.uint32) >> 16).astype(np.uint16)
    chunks = bits.view(np.uint8).reshape(len(matrix), LINE // CHUNK, CHUNK)
    for m in range(len(matrix)):
        line = offset + (m // 8) * stride + (m % 8) * LINE
        for c in range(LINE // CHUNK):
            place = line + (c ^ (m % 8)) * CHUNK
            window[place:place + CHUNK] = chunks[m, c]


def read_unswizzled(window, start, rows, stride=ATOM):
    """What a reader ignoring the swizzle would take for the rows x 16 slice at `start`: row m's 32
    bytes straight at start + (m // 8) * stride + (m % 8) * 128 (the wrong layout, to show it fails)."""
    out = np.empty((rows, 16), np.float32)
    for m in range(rows):
        at = start + (m // 8) * stride + (m % 8) * LINE
        bits = window[at:at + 32].view(np.uint16).astype(np.uint32) << 16
        out[m] = bits.view(np.float32)
    return out


def accumulator_layout(n):
    """(row, column) of D (64 x n) that thread t's register i holds in wgmma .m64nNk16 with .f32
    accumulators (PTX ISA, "Register Fragments", Figure "WGMMA .m64nNk16 register fragment layout for
    accumulator matrix D"; CUTLASS's CLayout_64xN, ((4,8,4),(2,2,N/8)):((128,1,16),(64,8,512)) in
    m + 64n): warp w = t // 32 has rows 16w .. 16w + 15; lane l's registers go 8 columns at a time,
    four a piece: (row l // 4, columns 2 (l % 4) + 0, 1), then the same 8 rows further."""
    t = np.arange(128)[:, None]
    i = np.arange(n // 2)[None, :]
    warp, lane = t // 32, t % 32
    row = 16 * warp + lane // 4 + 8 * ((i // 2) % 2)
    column = 8 * (i // 4) + 2 * (lane % 4) + i % 2
    return row, column


def registers(D):
    """D (64 x n) as the warpgroup's (128, n // 2) accumulator registers."""
    row, column = accumulator_layout(D.shape[1])
    return D[row, column]


def product_bound(A, B, C):
    """What float32 may lose summing c and 16 exact products (bf16 x bf16 fits float32): 17 terms,
    each addition off by at most 2^-24 of the partial sum rounded to nearest, twice that truncated
    (the hardware's order and rounding are not specified), so 2 * 17 * 2^-24 of the sum of |terms|."""
    return 34 * 2.0 ** -24 * (np.abs(C) + np.abs(A.astype(np.float64)) @ np.abs(B.astype(np.float64)))


def check_product(d, A, B, C, what=""):
    """d (registers) is c + A @ B through the accumulator layout, within product_bound."""
    reference = registers(C.astype(np.float64) + A.astype(np.float64) @ B.astype(np.float64))
    bound = registers(product_bound(A, B, C))
    assert np.isfinite(d).all(), f"{what}: NaN or inf in d (a read of poisoned shared memory)"
    worst = np.abs(d - reference) - bound
    assert (worst <= 0).all(), f"{what}: {int((worst > 0).sum())} registers off, worst by {worst.max()}"


def within(d, A, B, C):
    reference = registers(C.astype(np.float64) + A.astype(np.float64) @ B.astype(np.float64))
    return bool((np.abs(d - reference) <= registers(product_bound(A, B, C))).all())


def test_the_accumulator_layout_covers_d_once():
    """The reference's layout itself: every element of the 64 x n tile in exactly one register."""
    for n in (8, 64, 128, 256):
        row, column = accumulator_layout(n)
        seen = np.zeros((64, n), int)
        np.add.at(seen, (row, column), 1)
        assert (seen == 1).all(), n


@pytest.mark.parametrize("n", [8, 64, 128, 256])
def test_wgmma_reads_k_major_swizzled_tiles_as_the_isa_says(emulator, rng, n):
    """A (64 x 64) and B^T (n x 64) of random bf16, each in the canonical K-major 128B-swizzle layout
    at its own 1024-byte boundary, everything else poisoned; the k-th k16 slice (values 16k .. 16k +
    15 of every row) read by moving both start addresses on by 32k bytes, as CUTLASS and DeepGEMM
    do, the swizzle then applied to the moved addresses. d must be c + A[:, 16k:] @ B[16k:, :]
    through the accumulator layout, for all four k; and differ from what an unswizzled read of the
    same bytes would give."""
    A, Bt = bf16_matrix(rng, 64, 64), bf16_matrix(rng, n, 64)
    a_at, b_at = 3 * ATOM, 12 * ATOM
    window = np.full(b_at + n // 8 * ATOM + ATOM, POISON, np.uint8)
    store_k_major(window, a_at, A)
    store_k_major(window, b_at, Bt)
    for k in range(4):
        C = rng.standard_normal((64, n)).astype(np.float32)
        d = emulator.wgmma(window, descriptor(a_at + 32 * k), descriptor(b_at + 32 * k), n, registers(C))
        a, b = A[:, 16 * k:16 * k + 16], Bt[:, 16 * k:16 * k + 16].T
        check_product(d, a, b, C, f"n = {n}, k slice {k}")
        wrong_a = read_unswizzled(window, a_at + 32 * k, 64)
        wrong_b = read_unswizzled(window, b_at + 32 * k, n).T
        assert not within(d, wrong_a, wrong_b, C), f"k slice {k}: the unswizzled reading passes too"


def test_wgmma_uses_each_descriptors_stride_byte_offset(emulator, rng):
    """The stride dimension byte offset is the distance between 8-row atoms (PTX ISA, "Strides"): A's
    atoms 2048 bytes apart and B's 3072, the gaps poisoned, give the same d as packed atoms; the
    leading byte offset is "not used" for swizzled K-major layouts, so 0, 16 or 4096 there changes
    nothing."""
    n = 64
    A, Bt = bf16_matrix(rng, 64, 64), bf16_matrix(rng, n, 64)
    C = rng.standard_normal((64, n)).astype(np.float32)
    a_at, b_at = ATOM, 20 * ATOM
    window = np.full(b_at + n // 8 * 3 * ATOM, POISON, np.uint8)
    store_k_major(window, a_at, A, stride=2 * ATOM)
    store_k_major(window, b_at, Bt, stride=3 * ATOM)
    results = []
    for leading in (16, 0, 4096):
        d = emulator.wgmma(window, descriptor(a_at + 64, stride=2 * ATOM, leading=leading),
                           descriptor(b_at + 64, stride=3 * ATOM, leading=leading), n, registers(C))
        check_product(d, A[:, 32:48], Bt[:, 32:48].T, C, f"leading byte offset {leading}")
        results.append(d)
    for d in results[1:]:
        np.testing.assert_array_equal(d, results[0])
    # The same bytes read with the packed stride are wrong (and reach poison): the stride is read.
    d = emulator.wgmma(window, descriptor(a_at + 64), descriptor(b_at + 64, stride=3 * ATOM), n, registers(C))
    assert not np.isfinite(d).all()


def test_wgmma_descriptors_the_emulator_refuses(emulator, rng):
    """The emulator reads only 128B-swizzled K-major tiles with base offset 0, and says so rather than
    read something else: swizzle mode 0 (none), 2 (64-byte) or 3 (32-byte), in either descriptor; a
    start address with bits 7-9 set (1024 + 128: the pattern's start is not on a 1024-byte boundary,
    which the ISA says needs a non-zero base offset) with base offset 0; a non-zero base offset; a
    tile whose last atom reaches past the window."""
    n = 128
    window = np.zeros(10 * ATOM + n // 8 * ATOM, np.uint8)
    a, b = descriptor(0), descriptor(10 * ATOM)
    c = np.zeros((128, n // 2), np.float32)
    np.testing.assert_array_equal(emulator.wgmma(window, a, b, n, c), c)  # the window itself is fine
    for mode in (0, 2, 3):
        for pair in ((descriptor(0, swizzle=mode), b), (a, descriptor(10 * ATOM, swizzle=mode))):
            with pytest.raises(emulated.EmulationError, match="128-byte swizzle only"):
                emulator.wgmma(window, *pair, n, c)
    with pytest.raises(emulated.EmulationError, match="base offset"):
        emulator.wgmma(window, descriptor(ATOM + 128), b, n, c)
    with pytest.raises(emulated.EmulationError, match="base offset"):
        emulator.wgmma(window, descriptor(ATOM + 128, base_offset=1), b, n, c)
    with pytest.raises(emulated.EmulationError, match="past the end"):
        emulator.wgmma(window, a, descriptor(11 * ATOM), n, c)  # B's 16th atom one atom too far
    with pytest.raises(emulated.EmulationError, match="past the end"):
        emulator.wgmma(window[:ATOM * 8 - 16], a, descriptor(0), 8, c[:, :4])  # A's last row cut


@pytest.mark.parametrize("n", [12, 4, 264])
def test_wgmma_n_outside_the_isa_is_refused(emulator, n):
    """wgmma .m64nNk16 with bf16 operands exists for N = 8i, i = 1 .. 32 (PTX ISA, "Matrix Shape");
    the probe is documented to take exactly those n. Another n is no instruction at all."""
    window = np.zeros(64 * ATOM, np.uint8)
    with pytest.raises((ValueError, emulated.EmulationError)):
        emulator.wgmma(window, descriptor(0), descriptor(8 * ATOM), n, np.zeros((128, n // 2), np.float32))
