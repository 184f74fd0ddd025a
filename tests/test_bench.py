"""`minilora bench` without a GPU: the command explains itself and exits 0, and the arithmetic that
turns timings into tables (FLOP counts, TFLOP/s, R_base, R_peft) and files is right.

The timing itself needs a GPU and runs in benchmarks/gpu_check.sh; nothing here asserts a speed.
"""

import argparse
import json
import types

import pytest

from minilora import bench, cli
from minilora.kernels import cuda as cuda_kernels


def parse(argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(cuda_kernels, "status", lambda: (False, "no usable GPU: test says so"))


def test_without_a_gpu_it_says_why_and_exits_0(no_gpu, capsys, tmp_path):
    assert bench.run(parse(["--quick", "--out", str(tmp_path)])) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["minilora bench: nothing to time, no usable GPU here (no usable GPU: test says so)"]
    assert list(tmp_path.iterdir()) == []


def test_minilora_bench_command_reaches_the_module(no_gpu, capsys):
    assert cli.main(["bench", "--quick"]) == 0
    assert "no usable GPU here" in capsys.readouterr().out


def test_without_a_gpu_on_this_machine_it_exits_0(capsys):
    if cuda_kernels.status()[0]:
        pytest.skip("the CUDA kernels can run here: the command would time them")
    assert bench.run(parse([])) == 0
    assert capsys.readouterr().out.startswith("minilora bench: nothing to time, no usable GPU here (")


def test_shape_options_parse():
    args = parse(["--M", "128,512", "--NK", "4096x4096,11008X4096", "--r", "8", "--methods", "fused,base"])
    assert args.M == (128, 512)
    assert args.NK == ((4096, 4096), (11008, 4096))
    assert args.r == (8,)
    assert args.methods == ("fused", "base")


@pytest.mark.parametrize("argv, says", [
    (["--NK", "10"], "argument --NK: expected sizes NxK such as 4096x4096, got '10'"),
    (["--NK", "4096x0"], "argument --NK: expected a positive int, got 0"),
    (["--NK", "4x4x4"], "argument --NK: expected sizes NxK such as 4096x4096, got '4x4x4'"),
    (["--M", "128,0"], "argument --M: expected a positive int, got 0"),
    (["--r", "x"], "argument --r: expected a positive int, got 'x'"),
    (["--methods", "fused,bogus"], "argument --methods: expected methods among base, composed"),
    (["--methods", ","], "argument --methods: expected methods among"),
])
def test_bad_options_are_refused_before_any_gpu_work(no_gpu, capsys, argv, says):
    """On a machine without a GPU too: a typo is not hidden behind 'nothing to time'."""
    with pytest.raises(SystemExit) as info:
        cli.main(["bench", *argv])
    assert info.value.code == 2 and says in capsys.readouterr().err


def test_a_pinned_tile_configuration_is_a_method():
    assert parse(["--methods", "base,warp:64x64x8/32x32/8x4"]).methods == ("base", "warp:64x64x8/32x32/8x4")


def matmul_flops(*products):
    """2·a·b·c for each (a × b)·(b × c) product."""
    return sum(2 * a * b * c for a, b, c in products)


def test_flop_counts_list_every_product():
    M, N, K, r = 3, 5, 7, 2
    forward = matmul_flops((M, K, N), (M, K, r), (M, r, N))  # x·Wᵀ, u = x·Aᵀ, u·Bᵀ
    backward = matmul_flops((M, N, r), (M, N, K), (M, r, K), (r, M, K), (N, M, r))  # v, dy·W, v·A, dA, dB
    assert bench.lora_flops(M, N, K, r, backward=False) == forward
    assert bench.lora_flops(M, N, K, r, backward=True) == forward + backward
    assert bench.base_flops(M, N, K, backward=False) == matmul_flops((M, K, N))
    assert bench.base_flops(M, N, K, backward=True) == matmul_flops((M, K, N), (M, N, K))


def record(method, device_ms, host_ms=1.0, pass_="forward", M=128, N=1024, K=512, r=16):
    return {"M": M, "N": N, "K": K, "r": r, "method": method, "pass": pass_,
            "device_ms": device_ms, "host_ms": host_ms}


def test_summarize_computes_tflops_and_ratios_per_shape_and_pass():
    records = [record("base", 2.0), record("fused", 2.2), record("peft", 4.4),
               record("base", 5.0, pass_="forward+backward"), record("fused", 6.0, pass_="forward+backward"),
               record("fused", 1.0, M=256)]  # a shape without a base timing
    rows = {(row["method"], row["pass"], row["M"]): row for row in bench.summarize(records)}

    fused = rows[("fused", "forward", 128)]
    assert fused["r_base"] == pytest.approx(1.1)
    assert fused["r_peft"] == pytest.approx(0.5)
    assert fused["tflops"] == pytest.approx(2 * 128 * (1024 * 512 + 512 * 16 + 16 * 1024) / 2.2e-3 / 1e12)
    base = rows[("base", "forward", 128)]
    assert base["r_base"] == pytest.approx(1.0)
    assert base["tflops"] == pytest.approx(2 * 128 * 1024 * 512 / 2.0e-3 / 1e12)
    both = rows[("fused", "forward+backward", 128)]
    assert both["r_base"] == pytest.approx(1.2)
    assert both["r_peft"] is None
    assert rows[("fused", "forward", 256)]["r_base"] is None
    assert fused["host_ms"] == 1.0 and fused["device_ms"] == 2.2  # the measurements are kept


def test_pivot_table_has_one_line_per_shape_and_pass():
    rows = bench.summarize([record("base", 2.0), record("fused", 2.2),
                            record("base", 5.0, pass_="forward+backward")])
    lines = bench.pivot_table(rows, "device").splitlines()
    assert lines[2] == "| M | N | K | r | pass | base | fused |"
    assert lines[4] == "| 128 | 1024 | 512 | 16 | forward | 2.000 | 2.200 (1.10x) |"
    assert lines[5] == "| 128 | 1024 | 512 | 16 | forward+backward | 5.000 | - |"
    assert len(lines) == 6


def test_headline_puts_the_fused_forward_backward_next_to_the_baselines():
    both = "forward+backward"
    rows = bench.summarize([record("base", 5.0, pass_=both), record("fused", 6.0, pass_=both),
                            record("composed", 5.5, pass_=both), record("graph", 5.25, pass_=both),
                            record("peft", 12.0, pass_=both),
                            record("fused", 1.0), record("base", 1.0, M=512, pass_=both)])
    lines = bench.headline(rows).splitlines()
    assert lines[0] == ("| M | N | K | r | fused ms | R_base | composed R_base | graph R_base | cupy R_base "
                        "| R_peft |")
    assert lines[2:] == ["| 128 | 1024 | 512 | 16 | 6.000 | 1.20x | 1.10x | 1.05x | - | 0.50x |"]


def test_results_are_written_as_json_markdown_and_png(tmp_path):
    rows = bench.summarize([record("base", 2.0), record("fused", 2.2), record("peft", 3.0),
                            record("base", 5.0, pass_="forward+backward"),
                            record("fused", 6.0, pass_="forward+backward")])
    meta = {"device": "Test GPU", "dtype": "float32", "notes": ["a note"],
            "software": {"date": "2026-01-02 03:04 UTC", "cupy": "1.2.3", "cuda_runtime": "13.0",
                         "cuda_driver": "13.1"},
            "skipped_shapes": [[8192, 1, 1, 1]]}
    bench.write_results(tmp_path, rows, meta, plot=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["lora_bench.json", "lora_bench.md", "lora_bench.png"]

    saved = json.loads((tmp_path / "lora_bench.json").read_text())
    assert saved["meta"] == meta
    assert saved["results"] == rows
    markdown = (tmp_path / "lora_bench.md").read_text()
    assert markdown.startswith("# LoRA layer benchmark: Test GPU, float32")
    assert "| 128 | 1024 | 512 | 16 | forward | 2.000 | 2.200 (1.10x) | 3.000 (1.50x) |" in markdown
    assert "R_peft" in markdown and "- a note" in markdown and "[8192, 1, 1, 1]" in markdown
    assert ("Measured 2026-01-02 03:04 UTC with CuPy 1.2.3, CUDA runtime 13.0, driver for CUDA 13.1."
            in markdown.splitlines())  # no PyTorch or PEFT: they were not timed
    assert (tmp_path / "lora_bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_methods_for_each_dtype():
    """The bf16 rungs are timed in bfloat16 beside PEFT, without the CuPy baselines (CuPy has no
    bfloat16); float64 has no tensor-core rungs; float32 everything but the bf16 rungs."""
    everything = bench.ALL_METHODS
    kept, notes = bench.methods_for("bfloat16", everything)
    assert kept == ("peft", "bf16", "wgmma") and len(notes) == 1 and "CuPy has no bfloat16" in notes[0]
    kept, notes = bench.methods_for("float64", everything)
    assert "tf32x3" not in kept and "bf16" not in kept and "wgmma" not in kept
    assert "fused" in kept and "cupy" in kept
    kept, notes = bench.methods_for("float32", everything)
    assert "tf32x3" in kept and "bf16" not in kept and "wgmma" not in kept
    assert notes == ["bf16, wgmma: timed with --dtype bfloat16, beside PEFT in bfloat16"]
    assert bench.methods_for("float32", ("fused", "base")) == (("fused", "base"), [])


def test_software_names_the_versions_the_timings_depend_on():
    """CUDA numbers its versions 1000·major + 10·minor; PyTorch and PEFT are named when timed."""
    runtime = types.SimpleNamespace(runtimeGetVersion=lambda: 12080, driverGetVersion=lambda: 13010)
    cp = types.SimpleNamespace(__version__="14.2.0", cuda=types.SimpleNamespace(runtime=runtime))
    timed = types.SimpleNamespace(cp=cp, torch=types.SimpleNamespace(__version__="2.11.0"),
                                  peft=types.SimpleNamespace(__version__="0.21.2"))
    found = bench._GpuBench.software(timed)
    assert {k: found[k] for k in ("cupy", "cuda_runtime", "cuda_driver", "torch", "peft")} == {
        "cupy": "14.2.0", "cuda_runtime": "12.8", "cuda_driver": "13.1", "torch": "2.11.0", "peft": "0.21.2"}
    assert found["date"].endswith(" UTC")
    assert "torch" not in bench._GpuBench.software(types.SimpleNamespace(cp=cp, torch=None))


class _Stream:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass


def test_a_method_that_raises_is_listed_as_failed_and_the_others_are_timed():
    """measure() goes on past a method that raises, and keeps what it says."""
    def measure_method(method, sets, scaling, reference_y, shape):
        if method == "broken":
            raise ValueError("refused at this shape")
        return [record(method, 1.0, M=shape[0])]

    pool = types.SimpleNamespace(free_all_blocks=lambda: None)
    timed = types.SimpleNamespace(
        stream=_Stream(), methods=["fused", "broken", "base"], naive_max_flops=0, notes=[], failures=[],
        torch=None, cp=types.SimpleNamespace(get_default_memory_pool=lambda: pool),
        _input_sets=lambda *shape: [{}], _callables=lambda *args: ((lambda i: ([0.0],)), None),
        _measure_method=measure_method)
    records = bench._GpuBench.measure(timed, 64, 32, 16, 4)
    assert [rec["method"] for rec in records] == ["fused", "base"]
    assert timed.failures == ["broken at M=64 N=32 K=16 r=4: ValueError: refused at this shape"]
    markdown = bench.markdown_report(bench.summarize(records),
                                     {"device": "Test GPU", "dtype": "float32", "failures": timed.failures})
    assert "- FAILED, not timed: broken at M=64 N=32 K=16 r=4: ValueError: refused at this shape" in markdown


def test_the_command_exits_1_after_a_failure_with_the_results_written(monkeypatch, capsys, tmp_path):
    class FailingBench:
        device_name, l2_bytes, peft_note = "Test GPU", 1 << 20, ""

        def __init__(self, dtype, methods, naive_max_gflop, quick):
            self.methods, self.notes, self.failures = list(methods), [], []

        def software(self):
            return {}

        def measure(self, M, N, K, r):
            self.failures.append(f"broken at M={M}: ValueError: no")
            return [record("fused", 1.0, M=M, N=N, K=K, r=r)]

    monkeypatch.setattr(cuda_kernels, "status", lambda: (True, ""))
    monkeypatch.setattr(bench, "_GpuBench", FailingBench)
    argv = ["--M", "8", "--NK", "16x16", "--r", "2", "--methods", "fused", "--out", str(tmp_path), "--no-plot"]
    assert bench.run(parse(argv)) == 1
    assert "FAILED: broken at M=8: ValueError: no" in capsys.readouterr().out
    saved = json.loads((tmp_path / "lora_bench.json").read_text())
    assert saved["meta"]["failures"] == ["broken at M=8: ValueError: no"]
    assert [row["method"] for row in saved["results"]] == ["fused"]
