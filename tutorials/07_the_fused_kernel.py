# %% [markdown]
# # 07 · The fused kernel
#
# A LoRA layer computes y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ. Written as NumPy products, the LoRA term costs
# almost no arithmetic but several extra trips through memory over the whole M × N output. This
# tutorial shows how minilora's kernels fold the LoRA term into the base product so that those
# trips disappear, and how every fast version is checked against the NumPy reference:
#
# 1. the forward and backward formulas, with shapes;
# 2. the trick: one product over an *extended inner dimension*, [x, s·u]·[Wᵀ; Bᵀ], checked in NumPy;
# 3. FLOPs and memory traffic: why fusing matters even though the LoRA term is cheap;
# 4. the CUDA kernel ladder (naive, tiled, fused, vectorized, async, warp, and the tensor-core rungs
#    tf32x3, bf16 and wgmma) and what each rung buys;
# 5. every backend available here checked against the reference;
# 6. a small CPU timing table, and the recorded GPU benchmark (when there is one).
#
# **Time:** about 25 minutes; the code runs in seconds with `--fast`, a minute or two without.
#
# **How to run it:** `python tutorials/07_the_fused_kernel.py` (add `--fast` for small timing
# shapes), or open it as a notebook (VS Code "Run Cell", or Jupyter with `jupytext`; see
# `tutorials/README.md`). Figures go to `minilora_runs/figures/` (or `$MINILORA_FIGURES`).

# %%
import inspect
import json
import os
import re
import statistics
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import minilora
from minilora import backend, bench
from minilora.kernels import available_backends, backend_status, lora_backward, lora_forward, reference
from minilora.notebook import FAST, show

print(f"fast mode: {FAST}")
REPO = Path(minilora.__file__).resolve().parents[1]   # the source checkout, for csrc/ and benchmarks/

# %% [markdown]
# ## 1. The math
#
# Shapes: x is (M, K), M rows of input (tokens) with K features; the frozen weight W is (N, K);
# the adapter is A (r, K) and B (N, r); s = α/r is the scaling.
#
#     forward    u  = x·Aᵀ                      (M, r)
#                y  = x·Wᵀ + s·u·Bᵀ  (+ bias)    (M, N)
#
# The backward receives dy = dL/dy (M, N). W is frozen, so there is no dW. Deriving the backward
# is lab 4 (`minilora lab start lora`): if you mean to do it, do it before reading on, since the
# kernel needs its answer and this section states it. With v = dy·B (M, r):
#
#     backward   dx = dy·W + s·v·A              (M, K)    the layer below needs it
#                dA = s·vᵀ·x                    (r, K)
#                dB = s·dyᵀ·u                   (N, r)
#
# Each line is the chain rule through a product (tutorial 02), and minilora's tests check them
# numerically (tutorial 03). The forward keeps u, which the backward needs for dB. These six products are all
# that `minilora.kernels.reference` does; its forward reads:

# %%
print(inspect.getsource(reference.lora_forward))

# %% [markdown]
# ## 2. One product instead of two: the extended inner dimension
#
# Every element of y is a sum of products over the inner index k:
#
#     y[m, n] = Σ_k x[m, k]·W[n, k]  +  Σ_j s·u[m, j]·B[n, j]
#
# The second sum has the same form as the first, just over r more indices. So glue them: put s·u
# beside x, and B beside W, and y is *one* product over an inner dimension K + r long:
#
#     y = [x, s·u] · [W, B]ᵀ        (M, K + r) · (K + r, N)
#
# The same trick gives dx: dx = dy·W + s·v·A = [dy, s·v] · [W; A], inner dimension N + r.
# Let's check both numerically against the reference, in float64.

# %%
rng = np.random.default_rng(0)
M, K, N, r, s = 6, 10, 7, 3, 2.0
x, W = rng.standard_normal((M, K)), rng.standard_normal((N, K))
A, B = rng.standard_normal((r, K)), rng.standard_normal((N, r))
dy = rng.standard_normal((M, N))

y_ref, u = reference.lora_forward(x, W, A, B, s)
dx_ref, dA_ref, dB_ref = reference.lora_backward(dy, x, W, A, B, u, s)

left = np.concatenate([x, s * u], axis=1)        # (M, K + r)
right = np.concatenate([W, B], axis=1)           # (N, K + r)
y_glued = left @ right.T                         # one product, one accumulator per element

v = dy @ B
dx_glued = np.concatenate([dy, s * v], axis=1) @ np.concatenate([W, A], axis=0)   # (M, N+r)·(N+r, K)


