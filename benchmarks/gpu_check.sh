#!/usr/bin/env bash
# One call on a GPU machine checks the whole CUDA path, in about 10 minutes on an H100:
#   1. build minilora with the CUDA kernels (for this GPU's architecture, default 90)
#   2. check that the kernels can run here at all
#   3. the GPU tests (pytest -m gpu), then the rest of the suite (pytest -m "not gpu")
#   4. compute-sanitizer memcheck, racecheck and initcheck over one run of every kernel variant
#      on small awkward shapes (benchmarks/sanitize_kernels.py)
#   5. the benchmark (minilora/bench.py), inside whatever time is left
# Logs, the benchmark's JSON / markdown / plot and summary.md go to $OUT (or ./gpu_check_out);
# the summary is printed last. Exits 1 if the build, a test or a sanitizer fails.
#
#   bash benchmarks/gpu_check.sh                 # everything
#   BENCH_ARGS="--quick" bash benchmarks/gpu_check.sh    # default BENCH_ARGS: "--r 16"
#   MINILORA_CUDA_ARCHS=80 bash benchmarks/gpu_check.sh   # an A100
set -u -o pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${OUT:-./gpu_check_out}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PYTHON="${PYTHON:-python3}"
DEADLINE=$((SECONDS + ${GPU_CHECK_SECONDS:-570}))  # the whole script, benchmark included
export PYTHONUNBUFFERED=1
export MINILORA_CUDA=1
export MINILORA_CUDA_ARCHS="${MINILORA_CUDA_ARCHS:-90}"

SUMMARY=()
FAILED=0

# step MUST NAME LOG TIMEOUT COMMAND...: run COMMAND with its output appended to LOG and record the
# outcome; a failure fails the whole check when MUST is "must" (the benchmark's is only reported).
step() {
    local must=$1 name=$2 log=$3 limit=$4
    shift 4
    local start=$SECONDS
    echo "== $name: $*" | tee -a "$OUT_DIR/$log"
    timeout "$limit" "$@" >>"$OUT_DIR/$log" 2>&1
    local rc=$?
    local took=$((SECONDS - start))
    local result="ok"
    if [ "$rc" -ne 0 ]; then
        result="FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ", timed out after ${limit} s"))"
        if [ "$must" = must ]; then FAILED=1; fi
    fi
    echo "   $result in ${took} s" | tee -a "$OUT_DIR/$log"
    SUMMARY+=("| $name | $result | $took | $log |")
    return "$rc"
}

left() { echo $((DEADLINE - SECONDS)); }

SANITIZER="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
: >"$OUT_DIR/build.log"; : >"$OUT_DIR/tests.log"; : >"$OUT_DIR/sanitizer.log"; : >"$OUT_DIR/bench.log"

{
    echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
    echo "nvcc: $(nvcc --version 2>&1 | tail -1)"
    echo "python: $($PYTHON --version 2>&1); CUDA architectures built: $MINILORA_CUDA_ARCHS"
} | tee "$OUT_DIR/build.log"

if step must "build" build.log 300 "$PYTHON" -m pip install --no-build-isolation --no-deps -e .; then
    step must "kernels usable" build.log 60 "$PYTHON" -c "
from minilora.kernels import cuda
usable, reason = cuda.status()
print(reason)
raise SystemExit(0 if usable else 1)"
    XDIST=()
    if "$PYTHON" -c "import xdist" 2>/dev/null; then XDIST=(-n 8); fi
    step must "pytest -m gpu" tests.log 240 "$PYTHON" -m pytest -m gpu -q -rs
    step must "pytest -m 'not gpu'" tests.log 240 "$PYTHON" -m pytest -m "not gpu" -q -rs "${XDIST[@]}"
    for tool in memcheck racecheck initcheck; do
        step must "sanitizer $tool" sanitizer.log 150 \
            "$SANITIZER" --tool "$tool" --error-exitcode 1 "$PYTHON" benchmarks/sanitize_kernels.py
    done
    budget=$(( $(left) - 60 ))
    if [ "$budget" -lt 60 ]; then budget=60; fi
    # The benchmark's numbers are read, not asserted: a failure here is reported, not fatal.
    step report "benchmark" bench.log $((budget + 90)) \
        "$PYTHON" benchmarks/bench_lora.py --out "$OUT_DIR" --budget-s "$budget" ${BENCH_ARGS:---r 16}
fi

{
    echo
    echo "## gpu_check summary ($(date -u +%Y-%m-%dT%H:%MZ), ${SECONDS} s)"
    head -3 "$OUT_DIR/build.log"
    echo
    echo "| step | result | seconds | log |"
    echo "|---|---|---:|---|"
    printf '%s\n' "${SUMMARY[@]}"
    if [ -f "$OUT_DIR/lora_bench.json" ]; then
        echo
        echo "Forward + backward, device time (median), R = time ÷ the cuBLAS base layer (x·Wᵀ and dy·W):"
        "$PYTHON" -c "
import json, sys
from minilora import bench
data = json.load(open(sys.argv[1]))
print(data['meta']['device'], data['meta']['dtype'])
print(bench.headline(data['results']))" "$OUT_DIR/lora_bench.json"
    fi
    echo
    [ "$FAILED" -eq 0 ] && echo "gpu_check: all checks passed" || echo "gpu_check: SOME CHECKS FAILED (see the logs in $OUT_DIR)"
} | tee "$OUT_DIR/summary.md"
exit "$FAILED"
