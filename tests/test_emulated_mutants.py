"""Proof that the emulated tests catch bugs: planted bugs ("mutants") in the kernel sources each fail.

Every mutant is a copy of one file of csrc/cuda/ (a .cu file or a .cuh header) with one line changed
the way a real bug changes it (a barrier removed, a bound off by one, a partial sum lost, a wrong
shared-memory index, ...). mutant() asserts the original line is really there, so a mutant cannot
silently stop applying when the kernels change. Each is compiled into its own emulator build (only
the files that the changed one reaches recompile) and run on a case that reaches the changed line;
the check of test_emulated.py must report it (for the nf4 rung, the check of test_emulated_nf4.py).
"""

import concurrent.futures
import os

import numpy as np
import pytest

from minilora.kernels import emulated, emulated_nf4

pytestmark = pytest.mark.emulated

SPLIT = (8, 40, 530, 4)  # K + r = 534: u and y are split in two and summed by the second pass
EDGES = (17, 33, 19, 5)  # no size a multiple of a tile
FUSED_EDGES = (130, 129, 19, 3)  # one row and one column past the fused float32 tile of 128
ONE_STEP = (5, 7, 3, 2)  # K + r = 5: one tile step, no stale values; only the NaN poison of shared
                         # memory shows a tile element that is never written
MMA_EDGES = (33, 40, 19, 5)  # tensor cores: rows past 32 (the second warp row), K + r = 24 (a half
                             # tile step), r = 5 (one live 16 x 8 piece of u's columns)

