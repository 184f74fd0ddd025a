"""minilora/memory.py: malloc's thresholds raised once the compiled ops load, unless the user chose.

Each case runs in a fresh interpreter, since the thresholds are per process and set once."""

import subprocess
import sys

import pytest

STATUS = "from minilora import memory; print(memory.reuse_freed_memory())"


def status_in_new_process(env_changes, monkeypatch):
    for name, value in env_changes.items():
        monkeypatch.setenv(name, value)
    for name in ("MINILORA_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        if name not in env_changes:
            monkeypatch.delenv(name, raising=False)
    done = subprocess.run([sys.executable, "-c", STATUS], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_thresholds_are_raised_on_glibc(monkeypatch):
    assert status_in_new_process({}, monkeypatch).startswith("freed arrays up to 64 MiB reused")


def test_the_user_s_choice_wins(monkeypatch):
    assert status_in_new_process({"MINILORA_MALLOC": "default"}, monkeypatch) == \
        "glibc's defaults (MINILORA_MALLOC=default)"
    assert status_in_new_process({"MALLOC_TRIM_THRESHOLD_": "131072"}, monkeypatch) == \
        "as set by MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_a_step_s_arrays_made_again_need_no_fresh_pages(monkeypatch):
    """Like a training step: some fifty MB of arrays of a few MB each, alive together, then freed,
    ten times over. With the thresholds raised the later steps reuse the pages of the first; with
    glibc's defaults the freed top of the heap goes back to the kernel and every step faults its
    pages in again (some thousands of 4 KiB a step)."""
    probe = ("import resource, numpy as np\n"
             "from minilora import memory\n"
             "memory.reuse_freed_memory()\n"
             "def step(): arrays = [np.ones(n, np.float32) for n in (2**21, 2**19, 2**20, 2**21, 2**20) * 2]\n"
             "step()\n"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
             "for _ in range(10): step()\n"
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)")

    def faults(env):
        for name in ("MINILORA_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        return int(done.stdout)

    assert faults({}) < 500
    assert faults({"MINILORA_MALLOC": "default"}) > 10 * 2000
