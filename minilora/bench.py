"""`minilora bench`: time the LoRA layer's CUDA kernels against cuBLAS (and PyTorch + PEFT if present).

For every shape (M tokens, N output and K input features, rank r) and every method it measures the
forward and the forward + backward (W frozen: dx, dA, dB) in two ways:

    device time   CUDA events around each run, after a warm-up; the median of many runs. A short
                  spin kernel is queued first so that every run is already waiting on the GPU
                  when it starts: the events then time the GPU's work, not Python's launches.
    host time     wall clock around one call and a synchronize: what a Python caller waits.

Each run takes the next of several copies of the inputs (x, W, A, B, dy, u), together larger than
twice the GPU's L2 cache, so no run finds its operands already cached by the previous one.

Methods: the kernel ladder "naive", "tiled", "fused", "vectorized", "async", "warp", "tf32x3", "bf16",
"wgmma" (minilora.kernels.cuda), and with --sweep "warp:<tiles>" (minilora.tile_sweep); "cupy", the
reference's products through CuPy (minilora.kernels.cupy_baseline); "composed", the same products
as cuBLAS GEMMs that accumulate in place (y = x·Wᵀ, then y += s·u·Bᵀ with beta = 1); "graph", those
GEMMs replayed as a CUDA graph, the bar for a fused kernel; "base", the layer without LoRA (x·Wᵀ,
and dy·W for the backward), the floor (minilora.cublas_baselines); "peft", PyTorch + PEFT, when both
import. R_base = time ÷ base time; R_peft = time ÷ peft time; TFLOP/s counts the LoRA layer's
multiply-adds twice (the base layer's for "base").

--dtype bfloat16 times the bf16 rungs (bf16, wgmma) beside PEFT in torch.bfloat16 (R_peft is the
figure to read): the rungs get float32 arrays holding bf16 values (minilora/kernels/bf16.py says
why and what that costs), PEFT gets the same values as bf16 tensors. CuPy has no bfloat16, so the
cuBLAS baselines do not run then; and the bf16 rungs are timed only then (with float32 their R_peft
would compare bf16 arithmetic with PEFT's float32). float64 leaves out the float32-only rungs
(tf32x3, bf16, wgmma).

Results go to --out (default $OUT, else ./minilora_bench): lora_bench.json, lora_bench.md and
lora_bench.png, which name the GPU, the date, and the versions of CuPy, the CUDA runtime and driver
(and of PyTorch and PEFT when timed). A method that raises is listed as failed, with its error
(meta "failures"), the others are timed all the same, and the command exits 1. Without a usable
GPU it prints one line saying why and exits 0.
"""

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

from minilora import backend, cublas_baselines, tile_sweep
from minilora.cli import positive_int
from minilora.io import atomic_write
from minilora.kernels.bf16 import round_to_bfloat16
from minilora.kernels.cuda import VARIANTS  # the kernel ladder, timed rung by rung
from minilora.plot import save_png

FULL = {"M": (128, 512, 2048, 8192), "NK": ((1024, 1024), (4096, 4096), (11008, 4096)), "r": (8, 16, 64)}
QUICK = {"M": (128, 2048), "NK": ((1024, 1024), (4096, 4096)), "r": (16,)}
BASELINES = ("base", "composed", "graph", "cupy")
# The baselines first: a kernel that breaks the CUDA context (a fault is sticky) then costs the
# methods after it, not the base layer every ratio divides by.
ALL_METHODS = BASELINES + ("peft",) + VARIANTS
PASSES = ("forward", "forward+backward")
BFLOAT16_METHODS = ("bf16", "wgmma", "peft")


