"""Run every CUDA kernel variant once, forward and backward, on small awkward shapes, and check the
results: the program compute-sanitizer watches in benchmarks/gpu_check.sh.

    compute-sanitizer --tool memcheck --error-exitcode 1 python3 benchmarks/sanitize_kernels.py
    compute-sanitizer --tool racecheck --error-exitcode 1 python3 benchmarks/sanitize_kernels.py --quick --float32

The shapes are not multiples of any tile and include the ones that make the kernels split a long
inner dimension into partial sums, so every kernel (naive, tiled, fused, vectorized, async, warp
with each of its tile configurations, the tensor-core tf32x3 and bf16 in float32 only, and the
second pass that adds partial sums) and every bounds check runs; the nf4 rung (W in NF4, whose tile
loader reads the packed bytes and absmaxes) on the --quick shapes, with blocks of 7 weights.
--only RUNG runs one rung, --skip RUNG,RUNG leaves rungs out (benchmarks/gpu_check.sh). Exits 1
if an output is wrong (NaN-poisoned outputs,
float64 NumPy reference, the rounding bound of minilora.kernels.accuracy), 0 otherwise; prints one
line per run.

CuPy's memory pool is switched off first (`cupy.cuda.set_allocator(None)`): the pool hands out pieces
of larger blocks, and an access a little past the end of an array would land inside the block, where
memcheck cannot see it. Without the pool every array is its own allocation.
"""

import argparse
import os
import sys

import numpy as np

# Every launch waits for its kernel, so an error is reported against the kernel that caused it.
os.environ.setdefault("MINILORA_CUDA_SYNC", "1")

from minilora import backend, tile_sweep  # noqa: E402
from minilora.kernels import cuda as cuda_kernels  # noqa: E402
from minilora.kernels import accuracy, bf16, nf4, nf4_check, reference  # noqa: E402

# (M, N, K, r)
SHAPES = [(1, 1, 1, 1), (3, 5, 7, 2), (17, 33, 19, 5), (130, 129, 131, 3), (8, 300, 1030, 4),
          (600, 20, 40, 3)]
# --quick: tile edges of every rung, a split of u and y, and a split of dA and dB.
QUICK_SHAPES = [(3, 5, 7, 2), (130, 129, 131, 3), (8, 300, 1030, 4), (600, 20, 40, 3)]
# The warp rung picks its smallest tiles on every shape above; this one runs with each of its
# configurations pinned (MINILORA_WARP_TILES), in float32.
WARP_TILES_SHAPE = (130, 129, 131, 3)

def check(variant, dtype, M, N, K, r, rng):
    cp = backend.xp_for("cuda")
    host = {name: rng.standard_normal(shape).astype(dtype) for name, shape in
            (("x", (M, K)), ("W", (N, K)), ("A", (r, K)), ("B", (N, r)), ("bias", (N,)), ("dy", (M, N)))}
    operands = cuda_kernels.operands_of(variant)  # the bf16 rung: bf16 inputs, bf16 bounds
    if operands == "bfloat16":
        host.update({name: bf16.round_to_bfloat16(a) for name, a in host.items() if name != "bias"})
    host = {name: a.astype(np.float64) for name, a in host.items()}
    dev = {name: cp.asarray(value.astype(dtype)) for name, value in host.items()}
    scaling = 1.5

    def nan(*shape):
        return cp.full(shape, np.nan, dtype=dtype)

    y, u = cuda_kernels.forward(dev["x"], dev["W"], dev["A"], dev["B"], scaling, dev["bias"],
                                variant=variant, out=(nan(M, N), nan(M, r)))
    grads = cuda_kernels.backward(dev["dy"], dev["x"], dev["W"], dev["A"], dev["B"], u, scaling,
                                  variant=variant, out=(nan(M, K), nan(r, K), nan(N, r)))
    cp.cuda.get_current_stream().synchronize()

    h = host
    u_used = backend.to_numpy(u).astype(np.float64)  # the backward's error measured on its own input
    refs = (reference.lora_forward(h["x"], h["W"], h["A"], h["B"], scaling, h["bias"])[:1] +
            reference.lora_backward(h["dy"], h["x"], h["W"], h["A"], h["B"], u_used, scaling))
    bounds = (accuracy.forward_bounds(h["x"], h["W"], h["A"], h["B"], scaling, h["bias"], dtype, operands)[:1] +
              accuracy.backward_bounds(h["dy"], h["x"], h["W"], h["A"], h["B"], u_used, scaling, dtype,
                                       operands))
    problems = [accuracy.check(name, backend.to_numpy(out), ref, bound) for name, out, ref, bound in
                zip(("y", "dx", "dA", "dB"), (y,) + tuple(grads), refs, bounds)]
    problems = [p for p in problems if p]  # a NaN is never within bounds: an unwritten element fails
    print(f"{variant:>10} {np.dtype(dtype).name} M={M} N={N} K={K} r={r}: "
          f"{'ok' if not problems else 'WRONG: ' + '; '.join(problems)}", flush=True)
    return not problems


