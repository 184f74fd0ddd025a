"""The C++ fused LoRA op against the NumPy reference on the CPU: forward + backward, per shape.

    python benchmarks/bench_cpu_op.py                       # the shapes below, float32, every ISA
    python benchmarks/bench_cpu_op.py --dtype float64 --repeats 11
    python benchmarks/bench_cpu_op.py --shapes 2048x128x128x8 --isas avx512
    python benchmarks/bench_cpu_op.py --rule                # and the sizes behind the default choice
    python benchmarks/bench_cpu_op.py --nf4 --rule          # W in NF4 (QLoRA's 4-bit base)

For every shape (M × K × N, rank r) it times `minilora.kernels.lora_forward` followed by
`lora_backward` with backend "numpy" (three and five BLAS products through NumPy) and with
backend "cpp" on each instruction set this CPU runs (the fused op; see csrc/cpu/). The methods take
turns, one run of each per round, so a neighbour's load that comes and goes falls on all of them
alike; each time is the median over the rounds. Columns: milliseconds, GFLOP/s (the LoRA layer's
multiply-adds × 2 ÷ time) and the time ÷ the NumPy time (below 1: the C++ op is faster).

The two take turns in one process, and OpenBLAS (NumPy's BLAS) keeps its threads spinning for up
to about 0.1 s after its last product (2^28 cycles), on the cores the C++ op's threads need next:
a cost of taking turns, not of either op (a program runs one backend or the other, and a minilora
training step runs all its products on one pool of threads: kernels/compiled.py). So each timed
call waits --settle seconds (default 0.25) and then makes one untimed call of the same method
before it starts: every method is timed as if it ran alone, in a loop, NumPy with its threads
spinning between its own products, the C++ op with its threads awake. (Without that call, the
first parallel region after the sleep waited for the idle second core of this VM to wake up: 1 to
12 ms, more than a whole call at the small shapes. Telling OpenBLAS to sleep at once,
OPENBLAS_THREAD_TIMEOUT=1, is no fix: waking its threads for every product made NumPy 2-10x
slower on this 2-core VM.)

With --rule it also times the grid of shapes behind the default backend, small and large, and
marks the ones the default sends to the C++ op: minilora/kernels/dispatch.py (cpp_pays_off) sends
NumPy arrays there only at sizes where it was at least as fast (the README's section on backends).

With --nf4, W is stored in NF4 (block 64, double quantization, minilora.quant): "numpy" is then the
reference, which dequantizes all of W on each call, and "cpp" the C++ op, which dequantizes W's
panels as it packs them; the default is minilora/kernels/nf4.py's (its own cpp_pays_off).
"""

import argparse
import contextlib
import statistics
import sys
import time

import numpy as np

import minilora
from minilora import bench
from minilora.kernels import cpp, default_backend, lora_backward, lora_forward, nf4
from minilora.quant import nf4_quantize

# The shapes of the table in the README (M × K × N, r).
SHAPES = [(2048, 128, 128, 8), (2048, 256, 256, 8), (4096, 512, 512, 16), (512, 1024, 1024, 16)]
# The shapes behind the size rule (minilora/kernels/dispatch.py, cpp_pays_off): one row up to
# 4096 rows through layers of 16 to 256 features, and few rows through a wide layer.
RULE_SHAPES = ([(M, D, D, 8) for D in (16, 32, 64, 128, 256) for M in (1, 16, 64, 128, 256, 1024, 4096)]
               + [(M, 1024, 1024, 8) for M in (16, 64, 128, 256, 512)])


def make_problem(rng, M, K, N, r, dtype, quantized=False):
    arrays = dict(x=(M, K), W=(N, K), A=(r, K), B=(N, r), bias=(N,), dy=(M, N))
    p = {name: rng.standard_normal(shape).astype(dtype) for name, shape in arrays.items()}
    if quantized:
        p["W"] = nf4_quantize(p["W"], 64, double_quant=True)
    return p


def step_for(p, backend, isa=None):
    """One forward + backward on `backend` (and, for "cpp", instruction set `isa`)."""
    def step():
        with cpp.use_isa(isa) if isa else contextlib.nullcontext():
            _, u = lora_forward(p["x"], p["W"], p["A"], p["B"], 2.0, p["bias"], backend=backend)
            lora_backward(p["dy"], p["x"], p["W"], p["A"], p["B"], u, 2.0, backend=backend)
    return step