def rel_err(out, ref):
    """‖out − ref‖ / ‖ref‖, the error measure every comparison in minilora uses."""
    return float(np.linalg.norm(np.asarray(out, np.float64) - ref) / np.linalg.norm(ref))


print(f"[x, s·u]·[W, B]ᵀ  vs  x·Wᵀ + s·u·Bᵀ:  relative difference {rel_err(y_glued, y_ref):.1e}")
print(f"[dy, s·v]·[W; A]  vs  dy·W + s·v·A:  relative difference {rel_err(dx_glued, dx_ref):.1e}")
assert rel_err(y_glued, y_ref) < 1e-12 and rel_err(dx_glued, dx_ref) < 1e-12

# %% [markdown]
# The picture below shows the shapes to scale for a layer with K = 64 and r = 8: the LoRA part
# (orange) is a thin strip at the end of each operand. A kernel that computes y one tile at a time
# walks the inner dimension and simply keeps going for r more steps before it writes the tile.

# %%
def draw_glued_product(ax, M, K, N, r):
    """[x | s·u] (M × (K+r)) times [W | B]ᵀ ((K+r) × N) equals y (M × N), drawn to scale."""
    gap = 12
    boxes = [  # (x0, y0, width, height, colour, label)
        (0, 0, K, M, "tab:blue", "x"), (K, 0, r, M, "tab:orange", "s·u"),
        (K + r + gap, M - K, N, K, "tab:blue", "Wᵀ"),           # rows 0..K-1, drawn top down
        (K + r + gap, M - K - r, N, r, "tab:orange", "Bᵀ"),     # the last r rows
        (K + r + N + 2 * gap, 0, N, M, "tab:green", "y"),
    ]
    for x0, y0, width, height, colour, label in boxes:
        ax.add_patch(Rectangle((x0, y0), width, height, facecolor=colour, alpha=0.35, edgecolor="black"))
        ax.text(x0 + width / 2, y0 + height / 2, label, ha="center", va="center", fontsize=9)
    ax.text(K + r + gap / 2, M / 2, "·", ha="center", va="center", fontsize=20)
    ax.text(K + r + N + 1.5 * gap, M / 2, "=", ha="center", va="center", fontsize=14)
    ax.text((K + r) / 2, M + 4, f"M × (K + r) = {M} × {K + r}", ha="center", fontsize=8)
    ax.text(K + r + gap + N / 2, M + 4, f"(K + r) × N = {K + r} × {N}", ha="center", fontsize=8)
    ax.set_xlim(-4, K + r + 2 * N + 2 * gap + 4)
    ax.set_ylim(-(K + r - M) - 4, M + 10)
    ax.set_aspect("equal")
    ax.axis("off")


fig = Figure(figsize=(9, 4))
ax = fig.subplots()
draw_glued_product(ax, M=24, K=64, N=40, r=8)
ax.set_title("y = [x, s·u]·[W, B]ᵀ: the LoRA term is the last r steps of one sum", fontsize=10)
fig.tight_layout()
show(fig, "07_extended_inner_dimension")

# %% [markdown]
# ## 3. What the LoRA term costs: arithmetic versus memory
#
# Count floating-point operations (a multiply-add is 2) with `minilora.bench.lora_flops` and
# `base_flops`, the same functions the GPU benchmark uses to compute TFLOP/s. The LoRA term adds
# r·(K + N) multiply-adds per row against the base product's K·N: the same ratio r·(d + k) / (d·k)
# as the parameter count of tutorial 01.
#
# Memory is another story. Written as the reference writes it, `x @ W.T + scaling * (u @ B.T)`
# makes three extra full-size arrays: u·Bᵀ is written (M·N), scaled (read M·N, write M·N), and
# added to x·Wᵀ (read 2·M·N, write M·N): 6·M·N extra numbers moved, on top of the least the base
# product must move (read x and W, write y: M·K + N·K + M·N).

# %%
shapes = [(2048, 4096, 4096, 8), (2048, 4096, 4096, 16), (2048, 4096, 4096, 64),
          (2048, 11008, 4096, 16), (128, 4096, 4096, 16)]
print(f"{'M':>5} {'N':>6} {'K':>5} {'r':>3} | {'extra FLOPs fwd':>15} {'fwd+bwd':>8} | "
      f"{'base traffic':>13} {'unfused extra':>14} {'extra':>7}")
