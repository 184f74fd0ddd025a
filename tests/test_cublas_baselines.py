"""The benchmark's cuBLAS baselines (minilora.cublas_baselines) without a GPU.

cuBLAS, CuPy's arrays and CUDA graphs are stood in for by NumPy: `numpy_gemm` does what
cupy.cublas.gemm promises (out = alpha·op(a)·op(b) + beta·out, `out` ignored where beta = 0), new
arrays come filled with NaN (so an output nobody writes shows), and `CapturingStream` records the
GEMMs issued while it captures and runs them again at each launch of the graph, as a CUDA graph
replays its kernels on the addresses it was captured with. What this checks is the baselines' own
logic: the composed layer's arithmetic against the float64 reference, and that a graph replay
computes each input set's results into outputs made before the capture. How fast cuBLAS runs them
is for benchmarks/gpu_check.sh on a GPU, where the last test runs the real ones: cuBLAS through
CuPy, and a real CUDA graph capture.
"""

import types

import numpy as np
import pytest

from minilora import cublas_baselines as cb
from minilora.kernels import reference


class CapturingStream:
    """A stream that either runs work at once or, between begin_capture and end_capture, records it."""

    def __init__(self, fail_at_begin=None):
        self.recording, self.fail_at_begin = None, fail_at_begin

    def begin_capture(self):
        if self.fail_at_begin:
            raise RuntimeError(self.fail_at_begin)
        self.recording = []

    def end_capture(self):
        work, self.recording = self.recording, None
        return types.SimpleNamespace(launch=lambda stream: [step() for step in work])

    def synchronize(self):
        pass

    def submit(self, step):
        step() if self.recording is None else self.recording.append(step)


@pytest.fixture
def fake_gpu(monkeypatch):
    """(cp, stream): a NumPy stand-in for CuPy whose GEMMs go through one CapturingStream."""
    stream = CapturingStream()

    def empty(shape, dtype):
        if stream.recording is not None:
            raise AssertionError("an array was allocated while the stream captured")
        return np.full(shape, np.nan, dtype)

    def numpy_gemm(transa, transb, a, b, out, alpha=1.0, beta=0.0):
        op = {"N": lambda m: m, "T": lambda m: m.T}

        def step():
            product = alpha * (op[transa](a) @ op[transb](b))
            out[...] = product if beta == 0 else product + beta * out
        stream.submit(step)
        return out

    monkeypatch.setattr(cb, "gemm", numpy_gemm)
    return types.SimpleNamespace(empty=empty), stream


def input_set(seed, M=5, N=7, K=6, r=3):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((M, K)), "W": rng.standard_normal((N, K)),
            "A": rng.standard_normal((r, K)), "B": rng.standard_normal((N, r)),
            "dy": rng.standard_normal((M, N))}


def expected(s, scaling):
    y, u = reference.lora_forward(s["x"], s["W"], s["A"], s["B"], scaling)
    return (y, u), reference.lora_backward(s["dy"], s["x"], s["W"], s["A"], s["B"], u, scaling)


def assert_close(actual, wanted):
    assert len(actual) == len(wanted)
    for a, w in zip(actual, wanted):
        np.testing.assert_allclose(a, w, rtol=1e-12, atol=1e-12)


def test_composed_layer_matches_the_reference(fake_gpu):
    cp, _ = fake_gpu
    s, scaling = input_set(0), 1.75
    forward, backward = expected(s, scaling)
    out = cb.fresh_outputs(cp, np.float64)
    assert_close(cb.composed_forward(s, scaling, out), forward)
    assert_close(cb.composed_forward_backward(s, scaling, out), backward)


def test_base_layer_is_the_two_frozen_products(fake_gpu):
    cp, _ = fake_gpu
    s = input_set(1)
    out = cb.fresh_outputs(cp, np.float64)
    np.testing.assert_allclose(cb.base_forward(s, out), s["x"] @ s["W"].T, rtol=1e-12)
    assert_close(cb.base_forward_backward(s, out), (s["x"] @ s["W"].T, s["dy"] @ s["W"]))


