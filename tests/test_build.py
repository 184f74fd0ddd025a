"""The compiled extension minilora._C: it is built and imports, its `with_cuda` flag matches what it
contains, and the package still works, on NumPy alone, when the extension is missing."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minilora
from minilora import F, backend, info, kernels

ROOT = Path(__file__).resolve().parents[1]
CUDA_FUNCTIONS = ("cuda_device_status", "lora_workspace_size", "lora_forward_cuda", "lora_backward_cuda")


def test_extension_is_built_and_imports():
    ext, reason = backend.extension_status()
    assert ext is not None, f"{reason}; build it with: pip install -e ."
    assert ext.cpu_threads() >= 1


def test_with_cuda_flag_matches_the_functions_it_has():
    ext, reason = backend.extension_status()
    assert ext is not None, reason
    assert isinstance(ext.with_cuda, bool)
    for name in CUDA_FUNCTIONS:
        assert hasattr(ext, name) == ext.with_cuda, f"with_cuda={ext.with_cuda} but {name} is (not) there"
    if ext.with_cuda:
        count, error = ext.cuda_device_status()
        assert isinstance(count, int) and isinstance(error, str)
        assert count > 0 or error, "no device, and no reason given"


def test_cuda_option_of_the_build_agrees_with_what_it_contains():
    """MINILORA_CUDA=1 (ON) fails the build without nvcc, and =0 (OFF) leaves CUDA out."""
    ext, reason = backend.extension_status()
    assert ext is not None, reason
    assert ext.cuda_option in ("AUTO", "ON", "OFF")
    if ext.cuda_option == "ON":
        assert ext.with_cuda
    if ext.cuda_option == "OFF":
        assert not ext.with_cuda


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("ldd") is None,
                    reason="checks the linked libraries with ldd (Linux)")
def test_cuda_runtime_is_linked_statically():
    ext, reason = backend.extension_status()
    assert ext is not None, reason
    if not ext.with_cuda:
        pytest.skip("minilora._C is built without CUDA: there is no CUDA runtime to link")
    libraries = subprocess.run(["ldd", ext.__file__], capture_output=True, text=True, check=True).stdout
    assert "libcudart" not in libraries, libraries


@pytest.fixture
def without_extension(monkeypatch):
    """Make `import minilora._C` fail, as on a machine where it was never built."""
    monkeypatch.setattr(backend, "_extension", None)
    monkeypatch.setattr(backend, "_extension_error", None)
    monkeypatch.setitem(sys.modules, "minilora._C", None)  # import of a None entry raises ImportError


def test_package_runs_on_numpy_without_the_extension(without_extension, rng, monkeypatch):
    monkeypatch.delenv("MINILORA_BACKEND", raising=False)
    ext, reason = backend.extension_status()
    assert ext is None and reason.startswith("minilora._C is not importable (ModuleNotFoundError")
    assert kernels.default_backend("cpu") == "numpy"
    assert kernels.available_backends()[:1] == ("numpy",) and "cpp" not in kernels.available_backends()
    usable, why = kernels.backend_status("cpp")
    assert not usable and why == reason
    assert not kernels.backend_status("cuda")[0] and reason in kernels.backend_status("cuda")[1]

    shapes = ((3, 4), (5, 4), (2, 4), (5, 2))
    x, W, A, B = (minilora.tensor(rng.standard_normal(s), requires_grad=True) for s in shapes)
    y = F.lora_linear(x, W, A, B, 2.0)
    xs, Ws, As, Bs = (t.numpy() for t in (x, W, A, B))
    np.testing.assert_allclose(y.numpy(), xs @ Ws.T + 2.0 * xs @ As.T @ Bs.T, rtol=1e-12, atol=1e-12)
    y.sum().backward()
    assert A.grad.shape == (2, 4) and B.grad.shape == (5, 2)

    with pytest.raises(RuntimeError, match=r"backend 'cpp' \(from backend=\) is not available here: "
                                           r"minilora._C is not importable"):
        kernels.lora_forward(x.data, W.data, A.data, B.data, 1.0, backend="cpp")
    report = "\n".join(info.report_lines())
    assert "extension  not built: minilora._C is not importable" in report
    assert "  cpp    no   minilora._C is not importable" in report


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not on PATH")
def test_asking_for_cuda_without_nvcc_is_a_clear_configure_error(tmp_path):
    pybind11 = pytest.importorskip("pybind11", reason="configuring needs pybind11's CMake files")
    # A PATH with the C++ compiler and cmake but without any CUDA compiler.
    path = ":".join(d for d in ("/usr/bin", "/bin", str(Path(shutil.which("cmake")).parent))
                    if not (Path(d) / "nvcc").exists())
    env = {"PATH": path, "HOME": str(tmp_path)}
    configure = ["cmake", str(ROOT), "-DMINILORA_CUDA=ON", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
                 f"-DPython_EXECUTABLE={sys.executable}"]
    result = subprocess.run(configure, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "MINILORA_CUDA=1 asks for the CUDA kernels, but no CUDA compiler (nvcc) was found" in \
        " ".join(result.stderr.split()), result.stderr