for M_, N_, K_, r_ in shapes:
    extra_fwd = bench.lora_flops(M_, N_, K_, r_, backward=False) / bench.base_flops(M_, N_, K_, backward=False) - 1
    extra_all = bench.lora_flops(M_, N_, K_, r_, backward=True) / bench.base_flops(M_, N_, K_, backward=True) - 1
    base_traffic = M_ * K_ + N_ * K_ + M_ * N_   # numbers the base product must at least move
    unfused_extra = 6 * M_ * N_
    print(f"{M_:>5} {N_:>6} {K_:>5} {r_:>3} | {100 * extra_fwd:>14.2f}% {100 * extra_all:>7.2f}% | "
          f"{base_traffic / 1e6:>11.1f} M {unfused_extra / 1e6:>12.1f} M {100 * unfused_extra / base_traffic:>6.0f}%")
    assert abs(extra_fwd - r_ * (K_ + N_) / (K_ * N_)) < 1e-12   # the parameter ratio of tutorial 01

# %% [markdown]
# At r = 16 on a 4096 × 4096 layer the LoRA term is about 1% of the arithmetic. With many tokens
# (M = 2048) the unfused version more than doubles the numbers moved through memory; with few
# (M = 128) the weight W dominates the traffic and the extra share is smaller. On a GPU, where
# moving data is often the bottleneck, that is the difference between "LoRA costs nothing" and
# "LoRA costs a noticeable fraction". The glued product moves none of it: y is written once,
# complete. The backward's dx is glued the same way; the skinny
# products u, v, dA and dB (one side only r wide) are small.

# %% [markdown]
# ## 4. The kernel ladder
#
# The CUDA kernels in `csrc/cuda/` are written as a ladder, each rung a readable file with its own
# test against the reference, so you can see what each step buys. All of them use the glued inner
# dimension; they differ in how a product of two large matrices is organised on the GPU.
#
# | rung | file | idea |
# |---|---|---|
# | naive | `csrc/cuda/lora_naive.cu` | one thread per output element, looping over the whole inner dimension; obviously right, memory-bound |
# | tiled | `csrc/cuda/lora_tiled.cu` | a block of threads copies tiles of both operands into shared memory once and every thread reuses them |
# | fused | `csrc/cuda/lora_fused.cu` | register blocking: each thread owns a small block of outputs, reuses every value it reads many times, and double-buffers the tiles |
# | vectorized | `csrc/cuda/lora_fused.cu` | the fused kernel bringing its tiles from device memory 16 bytes (4 floats) per load where the operand allows, one element per load at its edges |
# | async | `csrc/cuda/lora_async.cu` | the fused blocking with its tiles copied straight into shared memory by `cp.async` (sm_80 and later; ordinary loads on a T4), double-buffered with one barrier per step |
# | warp | `csrc/cuda/lora_warp.cu` | the async kernel with block → warp → thread tiles: each warp owns an explicit 32 × 64 (or smaller) sub-tile, a third less shared-memory traffic per multiply-add; four tile configurations, one chosen per product (`minilora bench --sweep` times them all) |
# | tf32x3 | `csrc/cuda/lora_mma.cu` | tensor cores (`mma.sync`, a 16 × 8 × 8 product per warp-instruction): each float32 operand split into a TF32 high part and a TF32 residual, three products for float32 accuracy |
# | bf16 | `csrc/cuda/lora_mma.cu` | tensor cores on operands rounded to bfloat16, float32 accumulators: one 16 × 8 × 16 product per instruction, bfloat16 accuracy |
# | wgmma | `csrc/cuda/lora_wgmma.cu` | Hopper only (sm_90a): the wide products' operands staged as bf16, whole 128 × 64 tiles copied by TMA into a 4-stage ring, and 4 warps at once multiplying 64 × 16 by 16 × 128 straight from shared memory (`wgmma`) |
#
# `csrc/cuda/lora_layer.cu` writes the forward and backward once, as the six products above,
# for every rung; `csrc/cuda/matmul.cuh` holds the glued operands. On the CPU, `csrc/lora_cpu.cpp`
# is the `cpp` backend: the same glued operands as terms of one GEMM, the BLIS-style ladder of
# `csrc/cpu/` (packing, cache blocks, a register-blocked micro-kernel) with OpenMP threads.
#
# How much does each rung save? Count the values each multiply-add has to fetch. The tile sizes
# are read from the sources, so this table follows the code.

# %%
def source_constants(path, pattern):
    """The integers matched by `pattern` in a source file (None if the file is not there)."""
    if not path.exists():
        return None
    match = re.search(pattern, path.read_text())
    if match is None:
        raise ValueError(f"{path} no longer matches {pattern!r}: update this tutorial")
    return [int(g) for g in match.groups()]