# id: (file, original text, mutated text, variant, shape, what a report must mention or None)
MUTANTS = {
    "tiled: first __syncthreads removed": (
        "lora_tiled.cuh", "    __syncthreads();  // the tiles are complete\n", "\n", "tiled", EDGES, None),
    "tiled: second __syncthreads removed": (
        "lora_tiled.cuh", "    __syncthreads();  // everyone is done reading", "    //", "tiled", EDGES, None),
    "fused: loop __syncthreads removed": (
        "lora_fused.cu", "    }\n    __syncthreads();\n  }\n", "    }\n  }\n", "fused", FUSED_EDGES, None),
    "tiled: tile elements outside the operand not zeroed": (
        "lora_tiled.cuh",
        "  tile[along_inner][along_outer] =\n"
        "      (outer < outer_end && inner < inner_end) ? op.at(outer, inner) : T(0);",
        "  if (outer < outer_end && inner < inner_end) tile[along_inner][along_outer] = op.at(outer, inner);",
        "tiled", ONE_STEP, None),
    "tiled: inner bound off by one": (
        "lora_tiled.cuh", "inner < inner_end) ? op.at", "inner <= inner_end) ? op.at", "tiled", EDGES, None),
    "fused: row bound off by one": (
        "lora_fused.cu", "if (row >= p.rows) continue;", "if (row > p.rows) continue;", "fused",
        FUSED_EDGES, "wrote outside y"),
    "naive: column bound off by one": (
        "lora_naive.cu", "col >= p.cols) return;", "col > p.cols) return;", "naive", EDGES, None),
    "split: the last partial sum not added": (
        "matmul.cu", "for (int z = 0; z < splits; ++z)", "for (int z = 0; z + 1 < splits; ++z)", "tiled",
        SPLIT, None),
    "split: every split writes the first slice of scratch": (
        "lora_tiled.cuh", "p.out[blockIdx.z * count + int64_t(row)", "p.out[int64_t(row)", "tiled", SPLIT,
        None),
    "backward workspace without room for v": (
        "lora_layer.cu", "return shape.M * shape.r + scratch;", "return scratch;", "tiled", SPLIT, None),
    "tiled: wrong shared-memory index": (
        "lora_tiled.cuh", "sum += left_tile[i][threadIdx.y]", "sum += left_tile[threadIdx.y][i]", "tiled",
        EDGES, None),
    "fused: wrong shared-memory index": (
        "lora_fused.cu", "&right[i][S::col_of(n, tx)]", "&right[i][S::col_of(n, ty)]", "fused",
        FUSED_EDGES, None),
    "fused: next tile stored over the one being read": (
        "lora_fused.cu", "stash<S::rows, LC, kWidth>(left_next, left_tiles[1 - now]);",
        "stash<S::rows, LC, kWidth>(left_next, left_tiles[now]);", "fused", FUSED_EDGES, None),
    "tiled: one thread returns before the barrier": (
        "lora_tiled.cuh", "  T sum = 0;\n  for (int inner0 = begin;",
        "  if (threadIdx.x == 3) return;\n  T sum = 0;\n  for (int inner0 = begin;", "tiled", EDGES,
        "barrier divergence"),
    "vectorized: loop __syncthreads removed": (
        "lora_fused.cu", "    }\n    __syncthreads();\n  }\n", "    }\n  }\n", "vectorized", FUSED_EDGES, None),
    "vectorized: the two tile buffers never swap": (
        "lora_fused.cu", "const int now = step % 2;", "const int now = 0;", "vectorized", FUSED_EDGES, None),
    "vectorized: a 16-byte run may end one past the inner bound": (
        "lora_fused.cu", "along_inner ? inner + kWidth - 1 : inner;", "along_inner ? inner + kWidth - 2 : inner;",
        "vectorized", FUSED_EDGES, None),
    "vectorized: a 16-byte run may straddle the seam of x and s·u": (
        "lora_fused.cu", "  if (!in_first && inner < op.split) return false;", "", "vectorized", FUSED_EDGES, None),
    "vectorized: the second array's scale not applied": (
        "lora_fused.cu", "for (int j = 0; j < kWidth; ++j) dst[j] *= op.second_scale;", "", "vectorized",
        FUSED_EDGES, None),
    "async: no wait for the copies": (
        "lora_async.cu", "    async_copy_wait<0>();  // this thread's", "    //", "async", FUSED_EDGES, None),
    "async: the wait leaves the newest group in flight": (
        "lora_async.cu", "async_copy_wait<0>();", "async_copy_wait<1>();", "async", FUSED_EDGES, None),
    "async: no barrier after the wait": (
        "lora_async.cu", "    __syncthreads();       // everyone's have", "    //", "async", FUSED_EDGES, None),
    "async: the next tile's copies never committed": (
        "lora_async.cu", "end, right_tiles[1 - now]);\n      async_copy_commit();",
        "end, right_tiles[1 - now]);", "async", FUSED_EDGES, None),
    "async: the scaled s·u copied from x's memory": (
        "lora_async.cu", "if (inside && inner < op.split) {", "if (inside) {", "async", FUSED_EDGES, None),
    "async: a 16-byte cp.async from an unaligned address": (
        "lora_async.cu", "inner < op.split &&\n          reinterpret_cast<uintptr_t>(src) % 16 == 0) {",
        "inner < op.split) {", "async", FUSED_EDGES, "misaligned"),
    "warp: every warp computes the first warp's tile": (
        "lora_async.cu", "Tl::template place<kVec>(threadIdx.x);", "Tl::template place<kVec>(threadIdx.x % 32);",
        "warp", FUSED_EDGES, None),
    "fused: a block of more than 1024 threads": (
        "lora_fused.cu", "dim3(kThreads), p,", "dim3(kThreads * 8), p,", "fused", FUSED_EDGES,
        "outside CUDA's limits"),
    "tf32x3: wrong fragment row of A": (
        "lora_mma.cu", "return tile[outer0 + e.row][k0 + e.col];", "return tile[outer0 + e.row % 8][k0 + e.col];",
        "tf32x3", MMA_EDGES, None),
    "tf32x3: a residual product missing": (
        "lora_mma.cu", "      mma_m16n8k8_tf32(small[mi][ni], a_lo[mi], b_hi[ni], small[mi][ni]);\n", "",
        "tf32x3", MMA_EDGES, None),
    "tf32x3: hi and lo swapped in a residual product (hi·lo twice, no lo·hi)": (
        "lora_mma.cu", "mma_m16n8k8_tf32(small[mi][ni], a_lo[mi], b_hi[ni], small[mi][ni]);",
        "mma_m16n8k8_tf32(small[mi][ni], a_hi[mi], b_lo[ni], small[mi][ni]);", "tf32x3", MMA_EDGES, None),
    "tf32x3: the small products' accumulator never added": (
        "lora_mma.cu", "? sum[mi][ni][i] + small[mi][ni][i]", "? sum[mi][ni][i]", "tf32x3", MMA_EDGES, None),
    "tf32x3: wrong k-step (every other 8 inner indices skipped)": (
        "lora_mma.cu", "k0 += kTf32Inner) {", "k0 += 2 * kTf32Inner) {", "tf32x3", MMA_EDGES, None),
    "tf32x3: one lane skips the mma": (
        "lora_mma.cu", "if (!w.live[mi][ni]) continue;", "if (!w.live[mi][ni] || lane == 31) continue;",
        "tf32x3", MMA_EDGES, "warp divergence"),
    "bf16: wrong fragment row of B": (
        "lora_mma.cu", "tile_value<kOf>(tile, start, k0, high));",
        "tile_value<kOf>(tile, start, k0, kOf == Fragment::B ? FragmentElement{low.row, high.col} : high));",
        "bf16", MMA_EDGES, None),
    "bf16: A's two halves swapped in a register": (
        "lora_mma.cu", "const FragmentElement low = element(lane, 2 * j), high = element(lane, 2 * j + 1);",
        "FragmentElement low = element(lane, 2 * j), high = element(lane, 2 * j + 1);\n"
        "      if (kOf == Fragment::A) { const FragmentElement first = low; low = high; high = first; }",
        "bf16", MMA_EDGES, None),
    "bf16: tiles advance 8 inner indices for a 16-deep instruction": (
        "lora_mma.cu", "inner0 += kMmaStep) {", "inner0 += kMmaStep / 2) {", "bf16", MMA_EDGES, None),
    # SPLIT: y's two chunks of 320 inner indices are 5 steps each, so the 4 stages are refilled.
    "wgmma: a stage refilled while its products may still read it (one group too few waited for)": (
        "lora_wgmma.cu", "wgmma_wait_group<1>();", "wgmma_wait_group<2>();", "wgmma", SPLIT,
        "not yet waited for"),
    "wgmma: no barrier between the other warpgroup's wait and the refill": (
        "lora_wgmma.cu", "    __syncthreads();        // ... and the other warpgroup's", "    //",
        "wgmma", SPLIT, "not yet waited for"),
    "wgmma: no wait for the stage's copies": (
        "lora_wgmma.cu", "    mbarrier_wait(&full[stage], (step / kStages) % 2);", "    //", "wgmma",
        SPLIT, None),
    "wgmma: the products' group never committed": (
        "lora_wgmma.cu", "    wgmma_commit_group();\n", "", "wgmma", SPLIT, None),
    "wgmma: the accumulators read before the last products are waited for": (
        "lora_wgmma.cu", "  wgmma_wait_group<0>();\n", "", "wgmma", EDGES, None),
    "wgmma: k slices 16 bytes apart instead of 32": (
        "lora_wgmma.cu", "k * kWgmmaInner * 2;", "k * kWgmmaInner;", "wgmma", EDGES, None),
    "wgmma: the right operand's box at the block's row": (
        "lora_wgmma.cu", "&p.right, inner0, col0,", "&p.right, inner0, row0,", "wgmma", FUSED_EDGES,
        None),
    "wgmma: the second warpgroup reads the first one's rows": (
        "lora_wgmma.cu", "left_tile(stage) + warpgroup * kWarpgroupRows", "left_tile(stage) + 0 * kWarpgroupRows",
        "wgmma", FUSED_EDGES, None),
    "wgmma: staging a column-contiguous operand without transposing it": (
        "lora_wgmma.cu", "const int o = C == Contiguous::Inner ? across : along;",
        "const int o = across;", "wgmma", EDGES, None),
    "wgmma: no wgmma.fence before the first product": (
        "lora_wgmma.cu", "    wgmma_fence();  // the accumulators", "    // the accumulators", "wgmma", EDGES,
        "before any wgmma.fence"),
    "wgmma: the barriers' initialisation not fenced for TMA": (
        "lora_wgmma.cu", "    fence_barrier_init();\n", "", "wgmma", EDGES, "fence.mbarrier_init"),
    "wgmma: dynamic shared memory past 48 KiB without raising the kernel's limit": (
        "lora_wgmma.cu", "wgmma_matmul_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kWgmmaSharedBytes",
        "wgmma_matmul_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 48 * 1024", "wgmma", EDGES,
        "dynamic shared memory"),
}


