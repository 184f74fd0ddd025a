"""Fixtures shared by the tests: the `device` parameter and fresh random float64 tensors.

Every test that takes `device` (or `make`, which uses it) runs once on "cpu" and once on "cuda";
the cuda run is marked `gpu` and skipped, with the reason, where CuPy sees no usable GPU.
Random inputs are fresh on every run; the seed is printed, so a failing run shows it, and setting
MINILORA_TEST_SEED=<seed> repeats that run exactly.
Float64 comparisons give an absolute tolerance next to the relative one (rtol=1e-12, atol=1e-12):
two correct ways of summing the same products differ by rounding, and on an element that happens
to lie near zero that rounding is a large relative error. A wrong result is off by far more.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import minilora
from minilora import backend

# No deadline: the machine is shared and timing says nothing about correctness. No example database
# written into the tree: a failing example is printed, with the seed it drew, instead. Property tests
# may take the `device` fixture: it is a plain string, safe to share between examples.
settings.register_profile("minilora", deadline=None, database=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile("minilora")

CUDA_USABLE, CUDA_REASON = backend.cuda_status()
needs_cuda = pytest.mark.skipif(not CUDA_USABLE, reason=f"no usable GPU: {CUDA_REASON}")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda])])
def device(request):
    return request.param


@pytest.fixture
def cuda_device():
    """For tests that need a GPU on top of the CPU (moving between devices); mark them `gpu`."""
    if not CUDA_USABLE:
        pytest.skip(f"no usable GPU: {CUDA_REASON}")
    return "cuda"


@pytest.fixture
def rng():
    """A NumPy generator with a fresh seed, printed so that a failure can be repeated."""
    seed = int(os.environ.get("MINILORA_TEST_SEED", np.random.SeedSequence().entropy % 2**32))
    print(f"random seed: {seed} (rerun with MINILORA_TEST_SEED={seed})")
    return np.random.default_rng(seed)


class TensorMaker:
    """Random float64 tensors on one device. Values are never zero, so a gradient that should be
    non-zero cannot pass by accident."""

    def __init__(self, rng, device):
        self.rng = rng
        self.device = device

    def _tensor(self, array, requires_grad):
        return minilora.tensor(array, requires_grad=requires_grad, device=self.device)

    def randn(self, *shape, requires_grad=True):
        """Standard normal values."""
        return self._tensor(self.rng.standard_normal(shape), requires_grad)

    def positive(self, *shape, requires_grad=True):
        """Values in [0.5, 2): inside the domain of log, away from its pole."""
        return self._tensor(self.rng.uniform(0.5, 2.0, shape), requires_grad)

    def away_from_zero(self, *shape, requires_grad=True):
        """|values| in [0.2, 2): a central difference never straddles relu's kink at 0."""
        sign = self.rng.choice([-1.0, 1.0], size=shape)
        return self._tensor(sign * self.rng.uniform(0.2, 2.0, shape), requires_grad)

    def distinct(self, *shape, requires_grad=True):
        """A shuffled grid of values at least 0.1 apart: no two are tied or nearly tied (for max)."""
        size = int(np.prod(shape))
        values = (self.rng.permutation(size) - size / 2) * 0.1 + self.rng.uniform(0, 0.01)
        return self._tensor(values.reshape(shape), requires_grad)

    def ints(self, high, *shape):
        """Integers in [0, high), int64."""
        return minilora.tensor(self.rng.integers(0, high, size=shape), device=self.device)


@pytest.fixture
def make(rng, device):
    return TensorMaker(rng, device)


@pytest.fixture
def calls(monkeypatch):
    """Record the name of every backend of the fused LoRA op whose forward or backward runs."""
    from minilora.kernels import dispatch
    seen = []
    for table in (dispatch._FORWARD, dispatch._BACKWARD):
        for name, fn in list(table.items()):
            def spy(*args, _name=name, _fn=fn):
                seen.append(_name)
                return _fn(*args)
            monkeypatch.setitem(table, name, spy)
    monkeypatch.delenv("MINILORA_BACKEND", raising=False)
    return seen


def pytest_terminal_summary(terminalreporter, config):
    """The fuzz and tampering tests' counts of outcomes, when they ran (fuzz_support.py): the totals,
    and with -v a row per entry point and per kind of damage."""
    import sys
    support = sys.modules.get("fuzz_support")
    tables = support.outcome_tables(full=config.getoption("verbose") > 0) if support is not None else ""
    if tables:
        terminalreporter.write_sep("-", "fuzz and tampering outcomes")
        terminalreporter.write(tables)


@pytest.fixture(scope="session")
def emulator():
    """The CUDA kernel ladder on the CPU (minilora.kernels.emulated), built once from this checkout;
    skipped with the reason where there is no C++ compiler or no source checkout."""
    from minilora.kernels import emulated

    try:
        return emulated.load()
    except emulated.EmulatorUnavailable as exc:
        pytest.skip(str(exc))