cuda_dir = REPO / "csrc" / "cuda"
tiled = source_constants(cuda_dir / "lora_tiled.cuh", r"constexpr int kTile = (\d+);")
fused = source_constants(cuda_dir / "lora_fused.cu",
                         r"struct Blocking<float> \{\s*static constexpr int rows = (\d+), cols = (\d+), "
                         r"thread_rows = (\d+), thread_cols = (\d+);")
if tiled is None or fused is None:
    print(f"The CUDA sources are not in {cuda_dir} (minilora was installed without its source "
          "tree), so the ladder's tile sizes cannot be read here.")
else:
    (tile,), (block_rows, block_cols, thread_rows, thread_cols) = tiled, fused
    # Per multiply-add: values fetched from device memory, and values read from shared memory.
    ladder = [
        ("naive", "1 output", 2.0, 0.0),
        ("tiled", f"1 output, {tile}×{tile} tiles", 2 / tile, 2.0),
        ("fused", f"{thread_rows}×{thread_cols} outputs, {block_rows}×{block_cols} tiles",
         (block_rows + block_cols) / (block_rows * block_cols),
         (thread_rows + thread_cols) / (thread_rows * thread_cols)),
    ]
    print(f"{'rung':<6} {'each thread computes':<26} {'device-memory reads':>20} {'shared-memory reads':>20}")
    print(f"{'':<6} {'':<26} {'per multiply-add':>20} {'per multiply-add':>20}")
    for name, work, device_reads, shared_reads in ladder:
        print(f"{name:<6} {work:<26} {device_reads:>20.4f} {shared_reads:>20.2f}")
    assert ladder[0][2] > ladder[1][2] > ladder[2][2] and ladder[1][3] > ladder[2][3]

# %% [markdown]
# The naive rung fetches two numbers for every multiply-add, so the GPU's arithmetic units mostly
# wait for memory. Tiling makes each fetched value serve a whole tile row, cutting device-memory
# traffic by the tile size; the threads are then limited by shared memory (two reads per
# multiply-add). Register blocking makes each value read from shared memory serve several outputs
# held in registers, and each value fetched from device memory serve a whole large tile. The
# remaining details (16-byte loads, double buffering, splitting long skinny products) are
# explained at the top of each file.
#
# The vectorized rung changes none of those counts: it moves the same bytes, in a quarter of the
# load instructions (float32; half in float64). What that should buy is a prediction, **not yet
# measured on any GPU** (the rung has only been compiled by nvcc and run on the CPU emulator below):
# fewer load instructions to issue, and more bytes in flight per thread for each one, which helps
# where the loads' latency is not hidden behind arithmetic (few blocks per multiprocessor, a thin
# grid at small M); where the fused rung is limited by arithmetic and shared memory (large M) it
# should change little, a few percent at most. A load of 16 bytes needs a 16-byte aligned
# address and a run of 4 elements inside one array, so a row length like K = 3 (rows not aligned)
# or the seam between x and s·u falls back to single loads, and gains nothing there.
#
# The async and warp rungs are predictions too (compiled by nvcc, checked on the emulator, **not
# measured**): `cp.async` frees the registers that held a tile in flight and lets the copy overlap
# the multiply without the thread storing it itself; warp tiles cut the values a warp reads from
# shared memory per multiply-add from 144 per 2,048 (a warp of the fused rung covers 16 rows × 128
# columns) to 96 (a 32 × 64 warp tile). `benchmarks/results/NOTES-gpu-ladder.md` lists every
# rung's predicted effect, waiting for a GPU to measure it.
#
# The last two rungs hand the multiply-adds to tensor cores: one `mma.sync` instruction makes a
# warp of 32 threads compute a whole 16 × 8 block of C over 8 (TF32) or 16 (bf16) inner indices,
# each lane holding a few elements of each operand in registers at positions the PTX ISA fixes
# (`csrc/cuda/mma.cuh`). TF32 keeps 10 of float32's 23 mantissa bits, so one TF32 product is only
# good to about 1e-3; `tf32x3` splits each operand as x = hi + lo (hi = TF32 of x, lo = TF32 of
# the rest) and adds hi·hi + hi·lo + lo·hi, which is float32-accurate, in three tensor-core
# products where plain fp32 would need one slow one. `bf16` rounds every operand to bfloat16 and
# makes one product: bfloat16 accuracy, the fastest arithmetic. Both are predictions, **not yet
# measured on any GPU** (benchmarks/results/NOTES-tensor-cores.md): on the emulator, the warp's
# lanes meet at each `mma.sync` like threads at a barrier, and the last one computes the block.
#
# On an H100 or H200 `mma.sync` is no longer the fast path. `wgmma` has a warpgroup (4 warps) read
# both operands straight from shared memory, one instruction doing the work of 64 bf16 `mma.sync`
# (a 64 × 128 × 16 product), and runs asynchronously; the tensor memory accelerator (TMA) copies a whole tile per request, zeros
# past the operand's edge included, and signals an mbarrier when the bytes have landed. The `wgmma`
# rung stages each wide product's operands as bf16 first (TMA copies bytes, it does not convert
# them), then keeps 4 tiles in flight while the tensor cores work. The emulator runs that too: a
# copy lands when someone waits on its barrier, a product is made when `wgmma.wait_group` retires
# it, and a copy into a tile that an unretired product still reads fails the launch.

