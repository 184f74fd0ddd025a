"""The cuBLAS baselines of `minilora bench`: what a LoRA layer costs when built from library calls.

    base       x·Wᵀ (and dy·W in the backward): the layer without LoRA, the floor every ratio
               divides by.
    composed   the LoRA layer as cuBLAS GEMMs that accumulate in place: y = x·Wᵀ, then
               y += s·u·Bᵀ with beta = 1 (likewise dx), so no M × N temporary is written and read
               back. The best one can do from separate library calls, launched one by one.
    graph      the same GEMMs captured once into a CUDA graph and replayed: one launch for the
               whole layer, so the GPU runs the kernels back to back with no gap for the host.
               This is the bar a hand-written fused kernel has to beat to be worth writing.

Each function takes an input set ``s`` (a dict of CuPy arrays: x (M, K), W (N, K), A (r, K),
B (N, r), dy (M, N)) and ``out(name, shape)``, which gives the array that result `name` is written
into: a fresh one for eager calls (`fresh_outputs`), the same one every time for a graph
(`KeptOutputs`), because a graph replays the addresses it was captured with.
"""

import importlib


class GraphCaptureError(RuntimeError):
    """The composed layer could not be captured into a CUDA graph (the CuPy build, the driver or
    cuBLAS refused); the benchmark lists it among its failures and times the other methods."""


def gemm(*args, **kwargs):
    """cupy.cublas.gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0): out = alpha·op(a)·op(b)
    + beta·out. Every call here passes a C-contiguous `out`, which cuBLAS then writes directly;
    alpha and beta are host numbers, which a graph captures by value."""
    return importlib.import_module("cupy.cublas").gemm(*args, **kwargs)


def fresh_outputs(cp, dtype):
    """``out(name, shape)`` for eager calls: a new uninitialised array each time."""
    return lambda name, shape: cp.empty(shape, dtype)


class KeptOutputs:
    """``out(name, shape)`` that makes each named array once and hands the same one back after.

    The first (eager) call makes them; the calls captured into a graph then find them all made,
    so nothing is allocated while the stream captures (an allocation there would be freed when
    the capture ends, and the graph would write into memory that others then get)."""

    def __init__(self, cp, dtype):
        self.cp, self.dtype, self.arrays, self.frozen = cp, dtype, {}, False

    def __call__(self, name, shape):
        shape = tuple(shape)
        if name not in self.arrays:
            if self.frozen:
                raise GraphCaptureError(f"output {name!r} {shape} was not made before the capture")
            self.arrays[name] = self.cp.empty(shape, self.dtype)
        if self.arrays[name].shape != shape:
            raise GraphCaptureError(f"output {name!r}: asked for shape {shape}, "
                                    f"made as {self.arrays[name].shape}")
        return self.arrays[name]


# ---- the layers: forward and forward + backward side by side --------------------------------------
def base_forward(s, out):
    """y = x·Wᵀ (M, N)."""
    x, W = s["x"], s["W"]
    return gemm("N", "T", x, W, out=out("y", (x.shape[0], W.shape[0])))


def base_forward_backward(s, out):
    """y = x·Wᵀ (M, N) and dx = dy·W (M, K): the frozen layer's two products."""
    y = base_forward(s, out)
    dx = gemm("N", "N", s["dy"], s["W"], out=out("dx", s["x"].shape))
    return y, dx


def composed_forward(s, scaling, out):
    """u = x·Aᵀ (M, r), y = x·Wᵀ, then y += scaling·u·Bᵀ in place (beta = 1); returns (y, u)."""
    x, W, A, B = s["x"], s["W"], s["A"], s["B"]
    M, N, r = x.shape[0], W.shape[0], A.shape[0]
    u = gemm("N", "T", x, A, out=out("u", (M, r)))
    y = gemm("N", "T", x, W, out=out("y", (M, N)))
    gemm("N", "T", u, B, out=y, alpha=scaling, beta=1.0)
    return y, u


def composed_forward_backward(s, scaling, out):
    """The forward, then v = dy·B (M, r), dx = dy·W + scaling·v·A in place (M, K),
    dA = scaling·vᵀ·x (r, K), dB = scaling·dyᵀ·u (N, r); returns (dx, dA, dB)."""
    _, u = composed_forward(s, scaling, out)
    x, W, A, B, dy = s["x"], s["W"], s["A"], s["B"], s["dy"]
    v = gemm("N", "N", dy, B, out=out("v", (x.shape[0], A.shape[0])))
    dx = gemm("N", "N", dy, W, out=out("dx", x.shape))
    gemm("N", "N", v, A, out=dx, alpha=scaling, beta=1.0)
    dA = gemm("T", "N", v, x, out=out("dA", A.shape), alpha=scaling)
    dB = gemm("T", "N", dy, u, out=out("dB", B.shape), alpha=scaling)
    return dx, dA, dB


# ---- graph replay ---------------------------------------------------------------------------------
def graph_replays(cp, stream, sets, layer):
    """``replay(i)``: launches, on `stream`, a CUDA graph of ``layer(s, out)`` for input set
    ``sets[i % len(sets)]`` and returns that call's results (valid once the stream gets there).

    One graph per input set, each with its outputs (`KeptOutputs`) kept alive beside it. Before
    each capture, one eager call makes the outputs and lets cuBLAS load its kernels and make its
    workspace, which it may not do while the stream captures. Raises GraphCaptureError, with the
    cause chained, when a capture fails; the stream is then no longer capturing.
    """
    captured = []
    for s in sets:
        out = KeptOutputs(cp, s["x"].dtype)
        layer(s, out)
        stream.synchronize()
        out.frozen = True
        try:
            stream.begin_capture()
            try:
                results = layer(s, out)
            finally:
                graph = stream.end_capture()
        except GraphCaptureError:
            raise
        except Exception as error:
            raise GraphCaptureError(f"CUDA graph capture failed: {type(error).__name__}: {error}") from error
        captured.append((graph, results, out))  # out keeps alive every array the graph writes


    def replay(i):
        graph, results, _ = captured[i % len(captured)]
        graph.launch(stream)
        return results
    return replay