def alternated_medians(steps, repeats, warmup=2, settle=0.0):
    """Median seconds per call of each function in `steps`, calling them in turn `repeats` times,
    each after `settle` seconds of sleep and one untimed call (the module docstring says why)."""
    for step in steps:
        for _ in range(warmup):
            step()
    times = [[] for _ in steps]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            if settle:
                time.sleep(settle)
                step()  # wakes the cores and this method's threads (the module docstring says why)
            start = time.perf_counter()
            step()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def inner_repeats(seconds_per_call, target=0.02):
    return max(1, int(target / max(seconds_per_call, 1e-7)))


def time_shapes(shapes, dtype, isas, repeats, rng, quantized=False, settle=0.0):
    rows = []
    for M, K, N, r in shapes:
        p = make_problem(rng, M, K, N, r, dtype, quantized)
        methods = [("numpy", step_for(p, "numpy"))] + [(f"cpp {isa}", step_for(p, "cpp", isa)) for isa in isas]
        # Calls of a few microseconds are timed in groups, so that a group lasts about 20 ms.
        start = time.perf_counter()
        methods[0][1]()
        group = inner_repeats(time.perf_counter() - start)
        grouped = [(lambda f=f: [f() for _ in range(group)]) for _, f in methods]
        seconds = [t / group for t in alternated_medians(grouped, repeats, settle=settle)]
        rows.append(((M, K, N, r), dict(zip((name for name, _ in methods), seconds))))
    return rows


def print_table(rows, dtype, isas, quantized=False):
    names = ["numpy"] + [f"cpp {isa}" for isa in isas]
    default = nf4.default_backend if quantized else default_backend
    header = "| M × K × N, r | " + " | ".join(f"{n} ms" for n in names) + " | " + \
        " | ".join(f"{n} GFLOP/s" for n in names) + " | " + " | ".join(f"{n} ÷ numpy" for n in names[1:]) + \
        " | default |" + (" W bytes, float32 → NF4 |" if quantized else "")
    print(f"\n{np.dtype(dtype).name}{', W in NF4' if quantized else ''}, forward + backward, median ms")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for (M, K, N, r), seconds in rows:
        f = bench.lora_flops(M, N, K, r, backward=True)
        cells = [f"{seconds[n] * 1e3:.3f}" for n in names]
        cells += [f"{f / seconds[n] / 1e9:.1f}" for n in names]
        cells += [f"{seconds[n] / seconds['numpy']:.2f}" for n in names[1:]]
        cells.append(default("cpu", (M, K, N, r)))
        if quantized:
            W = nf4_quantize(np.zeros((N, K), np.float32), 64, double_quant=True)
            cells.append(f"{4 * N * K} → {W.nbytes} ({W.bits_per_parameter:.3f} bits a weight)")
        print(f"| {M}×{K}×{N}, {r} | " + " | ".join(cells) + " |")


def parse_shapes(text):
    shapes = []
    for item in text.split(","):
        parts = item.strip().split("x")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise argparse.ArgumentTypeError(f"a shape is MxKxNxr, like 2048x128x128x8; got {item!r}")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=parse_shapes, default=SHAPES, help="comma-separated MxKxNxr")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--isas", default=None, help="comma-separated; default: every one this CPU runs")
    parser.add_argument("--repeats", type=int, default=7, help="rounds of alternated runs (the median is kept)")
    parser.add_argument("--rule", action="store_true", help="also time the small shapes behind the size rule")
    parser.add_argument("--nf4", action="store_true", help="W in NF4 (block 64, double quantization)")
    parser.add_argument("--settle", type=float, default=0.25,
                        help="seconds of sleep before each timed call (then one untimed call), so that "
                             "OpenBLAS's threads stop spinning; 0: no sleep, no untimed call")
    args = parser.parse_args(argv)
    usable, reason = cpp.status()
    if not usable:
        print(f"the C++ op is not available: {reason}")
        return 0
    isas = args.isas.split(",") if args.isas else list(cpp.available_isas())
    threads = cpp.threads()
    print(f"minilora {minilora.__version__}, NumPy {np.__version__}, C++ op with {threads} thread(s), "
          f"instruction sets {', '.join(isas)}; {args.repeats} alternated rounds, {args.settle} s of "
          "sleep and one untimed call before each timed call")
    rng = np.random.default_rng(0)
    print_table(time_shapes(args.shapes, args.dtype, isas, args.repeats, rng, args.nf4, args.settle), args.dtype,
                isas, args.nf4)
    if args.rule:
        print_table(time_shapes(RULE_SHAPES, args.dtype, isas[:1], args.repeats, rng, args.nf4, args.settle),
                    args.dtype, isas[:1], args.nf4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