# %% [markdown]
# ## 5. Every backend against the reference
#
# `minilora.kernels.lora_forward` and `lora_backward` run on one of four backends: `numpy` (the
# reference), `cpp` (the C++ op), `cuda` (the kernels above, on CuPy arrays) and `cupy` (the
# reference's products through cuBLAS). Which ones work on this machine, and why not the others:

# %%
for name in ("numpy", "cpp", "cuda", "cupy"):
    usable, reason = backend_status(name)
    print(f"{name:<6} {'yes' if usable else 'no ':<4} {reason}")
backends = available_backends()
print("\navailable here:", ", ".join(backends))

# %% [markdown]
# Now run each available backend (and, for `cuda`, each rung of the ladder) on fresh random inputs,
# in float32 and float64, and compare every output with the float64 reference. The shapes are
# awkward on purpose (M = 1, K = 3, r = 1, odd sizes, a batch dimension), so that no kernel can pass
# by luck of a size that fits its tiles. The tolerance is the project's (`minilora.kernels.accuracy`):
# every element within the rounding bound γ(n)·Σ|terms| of its sum, n the number of roundings, so
# that cancellation in a sum cannot fail a correct kernel. The table shows the worst element's error
# as a fraction of its bound: a correct kernel stays below 1, a wrong one is off by whole terms.

# %%
from minilora.kernels import accuracy

check_shapes = [((1,), 3, 5, 1), ((7,), 33, 17, 3), ((2, 5), 40, 24, 4)]   # (leading dims of x, K, N, r)
runs = [(name, None) for name in backends if name != "cuda"]
if "cuda" in backends:
    from minilora.kernels import cuda as cuda_kernels
    # The bf16 rungs are held to bfloat16 bounds, not these (tests/test_emulated.py checks them);
    # the tensor-core rungs need compute capability 8.0 (wgmma 9.0) and take float32 only.
    runs += [("cuda", variant) for variant in cuda_kernels.VARIANTS
             if variant not in cuda_kernels.BFLOAT16_OPERANDS and cuda_kernels.variant_status(variant)[0]]


def worst_fraction_of_bound(out, ref, bound):
    """max |out − ref| / bound over the elements (inf for a NaN): below 1 is within rounding."""
    error = np.abs(np.asarray(out, np.float64).reshape(ref.shape) - ref)
    return float(np.max(np.where(np.isnan(error), np.inf, error / bound)))


