"""minilora/memory.py: malloc's thresholds raised once the compiled ops load, unless the user chose.

Each case runs in a fresh interpreter, since the thresholds are per process and set once."""

import subprocess
import sys

import pytest

CHOICES = ("MINILORA_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
STATUS = "from minilora import memory; print(memory.reuse_freed_memory())"
# Like a training step: some fifty MB of arrays of a few MB each, alive together, then freed; the
# page faults of ten more such steps after a first one.
STEP_FAULTS = ("import resource, numpy as np\n"
               "from minilora import memory\n"
               "memory.reuse_freed_memory()\n"
               "def step(): arrays = [np.ones(n, np.float32) for n in (2**21, 2**19, 2**20, 2**21, 2**20) * 2]\n"
               "step()\n"
               "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
               "for _ in range(10): step()\n"
               "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)")


def run_in_new_process(code, env, monkeypatch):
    """What `code` prints, run by a fresh interpreter with exactly the choices in `env` set."""
    for name in CHOICES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_thresholds_are_raised_on_glibc(monkeypatch):
    assert run_in_new_process(STATUS, {}, monkeypatch).startswith("freed arrays up to 64 MiB reused")


def test_the_user_s_choice_wins(monkeypatch):
    assert run_in_new_process(STATUS, {"MINILORA_MALLOC": "default"}, monkeypatch) == \
        "glibc's defaults (MINILORA_MALLOC=default)"
    assert run_in_new_process(STATUS, {"MALLOC_TRIM_THRESHOLD_": "131072"}, monkeypatch) == \
        "as set by MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_a_step_s_arrays_made_again_need_no_fresh_pages(monkeypatch):
    """With the thresholds raised the later steps reuse the pages of the first; with glibc's
    defaults the freed top of the heap goes back to the kernel and every step faults its pages in
    again (some thousands of 4 KiB a step)."""
    assert int(run_in_new_process(STEP_FAULTS, {}, monkeypatch)) < 500
    assert int(run_in_new_process(STEP_FAULTS, {"MINILORA_MALLOC": "default"}, monkeypatch)) > 10 * 2000
