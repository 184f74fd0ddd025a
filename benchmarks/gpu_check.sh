#!/usr/bin/env bash
# One call on a GPU machine checks the CUDA path, within GPU_CHECK_SECONDS (default 360 s, an H200):
#
#   step                     at most  what
#   1. preflight               15 s   nvcc (PATH or /usr/local/cuda/bin; CMake is told via CUDACXX),
#                                     compute-sanitizer (and whether it is allowed to run here),
#                                     CuPy, driver and GPU; a missing tool is "skipped", not failed
#   2. build                   90 s   pip install --no-build-isolation --no-deps -e ., for sm_90 only
#   3. kernels usable           5 s   minilora.kernels.cuda.status() must say the kernels can run
#   4. rungs alone             30 s   benchmarks/smoke_rungs.py: every rung in a process of its own,
#                                     all at once; a rung that fails or hangs is left out of the
#                                     steps below (it would take their process's results with it)
#   5. pytest -m gpu           65 s   the GPU tests only (CI runs the rest, and the emulated kernels);
#                                     nine rungs, the tensor-core three in float32 only, and nf4
#   6. sanitizer memcheck      40 s   compute-sanitizer over benchmarks/sanitize_kernels.py --quick:
#                                     every rung on 4 small shapes (float64 too, but for the
#                                     tensor-core rungs), each warp tile configuration
#                                     and the nf4 rung (W in NF4)
#   7. sanitizer racecheck     35 s   the same in float32 only (--float32), for the slower tools;
#   8. sanitizer initcheck     20 s   CuPy's memory pool off (it hides a small out-of-bounds access)
#   9. benchmark               50 s   N = K = 4096, r = 16, M = 128, 512, 8192: float32 (the
#                                     register-blocked and tensor-core rungs and the baselines, not
#                                     naive, tiled; no new shape after 20 s), then the bf16 rungs
#                                     (bf16, wgmma) beside PEFT in bfloat16 into bf16/ (no new
#                                     shape after 5 s);
#                                     JSON after every shape
#   10. summary                10 s   kept in reserve
#                             -----
#                             360 s
# (Estimates: no step has run on a GPU yet. The tile sweep, minilora bench --sweep, is not part of
# this call; it is for a second one.)
# Each step gets its limit or the time left, whichever is less; a step with no time left is skipped.
# Logs, the benchmark's lora_bench.json / .md / .png (and bf16/lora_bench.*) and summary.md go to
# $OUT (or ./gpu_check_out);
# summary.md is rewritten after every step and once more on exit (an EXIT trap, so also when the
# script is stopped). Exits 1 if a required step failed.
#
#   bash benchmarks/gpu_check.sh
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh    # on a CPU machine: every step that can run there
#   BENCH_ARGS="--quick" MINILORA_CUDA_ARCHS=80 GPU_CHECK_SECONDS=600 bash benchmarks/gpu_check.sh
#
# The dry run (CI) uses the existing build instead of rebuilding, accepts that the kernels cannot
# run, runs `pytest -m gpu` (everything skips, with reasons), lists the sanitizer runs instead of
# running them, and runs the benchmark command, which says there is nothing to time.
set -u -o pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${OUT:-./gpu_check_out}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PYTHON="${PYTHON:-python3}"
DRY="${GPU_CHECK_DRY:-0}"
BUDGET="${GPU_CHECK_SECONDS:-360}"
RESERVE=10  # for the summary
START=$SECONDS
export PYTHONUNBUFFERED=1
export MINILORA_CUDA=1
export MINILORA_CUDA_ARCHS="${MINILORA_CUDA_ARCHS:-90}"
BENCH_ARGS="${BENCH_ARGS:---M 128,512,8192 --NK 4096x4096 --r 16 --quick --methods base,composed,graph,cupy,peft,fused,vectorized,async,warp,tf32x3,bf16,wgmma}"
BF16_BENCH_SECONDS=5  # the bfloat16 run starts no new shape after this (after the float32 run)

SUMMARY=()
FAILED=0
PREFLIGHT=()

left() { echo $((BUDGET - RESERVE - (SECONDS - START))); }

write_summary() {
    {
        echo "## gpu_check summary ($(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - START)) s of ${BUDGET} s$([ "$DRY" = 1 ] && echo ", dry run"))"
        echo
        printf '%s\n' "${PREFLIGHT[@]}"
        echo
        echo "| step | result | seconds | limit | log |"
        echo "|---|---|---:|---:|---|"
        printf '%s\n' "${SUMMARY[@]}"
        if [ -f "$OUT_DIR/lora_bench.json" ]; then
            echo
            echo "Forward + backward, device time (median), R = time ÷ the cuBLAS base layer (x·Wᵀ and dy·W):"
            "$PYTHON" -c "
import json, sys
from minilora import bench
data = json.load(open(sys.argv[1]))
print(data['meta']['device'], data['meta']['dtype'])
print(bench.headline(data['results']))
print(bench.headline(data['results'], 'warp'))" "$OUT_DIR/lora_bench.json" 2>&1
        fi
        echo
        if [ "$FAILED" -eq 0 ]; then echo "gpu_check: no required step failed"; else echo "gpu_check: SOME CHECKS FAILED (see the logs in $OUT_DIR)"; fi
    } >"$OUT_DIR/summary.md.tmp" && mv "$OUT_DIR/summary.md.tmp" "$OUT_DIR/summary.md"
}