print(f"{'backend':<14} {'dtype':<8} {'x shape':<12} {'K':>3} {'N':>3} {'r':>2} {'error/bound':>12}")
worst = {}
for lead, K_, N_, r_ in check_shapes:
    shapes_ = {"x": lead + (K_,), "W": (N_, K_), "A": (r_, K_), "B": (N_, r_), "dy": lead + (N_,)}
    inputs64 = {key: rng.standard_normal(shape) for key, shape in shapes_.items()}
    # The reference and the bounds work on 2-D arrays: every leading dim of x is one more row.
    x2, dy2 = inputs64["x"].reshape(-1, K_), inputs64["dy"].reshape(-1, N_)
    W_, A_, B_ = inputs64["W"], inputs64["A"], inputs64["B"]
    y64, u64 = reference.lora_forward(x2, W_, A_, B_, s)
    for dtype in ("float32", "float64"):
        # The backward gets the reference's u rounded to dtype, so its error is its own.
        u_in = u64.astype(dtype)
        refs = (y64, u64) + reference.lora_backward(dy2, x2, W_, A_, B_, u_in.astype(np.float64), s)
        bounds = (accuracy.forward_bounds(x2, W_, A_, B_, s, None, dtype) +
                  accuracy.backward_bounds(dy2, x2, W_, A_, B_, u_in, s, dtype))
        for name, variant in runs:
            if variant is not None and variant in cuda_kernels.FLOAT32_ONLY and dtype != "float32":
                continue
            device = "cuda" if name in ("cuda", "cupy") else "cpu"
            arrays = {k: backend.to_device(a.astype(dtype), device) for k, a in inputs64.items()}
            u_arg = backend.to_device(u_in.reshape(lead + (r_,)), device)
            options = {"backend": name} | ({"variant": variant} if variant else {})
            y, u_ = lora_forward(arrays["x"], arrays["W"], arrays["A"], arrays["B"], s, **options)
            dx, dA, dB = lora_backward(arrays["dy"], arrays["x"], arrays["W"], arrays["A"], arrays["B"],
                                       u_arg, s, **options)
            outputs = (y, u_, dx, dA, dB)
            assert all(out.dtype == np.dtype(dtype) for out in outputs)
            err = max(worst_fraction_of_bound(backend.to_numpy(out), ref, bound)
                      for out, ref, bound in zip(outputs, refs, bounds))
            label = name if variant is None else f"{name}/{variant}"
            print(f"{label:<14} {dtype:<8} {lead + (K_,)!s:<12} {K_:>3} {N_:>3} {r_:>2} {err:>12.2e}")
            assert err <= 1, f"{label} {dtype}: an element is {err:.2f}x further off than rounding allows"
            worst[label, dtype] = max(worst.get((label, dtype), 0.0), err)
print(f"\nall {len(worst)} backend/dtype pairs agree with the reference within rounding")

# %% [markdown]
# Every error is a small fraction of its bound: the bound assumes that every rounding of a sum goes
# the same way, while real roundings mostly cancel (float64 numpy is the reference itself, so 0).
# minilora's tests (`tests/test_kernels_*.py`) go further: they fill the outputs with NaN before a
# kernel runs, so an element a kernel forgets to write cannot pass, and they draw many more shapes.

# %% [markdown]
# ## 6. Timing
#
# ### On this CPU, live
#
# A small table: the NumPy reference against the C++ op, next to the base layer alone (x·Wᵀ,
# and dy·W in the backward) through NumPy. These numbers depend on the machine and on whatever
# else it is doing; they are printed, never asserted. The C++ op's GEMM comes close to a tuned
# BLAS, and the fusion saves it passes over memory, so it is about as fast as NumPy's products or
# faster at these shapes (benchmarks/bench_cpu_op.py times it properly). On a busy machine with
# few cores, a multi-threaded BLAS can
# instead stall for milliseconds waiting for its threads; if NumPy looks absurdly slow below,
# rerun with `OPENBLAS_NUM_THREADS=1` (or `OMP_NUM_THREADS=1`) and compare.