@pytest.fixture(scope="module")
def mutant_builds():
    """{id: library path}: every mutant compiled, several at once."""
    try:
        emulated.compiler()
    except emulated.EmulatorUnavailable as exc:
        pytest.skip(str(exc))
    replaces = {name: emulated.mutant(file, old, new) for name, (file, old, new, *_) in MUTANTS.items()}
    emulated.build()  # the unchanged objects first, so the mutant builds share them
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {name: pool.submit(emulated.build, None, replace, 1) for name, replace in replaces.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", MUTANTS)
def test_mutant_is_caught(mutant_builds, rng, name):
    file, old, new, variant, shape, mention = MUTANTS[name]
    emulator = emulated.load(replace=emulated.mutant(file, old, new))
    assert emulator.path == mutant_builds[name]
    failures = []
    for dtype in (np.float32,) if variant in emulated.FLOAT32_ONLY else (np.float32, np.float64):
        try:
            failures += emulated.check_layer(emulator, variant, dtype, *shape, rng, seed=5)
        except ValueError as exc:  # refused by the host code's own checks
            failures.append(str(exc))
    assert failures, f"the mutant {name!r} passed every check"
    if mention:
        assert any(mention in line for line in failures), "\n".join(failures)


# The nf4 rung's (lora_nf4.cu, and the tiled block it shares, lora_tiled.cuh), checked by
# emulated_nf4.check_layer with blocks of 7 weights.
# id: (file, original text, mutated text, shape)
NF4_MUTANTS = {
    "nf4: the nibbles of a byte in the wrong order": (
        "lora_nf4.cu", "(i & 1) ? (byte & 0x0F) : (byte >> 4)", "(i & 1) ? (byte >> 4) : (byte & 0x0F)", EDGES),
    "nf4: the absmax of the wrong block (the byte's index, not the weight's)": (
        "lora_nf4.cu", "p.w.absmax[i / p.w.block_size]", "p.w.absmax[(i >> 1) / p.w.block_size]", EDGES),
    "nf4: no barrier after the levels are copied into shared memory": (
        "lora_nf4.cu", "  __syncthreads();  // the levels are in place", "  //", ONE_STEP),
    "nf4: tiles complete barrier removed": (
        "lora_tiled.cuh", "    __syncthreads();  // the tiles are complete\n", "\n", EDGES),
}


@pytest.mark.parametrize("name", NF4_MUTANTS)
def test_nf4_mutant_is_caught(rng, name):
    try:
        emulated.compiler()
    except emulated.EmulatorUnavailable as exc:
        pytest.skip(str(exc))
    file, old, new, shape = NF4_MUTANTS[name]
    emulator = emulated.load(replace=emulated.mutant(file, old, new))
    failures = []
    for dtype in (np.float32, np.float64):
        failures += emulated_nf4.check_layer(emulator, dtype, *shape, rng, block_size=7, seed=5)
    assert failures, f"the mutant {name!r} passed every check"


def test_a_mutant_must_apply():
    with pytest.raises(ValueError, match=r"contains .* 0 times, expected exactly once"):
        emulated.mutant("lora_tiled.cu", "this line is not in the kernel", "")
