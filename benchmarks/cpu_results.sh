#!/usr/bin/env bash
# The CPU tables of benchmarks/results/cpu-<machine>-<date>/: the C++ op against NumPy, the size
# rule behind the default backend, and a LoRA training step against PyTorch + PEFT, each on one
# thread and on every core, and the time of `minilora demo`. Run from the repository root:
#
#     bash benchmarks/cpu_results.sh                       # python3 on PATH, minilora installed
#     PYTHON=/path/to/venv-with-torch/bin/python bash benchmarks/cpu_results.sh
#
# PYTHON needs minilora importable (PYTHONPATH=. works for an editable build) and, for the
# PyTorch column, torch and peft. Files go to $OUT (default benchmarks/results/cpu-<host>-<date>).
set -euo pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/cpu-$(hostname -s)-$(date -u +%Y-%m-%d)}
CORES=$(nproc)
mkdir -p "$OUT"

run() {  # run <file> <threads> <command...>: the command's output into $OUT/<file>
  local file=$1 threads=$2
  shift 2
  echo "== $file ($threads thread(s)): $*"
  { echo "command: OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads $*"
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads "$@"
  } > "$OUT/$file" 2>&1
  tail -n 8 "$OUT/$file"
}

{ echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $CORES cores"
  echo "instruction sets: $(grep -o -w 'avx512f\|avx2\|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  "$PYTHON" -m minilora info
} > "$OUT/machine.txt"

for threads in 1 "$CORES"; do
  run "cpu_op_float32_${threads}t.md" "$threads" "$PYTHON" benchmarks/bench_cpu_op.py --repeats 9
  run "cpu_op_float64_${threads}t.md" "$threads" "$PYTHON" benchmarks/bench_cpu_op.py --repeats 9 --dtype float64 --isas "$("$PYTHON" -c 'from minilora.kernels import cpp; print(cpp.available_isas()[0])')"
  run "size_rule_${threads}t.md" "$threads" "$PYTHON" benchmarks/bench_cpu_op.py --repeats 9 --rule --shapes 64x64x64x8
  run "train_lora_${threads}t.md" "$threads" "$PYTHON" benchmarks/bench_train.py --sizes lora-4x256-T128 --steps 9 --warmup 2 --profile
done
# The whole demo with its defaults (every core), from a fresh folder: the base model is pretrained too.
DEMO=$(mktemp -d)
run "demo_${CORES}t.txt" "$CORES" "$PYTHON" -m minilora demo --quiet --out "$DEMO/demo"
rm -rf "$DEMO"
echo "tables in $OUT"
