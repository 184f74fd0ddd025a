"""The CPU benchmarks run and print their tables (benchmarks/bench_cpu_op.py, bench_train.py).

Nothing here asserts a speed: only that the scripts work, that every row of the op table has a
ratio and the default backend the size rule gives, and that the training breakdown's kinds of work
cover minilora's ops and PyTorch's aten names the same way.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minilora import backend

ROOT = Path(__file__).resolve().parents[1]
EXTENSION, EXTENSION_REASON = backend.extension_status()


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(EXTENSION is None, reason=f"the C++ op is not built ({EXTENSION_REASON})")
def test_bench_cpu_op_prints_a_row_per_shape_with_ratio_and_default():
    proc = subprocess.run([sys.executable, "benchmarks/bench_cpu_op.py", "--shapes", "3x5x7x2,130x40x40x3",
                           "--repeats", "1", "--isas", "baseline"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if re.match(r"\| \d+×", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["3×5×7, 2", "130×40×40, 3"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[-2]) > 0 and cells[-1] == "numpy"  # both shapes are below the size rule


def test_bench_cpu_op_rejects_a_malformed_shape():
    proc = subprocess.run([sys.executable, "benchmarks/bench_cpu_op.py", "--shapes", "3x5x7"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "a shape is MxKxNxr" in proc.stderr


def test_training_breakdown_puts_both_sides_ops_into_the_same_kinds():
    bench_train = load("bench_train")
    assert bench_train.kind_of_minilora("FusedLoRALinear.backward") == "linear + LoRA products"
    assert bench_train.kind_of_torch("aten::addmm") == "linear + LoRA products"
    assert bench_train.kind_of_minilora("Gelu.forward") == bench_train.kind_of_torch("aten::gelu") == "GELU"
    assert bench_train.kind_of_minilora("Normalize.backward") == "layer norm"
    assert bench_train.kind_of_torch("aten::native_layer_norm_backward") == "layer norm"
    assert bench_train.kind_of_minilora("Transpose.forward") == bench_train.kind_of_torch("aten::t") == "other ops"