# %%
def median_ms(fn, repeats):
    """Median wall-clock milliseconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def timed_methods(x, W, A, B, dy, backends):
    """(label, forward, forward + backward) for the base layer and for the LoRA op on each backend."""
    methods = [("base (numpy)", lambda: x @ W.T, lambda: (x @ W.T, dy @ W))]
    for name in backends:
        def forward(name=name):
            return lora_forward(x, W, A, B, s, backend=name)

        def forward_backward(name=name):
            _, u_ = lora_forward(x, W, A, B, s, backend=name)
            return lora_backward(dy, x, W, A, B, u_, s, backend=name)
        methods.append((name, forward, forward_backward))
    return methods


timing_shapes = [(64, 256, 256, 8)] if FAST else [(128, 1024, 1024, 16), (512, 1024, 1024, 16)]
repeats = 3 if FAST else 7
cpu_backends = [name for name in ("numpy", "cpp") if name in backends]
print(f"{'M':>4} {'N':>5} {'K':>5} {'r':>3} {'method':<12} {'forward ms':>11} {'fwd+bwd ms':>11} {'GFLOP/s':>8}")
for M_, N_, K_, r_ in timing_shapes:
    arrays = [rng.standard_normal(shape).astype(np.float32)
              for shape in ((M_, K_), (N_, K_), (r_, K_), (N_, r_), (M_, N_))]   # x, W, A, B, dy
    for label, forward, forward_backward in timed_methods(*arrays, cpu_backends):
        flops = (bench.base_flops(M_, N_, K_, backward=True) if label.startswith("base")
                 else bench.lora_flops(M_, N_, K_, r_, backward=True))
        fwd_ms, both_ms = median_ms(forward, repeats), median_ms(forward_backward, repeats)
        print(f"{M_:>4} {N_:>5} {K_:>5} {r_:>3} {label:<12} {fwd_ms:>11.2f} {both_ms:>11.2f} "
              f"{flops / (both_ms * 1e-3) / 1e9:>8.1f}")

# %% [markdown]
# ### On a GPU: the recorded benchmark
#
# GPU numbers only mean something with the GPU's name beside them, so they are never typed into
# this tutorial: it reads whatever `minilora bench` has recorded in `benchmarks/results/*.json`
# and in the folders of `benchmarks/gpu_check.sh` runs kept there (`<gpu>-<date>/lora_bench.json`,
# and its bfloat16 run in `bf16/`), or in the folder named by `$MINILORA_BENCH_RESULTS`, and shows
# it. R_base is the time of the LoRA layer divided by the time of the base layer alone: the fused
# kernel's goal is R_base ≈ 1. The first table puts each kernel beside the cuBLAS baselines:
# `composed`, the layer as cuBLAS calls that accumulate in place (beta = 1), launched one by one,
# and `graph`, the same calls replayed as one CUDA graph, with no gap between them: the bar a
# hand-written kernel has to beat to be worth writing.

# %%
results_dir = Path(os.environ.get("MINILORA_BENCH_RESULTS") or REPO / "benchmarks" / "results")
recorded = []
for path in sorted(set(results_dir.glob("*.json")) | set(results_dir.glob("*/**/lora_bench.json"))):
    data = json.loads(path.read_text())
    if isinstance(data, dict) and {"meta", "results"} <= set(data):
        recorded.append((path, data))
    else:
        print(f"{path}: not a `minilora bench` result (no 'meta' and 'results'), skipped")

if not recorded:
    print(f"No recorded GPU results in {results_dir}.")
    print("This tutorial shows GPU timings only from a real run. To make one on a machine with an "
          "NVIDIA GPU:")
    print("    bash benchmarks/gpu_check.sh            # build, GPU tests, sanitizer, benchmark "
          "(writes lora_bench.json to $OUT or ./gpu_check_out)")
    print("    minilora bench --out benchmarks/results # the benchmark alone, written here")
    print("then keep the check's output folder as benchmarks/results/<gpu>-<date>/ (or the "
          "lora_bench.json alone, e.g. as benchmarks/results/h100.json) and rerun this cell.")

for path, data in recorded:
    meta, rows = data["meta"], data["results"]
    name = path.relative_to(results_dir)
    print(f"\n{name}: {meta['device']}, {meta['dtype']}")
    if meta.get("software"):
        print(bench.software_line(meta["software"]))
    print("forward + backward, device time, R_base = time ÷ base layer:")
    print(bench.headline(rows))
    print()
    print(bench.pivot_table(rows, "device"))

    fig = bench.results_figure(rows, meta)
    show(fig, "07_gpu_benchmark_" + re.sub(r"[^A-Za-z0-9]+", "_", str(name.with_suffix(""))))

# %% [markdown]
# ### Without a GPU: the kernels on the CPU emulator
#
# The CUDA kernels above only run on an NVIDIA GPU. The emulator (`csrc/emulation/`, driven by
# `minilora.kernels.emulated`) compiles the very same `.cu` files with g++ against a small
# stand-in for the CUDA runtime, and runs every CUDA thread on the CPU: each block in turn, each
# thread as a fiber that runs until it reaches `__syncthreads()`, where it waits for the rest of
# its block. It is thousands of times slower than a GPU and says nothing about speed, but it runs
# the kernels' real indexing, bounds, barriers and split sums: `pytest -m emulated` checks every
# rung this way on every test run.
#
# Here it runs the tiled, the fused and the warp rung on one small layer and records, for every
# element of y, which thread of which block wrote it.

# %%
from minilora.kernels import accuracy, emulated

try:
    emulator = emulated.load()   # compiles into build/emulation/ the first time (seconds), then cached
except emulated.EmulatorUnavailable as exc:
    emulator = None
    print(f"The emulator cannot be built here, so this section is skipped: {exc}")

from minilora import tile_sweep

traces = {}
if emulator is not None:
    emu_rng = np.random.default_rng(7)
    for variant, (M_, N_) in (("tiled", (40, 36)), ("fused", (128, 128)), ("warp", (128, 128))):
        layer, s_ = emulated.random_layer(emu_rng, M_, N_, 24, 4, np.float32)
        a32 = {key: value.astype(np.float32) for key, value in layer.items()}
        # The warp rung with its largest tiles pinned (its own rule picks smaller ones for so small a
        # y); the other rungs do not look at them.
        y, _, block, thread = tile_sweep.with_tiles("128x128x8/32x64/8x8", lambda _: emulator.forward_traced(
            a32["x"], a32["W"], a32["A"], a32["B"], s_, a32["bias"], variant))(0)
        y_ref, _ = reference.lora_forward(layer["x"], layer["W"], layer["A"], layer["B"], s_, layer["bias"])
        bound, _ = accuracy.forward_bounds(layer["x"], layer["W"], layer["A"], layer["B"], s_,
                                           layer["bias"], np.float32)
        problem = accuracy.check("y", y, y_ref, bound)
        assert problem is None, problem
        traces[variant] = (block, thread)
        print(f"{variant}: y ({M_} x {N_}) written by {len(np.unique(block))} block(s) of "
              f"{len(np.unique(thread))} threads; every element within float32 rounding of the reference")

# %% [markdown]
# In the tiled rung a block of 16 × 16 threads owns a 16 × 16 tile of y, one element per thread:
# the left panel colours each element by the index of the thread that wrote it, so every tile is
# the same gradient, and the tiles at the right and bottom edge are cut short (those threads
# compute but do not store). In the fused rung one block of 256 threads owns the whole 128 × 128
# tile and each thread an 8 × 8 block of it, in two runs of 4 rows 64 apart and two runs of 4
# columns 64 apart (that is what lets it read its values with 16-byte loads): the middle panel
# marks the 64 outputs of threads 0, 1 and 16. Threads 0 to 31 are one warp, so a warp of the
# fused rung owns 16 rows spread over the whole width of the tile. The warp rung groups its
# threads by warp instead: the right panel colours each output by the warp that wrote it, and each
# of the 8 warps owns one 32 × 64 rectangle, whose 32 + 64 rows and columns are all a warp reads
# from shared memory at each step (144 for the fused rung's warps).

# %%
if traces:
    fig = Figure(figsize=(15, 4.6))
    left, right, third = fig.subplots(1, 3)
    block, thread = traces["tiled"]
    image = left.imshow(thread, cmap="viridis", interpolation="nearest")
    left.set(title="tiled: thread index (0..255) in its block", xlabel="column n of y", ylabel="row m of y")
    for row0 in range(0, thread.shape[0], 16):
        for col0 in range(0, thread.shape[1], 16):
            left.add_patch(Rectangle((col0 - 0.5, row0 - 0.5), 16, 16, fill=False, edgecolor="white"))
    fig.colorbar(image, ax=left, shrink=0.8)

    from matplotlib.colors import ListedColormap

    _, thread = traces["fused"]
    colours = {0: "tab:red", 1: "tab:orange", 16: "tab:blue"}
    marked = np.zeros(thread.shape)
    for value, t in enumerate(colours, start=1):
        marked[thread == t] = value
    right.imshow(marked, cmap=ListedColormap(["0.92", *colours.values()]), interpolation="nearest")
    right.set(title="fused: the outputs of threads 0, 1, 16", xlabel="column n of y", ylabel="row m of y")
    right.legend(handles=[Rectangle((0, 0), 1, 1, color=c, label=f"thread {t}") for t, c in colours.items()],
                 loc="lower right", fontsize=8)
    for t in colours:
        rows_, cols_ = np.nonzero(thread == t)
        print(f"fused thread {t:>2}: rows {sorted(set(rows_.tolist()))}, columns {sorted(set(cols_.tolist()))}")

    _, thread = traces["warp"]
    image = third.imshow(thread // 32, cmap=ListedColormap([f"C{w}" for w in range(8)]), vmin=-0.5,
                         vmax=7.5, interpolation="nearest")
    third.set(title="warp: which warp (0..7) wrote it", xlabel="column n of y", ylabel="row m of y")
    fig.colorbar(image, ax=third, shrink=0.8, ticks=range(8))
    show(fig, "07_emulated_threads")

# %% [markdown]
# ## What you have seen
#
# - The LoRA term rides in the base product's accumulator as r extra steps of the inner loop:
#   y = [x, s·u]·[W, B]ᵀ and dx = [dy, s·v]·[W; A], equal to the unfused formulas.
# - It costs r·(K + N)/(K·N) more arithmetic (tutorial 01's ratio), but unfused it would move
#   several extra M × N arrays through memory; glued, it moves none.
# - The CUDA kernels climb from one thread per output to shared-memory tiles to register blocking,
#   each rung tested against the same NumPy reference, as every backend is here, and run on the
#   CPU emulator where there is no GPU, thread by thread.
#
# To check and time the CUDA path yourself on a GPU: `bash benchmarks/gpu_check.sh`.