# ---- command line -----------------------------------------------------------------------------
def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="a small grid (M 128 and 2048; N×K 1024² and 4096²; r 16), fewer runs")
    parser.add_argument("--M", type=_int_list,
                        help="token counts, e.g. 128,512 (default 128,512,2048,8192)")
    parser.add_argument("--NK", type=_shape_list,
                        help="layer sizes NxK, e.g. 4096x4096,11008x4096 (default 1024x1024,4096x4096,11008x4096)")
    parser.add_argument("--r", type=_int_list, help="ranks, e.g. 8,16 (default 8,16,64)")
    parser.add_argument("--methods", type=_name_list, default=ALL_METHODS,
                        help="methods to time (default: all; peft only when torch and peft import)")
    parser.add_argument("--sweep", action="store_true",
                        help="time the warp rung with each tile configuration pinned (methods "
                             "warp:<tiles>), beside its own choice, fused and base (minilora.tile_sweep)")
    parser.add_argument("--dtype", choices=("float32", "float64", "bfloat16"), default="float32",
                        help="bfloat16: the bf16 rungs beside PEFT in bfloat16 (no cuBLAS baselines)")
    parser.add_argument("--naive-max-gflop", type=float, default=20.0,
                        help="skip the naive kernel on shapes whose forward exceeds this many GFLOP")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no new shape after this many seconds (the rest are listed as skipped)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: $OUT if set, else ./minilora_bench)")
    parser.add_argument("--no-plot", action="store_true", help="skip the matplotlib figure")


# Option types: each turns the text into a value, or says what is wrong with it before any GPU work.
def _int_list(text):
    return tuple(positive_int(v) for v in text.split(","))


def _shape_list(text):
    shapes = tuple(tuple(item.lower().split("x")) for item in text.split(","))
    for shape, item in zip(shapes, text.split(",")):
        if len(shape) != 2:
            raise argparse.ArgumentTypeError(f"expected sizes NxK such as 4096x4096, got {item!r}")
    return tuple((positive_int(N), positive_int(K)) for N, K in shapes)


def _name_list(text):
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in ALL_METHODS and tile_sweep.pinned_tiles(n) is None]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected methods among {', '.join(ALL_METHODS)} (or warp:<tiles>), "
                                         f"got {text!r}")
    return names