def check_nf4(dtype, M, N, K, r, rng):
    """check() for the nf4 rung: W an NF4Tensor, the reference on W dequantized."""
    cp = backend.xp_for("cuda")
    a, s, expected = nf4_check.random_layer(rng, M, N, K, r, dtype, block_size=7)
    d = {name: value.to("cuda") if name == "W" else cp.asarray(value) for name, value in a.items()}

    def nan(*shape):
        return cp.full(shape, np.nan, dtype=dtype)

    y, u = cuda_kernels.forward(d["x"], d["W"], d["A"], d["B"], s, d["bias"], variant=nf4.VARIANT,
                                out=(nan(M, N), nan(M, r)))
    grads = cuda_kernels.backward(d["dy"], d["x"], d["W"], d["A"], d["B"], d["u"], s, variant=nf4.VARIANT,
                                  out=(nan(M, K), nan(r, K), nan(N, r)))
    cp.cuda.get_current_stream().synchronize()
    outputs = dict(zip(nf4_check.NAMES, (backend.to_numpy(o) for o in (y, u) + tuple(grads))))
    problems = nf4_check.failures(outputs, expected)
    print(f"{nf4.VARIANT:>10} {np.dtype(dtype).name} M={M} N={N} K={K} r={r}: "
          f"{'ok' if not problems else 'WRONG: ' + '; '.join(problems)}", flush=True)
    return not problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the runs and exit (no GPU needed)")
    parser.add_argument("--quick", action="store_true", help=f"only the shapes {QUICK_SHAPES}")
    parser.add_argument("--float32", action="store_true", help="float32 only (for the slowest tools)")
    parser.add_argument("--only", help="this rung alone (warp with its pinned tile configurations)")
    parser.add_argument("--skip", default="", help="rungs to leave out, comma-separated")
    args = parser.parse_args(argv)
    dtypes = (np.float32,) if args.float32 else (np.float32, np.float64)
    runs = [(variant, dtype, shape) for variant in cuda_kernels.VARIANTS
            for dtype in dtypes for shape in (QUICK_SHAPES if args.quick else SHAPES)
            if variant not in cuda_kernels.FLOAT32_ONLY or dtype == np.float32]
    runs += [(tile_sweep.PREFIX + tiles, np.float32, WARP_TILES_SHAPE) for tiles in _warp_tiles()]
    runs += [(nf4.VARIANT, dtype, shape) for dtype in dtypes for shape in QUICK_SHAPES]
    skipped = {name for name in args.skip.split(",") if name}
    runs = [run for run in runs if _rung_of(run[0]) not in skipped and args.only in (None, _rung_of(run[0]))]
    if args.list:
        for variant, dtype, (M, N, K, r) in runs:
            print(f"{variant:>10} {np.dtype(dtype).name} M={M} N={N} K={K} r={r}")
        print(f"sanitize_kernels: {len(runs)} runs")
        return 0
    usable, reason = cuda_kernels.status()
    if not usable:
        print(f"sanitize_kernels: the CUDA kernels cannot run here: {reason}")
        return 1
    for variant in cuda_kernels.VARIANTS:  # the tensor-core rungs need compute capability 8.0
        usable, why = cuda_kernels.variant_status(variant)
        if not usable:
            print(f"sanitize_kernels: not {variant}: {why}")
            runs = [run for run in runs if run[0] != variant]
    backend.xp_for("cuda").cuda.set_allocator(None)  # every array its own allocation (see above)
    rng = np.random.default_rng(0)
    results = [check_nf4(dtype, *shape, rng) if variant == nf4.VARIANT
               else _pinned(variant, lambda v: check(v, dtype, *shape, rng))
               for variant, dtype, shape in runs]
    print(f"sanitize_kernels: {sum(results)} of {len(results)} runs correct")
    return 0 if all(results) else 1


def _warp_tiles():
    """The warp rung's configurations, from minilora._C (none where it was built without CUDA)."""
    try:
        return cuda_kernels.warp_tiles()[0]
    except RuntimeError:
        return ()


def _rung_of(variant):
    """The rung a run belongs to: "warp" for a pinned "warp:<tiles>"."""
    return "warp" if tile_sweep.pinned_tiles(variant) is not None else variant


def _pinned(variant, run):
    """run(variant), or for "warp:<tiles>" run("warp") with those tiles pinned."""
    tiles = tile_sweep.pinned_tiles(variant)
    return run(variant) if tiles is None else tile_sweep.with_tiles(tiles, lambda _: run("warp"))(0)


if __name__ == "__main__":
    sys.exit(main())