on_exit() {
    local rc=$?
    [ "$rc" -ne 0 ] && [ "$FAILED" -eq 0 ] && { FAILED=1; SUMMARY+=("| (stopped) | exit $rc | $((SECONDS - START)) | | |"); }
    write_summary
    cat "$OUT_DIR/summary.md"
    exit "$FAILED"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# skip NAME WHY: record a step that is not run.
skip() {
    echo "== $1: skipped ($2)"
    SUMMARY+=("| $1 | skipped: $2 | 0 | | |")
    write_summary
}

# step MUST NAME LOG LIMIT COMMAND...: run COMMAND with its output appended to LOG, for at most
# LIMIT seconds or the time left; a failure fails the whole check when MUST is "must".
step() {
    local must=$1 name=$2 log=$3 limit=$4
    shift 4
    local budget
    budget=$(left)
    [ "$budget" -lt "$limit" ] && limit=$budget
    if [ "$limit" -le 0 ]; then
        skip "$name" "no time left"
        return 1
    fi
    local start=$SECONDS
    echo "== $name (at most ${limit} s): $*" | tee -a "$OUT_DIR/$log"
    timeout --kill-after=5 "$limit" "$@" >>"$OUT_DIR/$log" 2>&1
    local rc=$?
    local took=$((SECONDS - start)) result="ok"
    if [ "$rc" -ne 0 ]; then
        result="FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ", stopped at the ${limit} s limit"))"
        [ "$must" = must ] && FAILED=1
    fi
    echo "   $result in ${took} s" | tee -a "$OUT_DIR/$log"
    SUMMARY+=("| $name | $result | $took | $limit | $log |")
    write_summary
    return "$rc"
}

for log in preflight build tests sanitizer bench; do : >"$OUT_DIR/$log.log"; done

# ---- 1. preflight ---------------------------------------------------------------------------------
found() {  # found WHAT VALUE DETAIL: one preflight line; an empty VALUE means skipped
    if [ -n "$2" ]; then PREFLIGHT+=("- $1: $2${3:+ ($3)}"); else PREFLIGHT+=("- $1: skipped ($3)"); fi
    echo "${PREFLIGHT[-1]}" | tee -a "$OUT_DIR/preflight.log"
}
NVCC="$(command -v nvcc || true)"
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
if [ -n "$NVCC" ]; then
    export CUDACXX="$NVCC" PATH="$(dirname "$NVCC"):$PATH"
    found nvcc "$NVCC" "$("$NVCC" --version 2>&1 | tail -1); CMake told via CUDACXX; building for $MINILORA_CUDA_ARCHS"
else
    found nvcc "" "not on PATH nor in /usr/local/cuda/bin; the build needs it"
fi
SANITIZER="$(command -v compute-sanitizer || true)"
for candidate in "$(dirname "${NVCC:-/usr/local/cuda/bin/nvcc}")/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer; do
    [ -z "$SANITIZER" ] && [ -x "$candidate" ] && SANITIZER="$candidate"
done
CUPY="$(timeout 10 "$PYTHON" -c 'import cupy; print(cupy.__version__)' 2>/dev/null || true)"
found CuPy "$CUPY" "$([ -z "$CUPY" ] && echo "not importable; the kernels take CuPy arrays")"
GPU="$(timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || true)"
found "GPU, driver, memory" "$GPU" "$([ -z "$GPU" ] && echo "nvidia-smi is missing or sees no GPU")"
SANITIZER_OK=""
if [ -n "$SANITIZER" ] && [ -n "$CUPY" ] && [ -n "$GPU" ]; then
    # Some container runtimes refuse the sanitizer's instrumentation: find out on a tiny program.
    if probe="$(timeout 15 "$SANITIZER" --tool memcheck --error-exitcode 1 "$PYTHON" -c \
        'import cupy; cupy.arange(4).sum(); cupy.cuda.Device().synchronize()' 2>&1)"; then
        SANITIZER_OK=1
        found compute-sanitizer "$SANITIZER" "runs here"
    else
        found compute-sanitizer "" "$SANITIZER is refused here: $(echo "$probe" | tail -1)"
    fi
elif [ -n "$SANITIZER" ]; then
    found compute-sanitizer "" "$SANITIZER found, but it needs CuPy and a GPU"
else
    found compute-sanitizer "" "not on PATH nor next to nvcc"
fi
found python "$("$PYTHON" --version 2>&1)" "$(command -v "$PYTHON")"
SUMMARY+=("| preflight | ok | $((SECONDS - START)) | 15 | preflight.log |")
write_summary

# ---- 2. build; 3. kernels usable ------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
    step must "build (dry run: the existing build is loaded)" build.log 90 "$PYTHON" -c \
        "import minilora._C as C; print('minilora._C built', 'with' if C.with_cuda else 'without', 'CUDA')"
elif [ -n "$NVCC" ]; then
    step must "build" build.log 90 "$PYTHON" -m pip install --no-build-isolation --no-deps -e .
else
    FAILED=1
    skip "build" "no nvcc: nothing below can mean anything"
fi
step must "kernels usable" build.log 5 "$PYTHON" -c "
from minilora.kernels import cuda
usable, reason = cuda.status()
print(reason)
raise SystemExit(0 if usable or '$DRY' == '1' else 1)"

# ---- 4. every rung alone ---------------------------------------------------------------------------
# No rung has met a GPU before: one that faults or hangs would take down, or hold until their
# limits, the steps below that run every rung in one process. So each runs alone first, and the
# ones that fail are left out of those steps (and named in the summary).
step must "rungs alone" tests.log 30 "$PYTHON" benchmarks/smoke_rungs.py \
    --out "$OUT_DIR/broken_rungs.txt" --logs "$OUT_DIR"
BROKEN="$(cat "$OUT_DIR/broken_rungs.txt" 2>/dev/null || true)"
PYTEST_SKIP=()
if [ -n "$BROKEN" ]; then
    PREFLIGHT+=("- left out of the steps after 'rungs alone' (each failed alone: smoke_<rung>.log): $BROKEN")
    PYTEST_SKIP=(-k "not (${BROKEN//,/ or })")
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
    BENCH_ARGS="$("$PYTHON" -c '
import sys
broken, args = set(sys.argv[1].split(",")), sys.argv[2:]
if "--methods" in args:
    at = args.index("--methods") + 1
    args[at] = ",".join(m for m in args[at].split(",") if m not in broken)
print(" ".join(args))' "$BROKEN" $BENCH_ARGS)"
fi

# ---- 5. the GPU tests -----------------------------------------------------------------------------
XDIST=()
if [ "$DRY" != 1 ] && "$PYTHON" -c "import xdist" 2>/dev/null; then XDIST=(-n 8); fi
step must "pytest -m gpu" tests.log 65 "$PYTHON" -m pytest -m gpu -q -rs -p no:cacheprovider "${XDIST[@]}" \
    "${PYTEST_SKIP[@]}"

# ---- 6-8. compute-sanitizer -------------------------------------------------------------------------
# memcheck over sanitize_kernels.py --quick; the slower racecheck and initcheck in float32 only.
for tool in memcheck racecheck initcheck; do
    limit=40 runs=(--quick --skip "$BROKEN")
    [ "$tool" = racecheck ] && limit=35
    [ "$tool" = initcheck ] && limit=20
    [ "$tool" != memcheck ] && runs=(--quick --float32 --skip "$BROKEN")
    if [ "$DRY" = 1 ]; then
        step must "sanitizer $tool (dry run: list the runs)" sanitizer.log "$limit" \
            "$PYTHON" benchmarks/sanitize_kernels.py --list "${runs[@]}"
    elif [ -n "$SANITIZER_OK" ]; then
        step must "sanitizer $tool" sanitizer.log "$limit" \
            "$SANITIZER" --tool "$tool" --error-exitcode 1 "$PYTHON" benchmarks/sanitize_kernels.py "${runs[@]}"
    else
        skip "sanitizer $tool" "compute-sanitizer missing or refused (preflight)"
    fi
done

# ---- 9. benchmark -----------------------------------------------------------------------------------
# Its numbers are read, not asserted: a failure is reported, not fatal. It starts no new shape past
# --budget-s and writes lora_bench.json after every shape, so a cut-off run keeps what it measured.
bench_limit=50
[ "$(left)" -lt "$bench_limit" ] && bench_limit=$(left)
fp32_budget=$((bench_limit > 30 ? bench_limit - 30 : 1))
# One step, two runs: float32 (every fp32 and tf32x3 rung and the baselines), then bfloat16, which
# runs even when the first failed (a method that raises fails its run, after the others are timed).
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
step report "benchmark" bench.log 50 bash -c '"$1" benchmarks/bench_lora.py --out "$2" --budget-s "$3" ${@:5}
    fp32=$?
    "$1" benchmarks/bench_lora.py --out "$2/bf16" --dtype bfloat16 --budget-s "$4" --no-plot ${@:5} &&
    exit "$fp32"' \
    bench "$PYTHON" "$OUT_DIR" "$fp32_budget" "$BF16_BENCH_SECONDS" $BENCH_ARGS
exit "$FAILED"
