"""Build minilora's compiled extension minilora._C with CMake (see CMakeLists.txt).

The package metadata is in pyproject.toml; this file only teaches setuptools to run CMake, the
standard pybind11 way: configure into a temporary build folder, build, and put the module next to
the Python files (in minilora/ for an editable install, in the wheel otherwise).

Environment variables:
    MINILORA_CUDA        unset: build the CUDA kernels when a CUDA compiler (nvcc) is found;
                         0: CPU only; 1: CUDA required (a clear error when there is no nvcc).
    MINILORA_CUDA_ARCHS  CUDA architectures, as CMake's CUDA_ARCHITECTURES ("native", "86",
                         "75;80"); default: SASS for 7.5, 8.0, 8.6, 8.9 and 9.0 plus PTX for 9.0.
    CMAKE_BUILD_PARALLEL_LEVEL  parallel compile jobs (default: one per CPU core).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CUDA_CHOICES = {None: "AUTO", "": "AUTO", "0": "OFF", "1": "ON"}


class CMakeExtension(Extension):
    """An extension built by CMake from a source folder, not by setuptools from a list of files."""

    def __init__(self, name, sourcedir=""):
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        # setuptools tells us where the module must land (minilora/ for `pip install -e .`).
        ext_dir = (Path.cwd() / self.get_ext_fullpath(ext.name)).parent.resolve()
        build_dir = Path(self.build_temp) / ext.name
        build_dir.mkdir(parents=True, exist_ok=True)

        cuda = os.environ.get("MINILORA_CUDA")
        if cuda not in CUDA_CHOICES:
            raise RuntimeError(f"MINILORA_CUDA must be unset, 0 or 1, got {cuda!r}")

        config = "Debug" if self.debug else "Release"
        configure = [
            "cmake", ext.sourcedir,
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={ext_dir}{os.sep}",
            # Multi-configuration generators (Visual Studio) add a folder per configuration.
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY_{config.upper()}={ext_dir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={_pybind11_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={config}",
            f"-DMINILORA_CUDA={CUDA_CHOICES[cuda]}",
        ]
        archs = os.environ.get("MINILORA_CUDA_ARCHS")
        if archs:
            configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={archs}")
        # Ninja builds in parallel out of the box; Visual Studio needs no help (and Ninja there needs
        # a developer prompt).
        if sys.platform != "win32" and shutil.which("ninja") and "CMAKE_GENERATOR" not in os.environ:
            configure += ["-G", "Ninja"]

        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        subprocess.run(configure, cwd=build_dir, check=True)
        subprocess.run(["cmake", "--build", ".", "--config", config, "--parallel", jobs], cwd=build_dir,
                       check=True)


def _pybind11_cmake_dir():
    try:
        import pybind11
    except ImportError as exc:
        raise RuntimeError("building minilora needs pybind11: pip install pybind11 "
                           "(pip installs it by itself unless --no-build-isolation is given)") from exc
    return pybind11.get_cmake_dir()


setup(ext_modules=[CMakeExtension("minilora._C")], cmdclass={"build_ext": CMakeBuild})