def test_graph_replays_compute_each_input_sets_results(fake_gpu):
    cp, stream = fake_gpu
    sets, scaling = [input_set(seed) for seed in (2, 3, 4)], 0.5
    fwd = cb.graph_replays(cp, stream, sets, lambda s, out: cb.composed_forward(s, scaling, out))
    fwd_bwd = cb.graph_replays(cp, stream, sets, lambda s, out: cb.composed_forward_backward(s, scaling, out))
    for i in (0, 1, 2, 4):  # set i % 3
        forward, backward = expected(sets[i % 3], scaling)
        results = fwd_bwd(i)
        assert_close(results, backward)
        for array in results:
            array[...] = np.nan  # a replay recomputes them, in the same arrays
        assert_close(fwd_bwd(i), backward)
        assert_close(fwd(i), forward)


def test_graph_replay_reads_the_inputs_captured_by_address(fake_gpu):
    """As on a GPU, the graph reads the arrays it was captured with: new values there, new results."""
    cp, stream = fake_gpu
    s = input_set(5)
    replay = cb.graph_replays(cp, stream, [s], lambda s, out: cb.composed_forward(s, 2.0, out))
    s["x"][...] = input_set(6)["x"]
    assert_close(replay(0), expected(s, 2.0)[0])


def test_an_output_first_asked_for_during_capture_is_refused(fake_gpu):
    cp, stream = fake_gpu
    calls = []

    def layer(s, out):  # asks for a second output only on its second (captured) call
        calls.append(1)
        return [out(f"y{k}", (2, 2)) for k in range(len(calls))]

    with pytest.raises(cb.GraphCaptureError, match="'y1' .* was not made before the capture"):
        cb.graph_replays(cp, stream, [input_set(7)], layer)
    assert stream.recording is None  # the capture was ended


def test_a_capture_the_stream_refuses_names_the_cause(fake_gpu):
    cp, _ = fake_gpu
    stream = CapturingStream(fail_at_begin="operation not permitted when stream is capturing")
    with pytest.raises(cb.GraphCaptureError,
                       match="CUDA graph capture failed: RuntimeError: operation") as info:
        cb.graph_replays(cp, stream, [input_set(8)], lambda s, out: cb.base_forward(s, out))
    assert isinstance(info.value.__cause__, RuntimeError)


def test_kept_outputs_refuse_a_name_asked_for_with_another_shape():
    out = cb.KeptOutputs(types.SimpleNamespace(empty=np.empty), np.float32)
    first = out("y", (3, 4))
    assert out("y", [3, 4]) is first
    with pytest.raises(cb.GraphCaptureError, match=r"'y': asked for shape \(4, 3\), made as \(3, 4\)"):
        out("y", (4, 3))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_on_a_gpu_cublas_and_a_real_graph_replay_match_the_reference(cuda_device, dtype):
    import cupy

    rng = np.random.default_rng(9)
    sets = [input_set(seed, M=37, N=29, K=45, r=5) for seed in (10, 11)]
    on_gpu = [{name: cupy.asarray(array, dtype=dtype) for name, array in s.items()} for s in sets]
    tolerance = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    scaling = float(rng.uniform(0.5, 2.0))
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        fwd_bwd = cb.graph_replays(cupy, stream, on_gpu,
                                   lambda s, out: cb.composed_forward_backward(s, scaling, out))
        eager = cb.fresh_outputs(cupy, dtype)
        for i, s in enumerate(sets):
            (y, u), backward = expected(s, scaling)
            for got in (fwd_bwd(i), cb.composed_forward_backward(on_gpu[i], scaling, eager)):
                stream.synchronize()
                for a, w in zip(got, backward):
                    np.testing.assert_allclose(cupy.asnumpy(a), w, **tolerance)
            np.testing.assert_allclose(cupy.asnumpy(cb.composed_forward(on_gpu[i], scaling, eager)[0]),
                                       y, **tolerance)
