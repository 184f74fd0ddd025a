"""The tutorials: each runs top to bottom as a script, and as a notebook, and is a well-formed
percent-format file.

Every tutorials/NN_*.py is run with --fast in a subprocess, the way a student runs it: a fresh
folder as the working directory, figures sent to a temporary folder ($MINILORA_FIGURES), no
screen (MPLBACKEND=Agg). The tutorials assert their own claims (counts equal the formulas, every
backend agrees with the reference, a planted bug fails its gradient check), so exit code 0 means
those checks held too. Then each is executed as a notebook, as a student opens it in Jupyter or
Colab (jupytext reads it, nbclient runs it on an IPython kernel, MINILORA_FAST=1): no cell may
fail, every figure must be drawn once in the page, and nothing may go to stderr (a progress bar
written line by line, a warning). Speed is not asserted; the timeouts only stop a run that hangs.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minilora import bench

REPO = Path(__file__).resolve().parents[1]
TUTORIAL_DIR = REPO / "tutorials"
TUTORIALS = sorted(TUTORIAL_DIR.glob("[0-9][0-9]_*.py"))
HANG_TIMEOUT_S = 600  # a fast run takes seconds; this only ends a run that hangs
SHOW_CALL = re.compile(r'show\(\s*\w+\s*,\s*"([^"]+)"\s*\)')  # show(fig, "name") with a literal name
PYPLOT_IMPORT = re.compile(r"^\s*(import matplotlib\.pyplot|from matplotlib import pyplot)", re.MULTILINE)


def run_tutorial(path, tmp_path, **env_vars):
    """Run one tutorial with --fast from an empty folder; return (completed process, figure folder)."""
    workdir, figures = tmp_path / "work", tmp_path / "figures"
    workdir.mkdir()
    env = dict(os.environ, MPLBACKEND="Agg", MINILORA_FIGURES=str(figures), **env_vars)
    env.pop("MINILORA_FAST", None)  # the --fast flag alone must switch fast mode on
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(path), "--fast"], cwd=workdir, env=env, check=False,
                          capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
    assert proc.returncode == 0, (f"{path.name} --fast exited with {proc.returncode}\n"
                                  f"--- stdout (end) ---\n{proc.stdout[-4000:]}\n"
                                  f"--- stderr (end) ---\n{proc.stderr[-4000:]}")
    return proc, figures


def cells(source):
    """[(header line, body lines)] of a percent-format file; header is '# %%' or '# %% [markdown]'."""
    result = []
    for line in source.splitlines():
        if line.startswith("# %%"):
            result.append((line.rstrip(), []))
        elif result:
            result[-1][1].append(line)
    return result


# ---- which tutorials there are -------------------------------------------------------------------
def test_the_tutorials_are_found_and_numbered_once():
    numbers = [path.name[:2] for path in TUTORIALS]
    assert {"01", "02", "03", "07", "09", "10"} <= set(numbers), [path.name for path in TUTORIALS]
    assert len(numbers) == len(set(numbers)), f"two tutorials share a number: {numbers}"


def test_the_tutorials_readme_lists_every_tutorial():
    readme = (TUTORIAL_DIR / "README.md").read_text()
    for path in TUTORIALS:
        assert re.search(rf"^\|\s*{path.name[:2]}\s*\|", readme, re.MULTILINE), (
            f"tutorials/README.md has no table row for tutorial {path.name[:2]} ({path.name})")
    assert "labs/README.md" in readme


# ---- each tutorial runs ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", TUTORIALS, ids=lambda path: path.stem)
def test_tutorial_runs_with_fast(path, tmp_path):
    _, figures = run_tutorial(path, tmp_path)
    for name in SHOW_CALL.findall(path.read_text()):
        assert (figures / f"{name}.png").is_file(), f"{path.name} did not save figure {name!r}"


# ---- each tutorial runs as a notebook --------------------------------------------------------------
@pytest.mark.parametrize("path", TUTORIALS, ids=lambda path: path.stem)
def test_tutorial_runs_as_a_notebook(path, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext", reason="install the test extra: pip install -e '.[test]'")
    nbclient = pytest.importorskip("nbclient", reason="install the test extra: pip install -e '.[test]'")
    if importlib.util.find_spec("ipykernel") is None:  # the kernel runs it; this process need not import it
        pytest.skip("ipykernel is missing: install the test extra, pip install -e '.[test]'")
    workdir, figures = tmp_path / "work", tmp_path / "figures"
    workdir.mkdir()
    for name, value in {"MINILORA_FAST": "1", "MINILORA_FIGURES": str(figures), "MPLBACKEND": "Agg",
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}.items():
        monkeypatch.setenv(name, value)  # the kernel inherits them
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(notebook, timeout=HANG_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name} failed as a notebook:\n{str(error)[-4000:]}")

    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    stderr = [output["text"] for output in outputs if output.get("name") == "stderr"]
    assert not stderr, f"{path.name}: {len(stderr)} stderr outputs in the notebook, the first: {stderr[0][:300]!r}"
    images = [output for output in outputs if output["output_type"] == "display_data" and "image/png" in output["data"]]
    saved = sorted(figures.glob("*.png"))
    assert len(images) == len(saved) > 0, f"{path.name}: {len(images)} figures drawn, {len(saved)} saved"
    for name in SHOW_CALL.findall(path.read_text()):
        assert (figures / f"{name}.png").is_file(), f"{path.name} did not save figure {name!r} as a notebook"
    printed = "".join(output["text"] for output in outputs if output.get("name") == "stdout")
    assert "figure: " not in printed, f"{path.name}: a figure's path is printed beside the figure itself"


# ---- each tutorial is a well-formed notebook -----------------------------------------------------
@pytest.mark.parametrize("path", TUTORIALS, ids=lambda path: path.stem)
def test_tutorial_is_a_well_formed_percent_notebook(path):
    source = path.read_text()
    compile(source, str(path), "exec")  # a syntax error fails here with its line
    lines = source.splitlines()
    assert lines[0] == "# %% [markdown]", f"{path.name} must start with a markdown cell"
    markers = [line for line in lines if re.match(r"#\s*%%", line)]
    malformed = [line for line in markers if line.rstrip() not in ("# %%", "# %% [markdown]")]
    assert not malformed, f"{path.name}: cell markers must be '# %%' or '# %% [markdown]', got {malformed}"
    parsed = cells(source)
    assert any(header == "# %%" for header, _ in parsed), f"{path.name} has no code cell"

    for number, (header, body) in enumerate(parsed):
        if header == "# %% [markdown]":
            stray = [line for line in body if line.strip() and not line.startswith("#")]
            assert not stray, f"{path.name}, cell {number}: markdown lines must start with '#': {stray[:3]}"
        else:
            assert any(line.strip() for line in body), f"{path.name}, cell {number}: empty code cell"

    intro = "\n".join(parsed[0][1])
    assert re.search(r"^# # \S", intro, re.MULTILINE), f"{path.name}: the first cell needs a '# # Title'"
    assert "--fast" in intro, f"{path.name}: the first cell must say how to run it (with --fast)"
    assert not PYPLOT_IMPORT.search(source), f"{path.name}: build figures with matplotlib.figure.Figure"


# ---- tutorial 07 and the recorded GPU benchmark -------------------------------------------------
def fused_kernel_tutorial():
    (path,) = [p for p in TUTORIALS if p.name.startswith("07_")]
    return path


def test_tutorial_07_says_so_when_no_gpu_results_are_recorded(tmp_path):
    empty = tmp_path / "no_results"
    empty.mkdir()
    proc, _ = run_tutorial(fused_kernel_tutorial(), tmp_path, MINILORA_BENCH_RESULTS=str(empty))
    assert f"No recorded GPU results in {empty}" in proc.stdout
    assert "bash benchmarks/gpu_check.sh" in proc.stdout


def test_tutorial_07_shows_a_recorded_benchmark(tmp_path):
    """A result file in the format `minilora bench` writes is read, tabulated and plotted. The
    timings are made up for this test and the device is named as such; the tutorial never
    invents numbers itself."""
    records = [{"M": M, "N": 64, "K": 96, "r": 4, "method": method, "pass": pass_,
                "device_ms": ms * M / 128, "host_ms": 2 * ms * M / 128, "rel_err_vs_cupy": None, "copies": 2}
               for M in (128, 512) for method, ms in (("fused", 1.25), ("composed", 1.5), ("base", 1.0))
               for pass_ in bench.PASSES]
    results = tmp_path / "results"
    meta = {"device": "made-up test device", "dtype": "float32", "l2_bytes": 1 << 20,
            "software": {"date": "2026-12-03 10:00 UTC", "cupy": "0.0-made-up"},
            "skipped_shapes": [], "notes": []}
    bench.write_results(results, bench.summarize(records), meta, plot=False)
    (results / "notes.json").write_text(json.dumps({"not": "a result"}))
    # A gpu_check.sh output folder kept as it came: its float32 run, and the bfloat16 one in bf16/.
    check_run = results / "made-up-gpu-2026-12-03"
    bench.write_results(check_run, bench.summarize(records), dict(meta, device="made-up check device"),
                        plot=False)
    bench.write_results(check_run / "bf16", bench.summarize(records), dict(meta, dtype="bfloat16"),
                        plot=False)

    proc, figures = run_tutorial(fused_kernel_tutorial(), tmp_path, MINILORA_BENCH_RESULTS=str(results))
    assert ("\nlora_bench.json: made-up test device, float32\n"
            "Measured 2026-12-03 10:00 UTC with CuPy 0.0-made-up.") in proc.stdout
    assert "made-up-gpu-2026-12-03/lora_bench.json: made-up check device, float32" in proc.stdout
    assert "made-up-gpu-2026-12-03/bf16/lora_bench.json: made-up test device, bfloat16" in proc.stdout
    assert "| 512 | 64 | 96 | 4 | 5.000 | 1.25x | 1.50x |" in proc.stdout   # fused ms, R_base, composed
    assert "notes.json: not a `minilora bench` result" in proc.stdout
    assert "No recorded GPU results" not in proc.stdout
    assert (figures / "07_gpu_benchmark_lora_bench.png").is_file()
    assert (figures / "07_gpu_benchmark_made_up_gpu_2026_12_03_bf16_lora_bench.png").is_file()