def run(args):
    from minilora.kernels import cuda as cuda_kernels

    usable, reason = cuda_kernels.status()
    if not usable:
        print(f"minilora bench: nothing to time, no usable GPU here ({reason})")
        return 0
    grid = QUICK if args.quick else FULL
    shapes = [(M, N, K, r) for (N, K) in (args.NK or grid["NK"]) for r in (args.r or grid["r"])
              for M in (args.M or grid["M"])]
    out_dir = args.out or Path(os.environ.get("OUT") or "minilora_bench")
    methods = tile_sweep.sweep_methods(cuda_kernels.warp_tiles()[0]) if args.sweep else args.methods
    methods, notes = methods_for(args.dtype, methods)
    bench = _GpuBench(args.dtype, methods, args.naive_max_gflop, quick=args.quick)
    bench.notes += notes
    print(f"minilora bench on {bench.device_name}, {args.dtype}, {len(shapes)} shapes, "
          f"methods {', '.join(bench.methods)}{bench.peft_note}")

    records, skipped, start = [], [], time.perf_counter()
    meta = {"device": bench.device_name, "dtype": args.dtype, "l2_bytes": bench.l2_bytes,
            "software": bench.software(), "skipped_shapes": skipped, "notes": bench.notes,
            "failures": bench.failures}
    for shape in shapes:
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            skipped.append(shape)
            continue
        records += bench.measure(*shape)
        # Written after every shape, so a run cut short (a time limit, a killed job) keeps its numbers.
        write_results(out_dir, summarize(records), meta, plot=False)
        print(f"  M={shape[0]:>5} N={shape[1]:>5} K={shape[2]:>5} r={shape[3]:>3}: done "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    rows = summarize(records)
    write_results(out_dir, rows, meta, plot=not args.no_plot)
    print(pivot_table(rows, "device"))
    if args.sweep:
        print(tile_sweep.sweep_table(rows))
    if skipped:
        print(f"skipped {len(skipped)} shapes over the --budget-s of {args.budget_s} s: {skipped}")
    print(f"results in {out_dir}/lora_bench.{{json,md{'' if args.no_plot else ',png'}}}")
    for failure in bench.failures:
        print(f"FAILED: {failure}")
    return 1 if bench.failures else 0


def methods_for(dtype, methods):
    """``(kept, notes)``: the methods that can be timed in `dtype` ("float32", "float64" or
    "bfloat16"), in their order, and one note for each kind left out."""
    from minilora.kernels.cuda import BFLOAT16_OPERANDS, FLOAT32_ONLY

    if dtype == "bfloat16":
        left_out = [m for m in methods if m not in BFLOAT16_METHODS]
        why = "not timed in bfloat16 (CuPy has no bfloat16; the fp32 rungs are timed in float32)"
    elif dtype == "float64":
        left_out = [m for m in methods if m in FLOAT32_ONLY]
        why = "not timed in float64 (tensor-core rungs, float32 only)"
    else:
        left_out = [m for m in methods if m in BFLOAT16_OPERANDS]
        why = "timed with --dtype bfloat16, beside PEFT in bfloat16"
    kept = tuple(m for m in methods if m not in left_out)
    return kept, ([f"{', '.join(left_out)}: {why}"] if left_out else [])


# ---- arithmetic on the numbers (pure functions) ------------------------------------------------
def lora_flops(M, N, K, r, backward):
    """Floating-point operations of the LoRA layer (2 per multiply-add).

    forward: x·Wᵀ and u = x·Aᵀ and u·Bᵀ; the backward adds v = dy·B, dy·W, v·A, vᵀ·x and dyᵀ·u.
    """
    forward = 2 * M * (N * K + K * r + r * N)
    return forward + (2 * M * (N * r + N * K + r * K + r * K + N * r) if backward else 0)


def base_flops(M, N, K, backward):
    """The layer without LoRA: x·Wᵀ, and dy·W in the backward (W frozen)."""
    return 2 * M * N * K * (2 if backward else 1)


def summarize(records):
    """Add TFLOP/s, R_base and R_peft to timing records.

    Each record: {"M", "N", "K", "r", "method", "pass" ("forward" or "forward+backward"),
    "device_ms", "host_ms", ...}. R_base and R_peft divide device times by those of "base" and
    "peft" on the same shape and pass (None when that method was not timed there).
    """
    def key(rec):
        return rec["M"], rec["N"], rec["K"], rec["r"], rec["pass"]

    by_method = {(key(rec), rec["method"]): rec for rec in records}
    rows = []
    for rec in records:
        backward = rec["pass"] == "forward+backward"
        if rec["method"] == "base":
            flops = base_flops(rec["M"], rec["N"], rec["K"], backward)
        else:
            flops = lora_flops(rec["M"], rec["N"], rec["K"], rec["r"], backward)
        row = dict(rec, tflops=flops / (rec["device_ms"] * 1e-3) / 1e12)
        for ref in ("base", "peft"):
            other = by_method.get((key(rec), ref))
            row[f"r_{ref}"] = rec["device_ms"] / other["device_ms"] if other else None
        rows.append(row)
    return rows


CELLS = {
    "device": ("device time, ms (R_base)", lambda r: f"{r['device_ms']:.3f}" +
               (f" ({r['r_base']:.2f}x)" if r["r_base"] is not None and r["method"] != "base" else "")),
    "host": ("host-inclusive time, ms", lambda r: f"{r['host_ms']:.3f}"),
    "tflops": ("TFLOP/s (device time)", lambda r: f"{r['tflops']:.1f}"),
    "peft": ("R_peft (device time ÷ PyTorch + PEFT)",
             lambda r: "" if r["r_peft"] is None else f"{r['r_peft']:.2f}x"),
}


def pivot_table(rows, cell):
    """A markdown table: one line per shape and pass, one column per method; `cell` is a key of
    CELLS saying what each entry shows."""
    title, show = CELLS[cell]
    methods = list(dict.fromkeys(row["method"] for row in rows))
    lines = [f"{title}", "",
             "| M | N | K | r | pass | " + " | ".join(methods) + " |",
             "|" + "---:|" * 4 + "---|" + "---:|" * len(methods)]
    table = {}
    for row in rows:
        table.setdefault((row["M"], row["N"], row["K"], row["r"], row["pass"]), {})[row["method"]] = row
    for (M, N, K, r, pass_), cells in table.items():
        entries = [show(cells[m]) if m in cells else "-" for m in methods]
        lines.append(f"| {M} | {N} | {K} | {r} | {pass_} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def headline(rows, method="fused"):
    """The forward + backward of `method` on every shape, next to the baselines: a short table to
    print last (benchmarks/gpu_check.sh)."""
    table = {}
    for row in rows:
        if row["pass"] == "forward+backward":
            table.setdefault((row["M"], row["N"], row["K"], row["r"]), {})[row["method"]] = row

    def ratio(cells, name, key="r_base"):
        value = cells[name][key] if name in cells else None
        return "-" if value is None else f"{value:.2f}x"

    lines = [f"| M | N | K | r | {method} ms | R_base | composed R_base | graph R_base | cupy R_base "
             "| R_peft |", "|" + "---:|" * 10]
    for (M, N, K, r), cells in table.items():
        if method in cells:
            lines.append(f"| {M} | {N} | {K} | {r} | {cells[method]['device_ms']:.3f} | "
                         f"{ratio(cells, method)} | {ratio(cells, 'composed')} | {ratio(cells, 'graph')} | "
                         f"{ratio(cells, 'cupy')} | {ratio(cells, method, 'r_peft')} |")
    return "\n".join(lines)


def markdown_report(rows, meta):
    parts = [f"# LoRA layer benchmark: {meta['device']}, {meta['dtype']}", "",
             "Median of many runs after a warm-up; inputs rotated past the L2 cache; W frozen "
             "(the backward computes dx, dA and dB). R_base = time ÷ the base layer's time "
             "(x·Wᵀ, plus dy·W in the backward) through cuBLAS.", ""]
    if meta.get("software"):
        parts += [software_line(meta["software"]), ""]
    parts += [pivot_table(rows, "device"), "", pivot_table(rows, "tflops"), "",
              pivot_table(rows, "host"), ""]
    if any(row["r_peft"] is not None for row in rows):
        parts += [pivot_table(rows, "peft"), ""]
    if any(tile_sweep.pinned_tiles(row["method"]) for row in rows):
        parts += [tile_sweep.sweep_table(rows), ""]
    parts += [f"- FAILED, not timed: {failure}" for failure in meta.get("failures", [])]
    parts += [f"- {note}" for note in meta.get("notes", [])]
    if meta.get("skipped_shapes"):
        parts.append(f"- shapes not timed (time budget): {meta['skipped_shapes']}")
    return "\n".join(parts) + "\n"


def software_line(software):
    """One line naming what the timings depend on besides the GPU, from `_GpuBench.software()`."""
    names = {"cupy": "CuPy", "cuda_runtime": "CUDA runtime", "cuda_driver": "driver for CUDA",
             "torch": "PyTorch", "peft": "PEFT"}
    listed = [f"{label} {software[key]}" for key, label in names.items() if software.get(key)]
    return f"Measured {software.get('date', 'on an unrecorded date')} with " + ", ".join(listed) + "."


def write_results(out_dir, rows, meta, plot=True):
    """lora_bench.json, lora_bench.md and (with plot) lora_bench.png in out_dir, each written
    atomically (minilora.io.atomic_write)."""
    out_dir = Path(out_dir)
    with atomic_write(out_dir / "lora_bench.json", mode="w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=1)
    with atomic_write(out_dir / "lora_bench.md", mode="w") as f:
        f.write(markdown_report(rows, meta))
    if plot:
        save_png(results_figure(rows, meta), out_dir / "lora_bench.png")


def results_figure(rows, meta):
    """A matplotlib Figure: R_base of the forward + backward against M, one panel per layer size
    (N, K) and rank, one line per method."""
    from matplotlib.figure import Figure

    rows = [row for row in rows if row["pass"] == "forward+backward" and row["r_base"] is not None
            and row["method"] != "base"]
    panels = sorted({(row["N"], row["K"], row["r"]) for row in rows})
    cols = min(3, max(1, len(panels)))
    nrows = max(1, math.ceil(len(panels) / cols))
    fig = Figure(figsize=(max(6.5, 4.5 * cols), 3.6 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, (N, K, r) in zip(axes, panels):
        for method in dict.fromkeys(row["method"] for row in rows):
            points = sorted((row["M"], row["r_base"]) for row in rows
                            if (row["N"], row["K"], row["r"], row["method"]) == (N, K, r, method))
            if points:
                ax.plot(*zip(*points), marker="o", label=method)
        ax.axhline(1.0, color="gray", linewidth=0.8)
        ax.set(yscale="log", xlabel="M (tokens)", ylabel="time ÷ base layer", title=f"N={N} K={K} r={r}")
        ax.set_xscale("log", base=2)
        Ms = sorted({row["M"] for row in rows})
        ax.set_xticks(Ms, [str(m) for m in Ms])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"LoRA layer forward + backward on {meta['device']} ({meta['dtype']})", fontsize=10)
    fig.tight_layout()
    return fig


# ---- timing on the GPU -------------------------------------------------------------------------
SPIN_SOURCE = r"""
extern "C" __global__ void minilora_spin(unsigned long long nanoseconds) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < nanoseconds);
}
"""


class _GpuBench:
    """Inputs, the methods as callables, and the timing loop, all on one CuPy stream."""

    def __init__(self, dtype, methods, naive_max_gflop, quick):
        self.cp = backend.xp_for("cuda")
        self.bfloat16 = dtype == "bfloat16"
        self.dtype = "float32" if self.bfloat16 else dtype  # of the arrays: bf16 values in float32
        self.naive_max_flops = naive_max_gflop * 1e9
        self.target_s = 0.1 if quick else 0.2  # host-inclusive time to spend on each measurement
        self.max_runs = 20 if quick else 30
        self.stream = self.cp.cuda.Stream(non_blocking=True)
        props = self.cp.cuda.runtime.getDeviceProperties(self.cp.cuda.Device().id)
        name = props["name"]
        self.device_name = name.decode() if isinstance(name, bytes) else name
        self.l2_bytes = int(props.get("l2CacheSize", 50 << 20))
        self.spin = self.cp.RawKernel(SPIN_SOURCE, "minilora_spin")
        self.notes = []
        self.failures = []  # "method at shape: error", for every method that raised
        self.torch, self.peft = _import_peft() if "peft" in methods else (None, None)
        self.peft_note = ("" if "peft" not in methods or self.peft
                          else " (peft skipped: torch or peft not importable)")
        self.methods = [m for m in methods if m != "peft" or self.peft]
        unknown = ({m for m in self.methods if not tile_sweep.pinned_tiles(m)} -
                   set(ALL_METHODS))
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; "
                             f"choose from {ALL_METHODS}")
        from minilora.kernels import cuda as cuda_kernels
        for method in [m for m in self.methods if m in VARIANTS]:
            usable, reason = cuda_kernels.variant_status(method)
            if not usable:  # a tensor-core rung on a GPU without mma.sync for it
                self.methods.remove(method)
                self.notes.append(f"{method} not timed: {reason}")

    def software(self):
        """The versions the timings depend on besides the GPU, and the date (UTC)."""
        def cuda_version(number):  # 13000 -> "13.0"
            return f"{number // 1000}.{number % 1000 // 10}"

        runtime = self.cp.cuda.runtime
        found = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "cupy": self.cp.__version__,
                 "cuda_runtime": cuda_version(runtime.runtimeGetVersion()),
                 "cuda_driver": cuda_version(runtime.driverGetVersion())}
        if self.torch is not None:
            found |= {"torch": self.torch.__version__, "peft": self.peft.__version__}
        return found

    # -- inputs --
    def _input_sets(self, M, N, K, r):
        cp = self.cp
        set_bytes = (M * K + N * K + r * K + N * r + M * N + M * r) * cp.dtype(self.dtype).itemsize
        free = cp.cuda.runtime.memGetInfo()[0]
        copies = max(2, math.ceil(2 * self.l2_bytes / set_bytes))
        copies = int(min(copies, 64, max(1, 0.4 * free // set_bytes)))
        rng = cp.random.default_rng(0)  # normal values: never zeros, which can run faster
        sets = []
        for _ in range(copies):
            def draw(*shape):
                values = rng.standard_normal(shape, dtype=self.dtype)
                return round_to_bfloat16(values) if self.bfloat16 else values
            sets.append({"x": draw(M, K), "W": draw(N, K), "A": draw(r, K), "B": draw(N, r),
                         "dy": draw(M, N), "u": draw(M, r)})
        return sets

    # -- the methods --
    def _callables(self, method, sets, scaling):
        """(forward(i), forward_backward(i)) for input set i % len(sets)."""
        from minilora.kernels import cuda as cuda_kernels
        from minilora.kernels import cupy_baseline

        n = len(sets)
        tiles = tile_sweep.pinned_tiles(method)
        if tiles:  # the warp rung with its tile configuration pinned
            return tuple(tile_sweep.with_tiles(tiles, fn) for fn in self._callables("warp", sets, scaling))
        if method in VARIANTS:
            def fwd(i):
                s = sets[i % n]
                return cuda_kernels.forward(s["x"], s["W"], s["A"], s["B"], scaling, variant=method)

            def fwd_bwd(i):
                s = sets[i % n]
                _, u = cuda_kernels.forward(s["x"], s["W"], s["A"], s["B"], scaling, variant=method)
                return cuda_kernels.backward(s["dy"], s["x"], s["W"], s["A"], s["B"], u, scaling,
                                             variant=method)
            return fwd, fwd_bwd
        if method == "cupy":
            def fwd(i):
                s = sets[i % n]
                return cupy_baseline.forward(s["x"], s["W"], s["A"], s["B"], scaling)

            def fwd_bwd(i):
                s = sets[i % n]
                _, u = cupy_baseline.forward(s["x"], s["W"], s["A"], s["B"], scaling)
                return cupy_baseline.backward(s["dy"], s["x"], s["W"], s["A"], s["B"], u, scaling)
            return fwd, fwd_bwd
        if method in ("composed", "graph", "base"):
            return self._cublas_callables(method, sets, scaling)
        if method == "peft":
            return _peft_callables(self.torch, self.peft, sets, scaling, self.stream, self.bfloat16)
        raise ValueError(f"unknown method {method!r}")

    def _cublas_callables(self, method, sets, scaling):
        cb = cublas_baselines
        layers = ((cb.base_forward, cb.base_forward_backward) if method == "base" else
                  (lambda s, out: cb.composed_forward(s, scaling, out),
                   lambda s, out: cb.composed_forward_backward(s, scaling, out)))
        if method == "graph":
            return tuple(cb.graph_replays(self.cp, self.stream, sets, layer) for layer in layers)
        n, out = len(sets), cb.fresh_outputs(self.cp, sets[0]["x"].dtype)
        return tuple((lambda i, layer=layer: layer(sets[i % n], out)) for layer in layers)

    # -- one shape --
    def measure(self, M, N, K, r):
        scaling = 2.0  # alpha = 2r, a common setting
        records = []
        with self.stream:
            sets = self._input_sets(M, N, K, r)
            reference_y = self._callables("cupy", sets, scaling)[0](0)[0]
            for method in self.methods:
                if method == "naive" and 2 * M * N * K > self.naive_max_flops:
                    note = f"naive skipped where 2·M·N·K > {self.naive_max_flops / 1e9:g} GFLOP"
                    if note not in self.notes:
                        self.notes.append(note)
                    continue
                try:
                    records += self._measure_method(method, sets, scaling, reference_y, (M, N, K, r))
                except Exception as error:  # one method's failure costs its own numbers, not the run's
                    self.failures.append(f"{method} at M={M} N={N} K={K} r={r}: "
                                         f"{type(error).__name__}: {error}")
        self.stream.synchronize()
        del sets
        self.cp.get_default_memory_pool().free_all_blocks()
        if self.torch is not None:
            self.torch.cuda.empty_cache()
        return records

    def _measure_method(self, method, sets, scaling, reference_y, shape):
        """The records of one method on one shape: its forward's error against the cupy
        baseline's, and both passes timed."""
        fwd, fwd_bwd = self._callables(method, sets, scaling)
        y = fwd(0)
        y = y[0] if isinstance(y, tuple) else y
        if self.bfloat16 and method == "peft":
            y = y.float()  # CuPy reads no bfloat16 tensor
        error = None
        if method != "base":
            diff = self.cp.linalg.norm(self.cp.asarray(y, dtype=self.cp.float64) - reference_y)
            error = float(diff / self.cp.linalg.norm(reference_y.astype(self.cp.float64)))
        M, N, K, r = shape
        records = []
        for pass_, fn in zip(PASSES, (fwd, fwd_bwd)):
            device_ms, host_ms = self._time(fn)
            records.append({"M": M, "N": N, "K": K, "r": r, "method": method, "pass": pass_,
                            "device_ms": device_ms, "host_ms": host_ms, "rel_err_vs_cupy": error,
                            "copies": len(sets)})
        return records

    def _time(self, fn):
        """(median device ms, median host-inclusive ms) of fn(i) over many runs."""
        stream = self.stream
        for i in range(2):  # warm-up: module loading, cuBLAS handles, memory pool growth
            fn(i)
        stream.synchronize()

        host, enqueue = [], []
        i = 0
        while len(host) < 5 or (sum(host) < self.target_s * 1e3 and len(host) < self.max_runs):
            t0 = time.perf_counter()
            fn(i)
            t1 = time.perf_counter()
            stream.synchronize()
            host.append((time.perf_counter() - t0) * 1e3)
            enqueue.append(t1 - t0)
            i += 1
        runs = len(host)

        # The spin keeps the GPU busy while Python queues every run, so the runs start back to back.
        spin_s = min(1.5 * runs * statistics.median(enqueue) + 5e-4, 1.0)
        self.spin((1,), (1,), (self.cp.uint64(int(spin_s * 1e9)),))  # on the current stream
        events = [(self.cp.cuda.Event(), self.cp.cuda.Event()) for _ in range(runs)]
        for j, (start, stop) in enumerate(events):
            start.record(stream)
            fn(i + j)
            stop.record(stream)
        stream.synchronize()
        device = [self.cp.cuda.get_elapsed_time(start, stop) for start, stop in events]
        return statistics.median(device), statistics.median(host)


def _import_peft():
    try:
        import peft
        import torch
    except Exception:
        return None, None
    return (torch, peft) if torch.cuda.is_available() else (None, None)


def _peft_callables(torch, peft, sets, scaling, stream, bfloat16=False):
    """A PEFT LoRA linear per input set, on our arrays (shared through DLPack, or copied to
    torch.bfloat16 with bfloat16), on our stream."""
    def convert(tensor):
        return tensor.to(torch.bfloat16) if bfloat16 else tensor

    layers = []
    for s in sets:
        N, K = s["W"].shape
        r = s["A"].shape[0]
        model = torch.nn.Sequential(torch.nn.Linear(K, N, bias=False))
        config = peft.LoraConfig(r=r, lora_alpha=scaling * r, target_modules=["0"], lora_dropout=0.0)
        model = peft.get_peft_model(model, config).cuda()
        layer = model.base_model.model[0]
        with torch.no_grad():
            layer.base_layer.weight.data = convert(torch.from_dlpack(s["W"]))
            layer.lora_A["default"].weight.data = convert(torch.from_dlpack(s["A"]).clone())
            layer.lora_B["default"].weight.data = convert(torch.from_dlpack(s["B"]).clone())
        x = convert(torch.from_dlpack(s["x"])).detach().requires_grad_(True)
        layers.append((model, x, convert(torch.from_dlpack(s["dy"]))))
    torch_stream = torch.cuda.ExternalStream(stream.ptr)
    n = len(layers)

    def fwd(i):
        model, x, _ = layers[i % n]
        with torch.cuda.stream(torch_stream), torch.no_grad():
            return model(x)

    def fwd_bwd(i):
        model, x, dy = layers[i % n]
        with torch.cuda.stream(torch_stream):
            model.zero_grad(set_to_none=True)
            x.grad = None
            model(x).backward(dy)
        return x.grad

    return fwd, fwd_bwd
