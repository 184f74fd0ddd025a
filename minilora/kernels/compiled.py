"""The compiled fast paths of the ops around the fused one: products, layer norm, softmax, GELU.

Where it sits: ops/linear.py, ops/matmul.py, ops/norm.py, ops/softmax.py, ops/attention.py and
ops/unary.py (GELU) ask `runs(...)` whether their arrays go to minilora._C (csrc/cpu/op_*.cpp),
and otherwise run their NumPy (or CuPy) code, which stays the readable reference every compiled
twin is tested against (tests/test_cpu_ops.py). This file allocates the outputs and calls the
compiled functions; they write every element.

They run for NumPy arrays of float32 or float64 when minilora._C is built, unless the fused op's
backend is chosen as "numpy" (`kernels.use_backend("numpy")` or MINILORA_BACKEND=numpy): then the
whole model runs as NumPy code, the reference end to end.

Why the products come here too (`matmul`): one pool of threads. NumPy's matmul runs on OpenBLAS's
threads, the C++ ops on OpenMP's; OpenBLAS keeps its threads spinning for a while after each
product, so on a machine with as many threads as cores each switch between the two pools costs a
core (a LoRA training step ran slower on 2 threads than on 1). With the products on the C++ GEMM
(OpenMP, whose threads spin only briefly between ops: backend.py), a training step uses one pool.
A batch of small products (attention's, one per head) is split over the threads a product each.
On one thread there is only one pool anyway, and the products stay with NumPy (`products_here`).
"""

import numpy as np

from minilora.backend import FLOAT_DTYPES, extension_status
from minilora.kernels import cpp, dispatch


def runs(*arrays):
    """Whether the compiled ops take these arrays: NumPy arrays of one float dtype (float32 or
    float64), minilora._C built, and the fused op's backend not chosen as "numpy"."""
    first = arrays[0]
    if not all(type(a) is np.ndarray and a.dtype == first.dtype for a in arrays):
        return False
    if first.dtype not in FLOAT_DTYPES or extension_status()[0] is None:
        return False
    return dispatch.chosen_backend() != "numpy"


# Products smaller than this (m·n·k multiply-adds each) stay with NumPy: the GEMM packs its
# operands into tiles sized for large matrices, which for a product this small costs more than the
# product (a batch of 256 attention products of 9 × 32 by 32 × 9 took 8x NumPy's time, one thread).
# OpenBLAS runs products this small on the calling thread, so they start no second pool.
PRODUCT_MIN_WORK = 2 ** 16


def products_here():
    """Whether the products go to the GEMM at all: only when the C++ ops run on more than one
    thread. On one thread there is no second pool to avoid, and OpenBLAS packs small products
    faster than the GEMM does (attention's 128 × 32 by 32 × 128: about 1.5x; the layers' products
    of 2048 rows: within 10% either way), so NumPy's matmul stays."""
    return cpp.threads() > 1


def status():
    """One line for `minilora info`: do the compiled ops run for NumPy arrays, and the products?"""
    if extension_status()[0] is None:
        return "no: minilora._C is not built (the NumPy ops run)"
    if dispatch.chosen_backend() == "numpy":
        return "no: the backend is chosen as numpy (the NumPy ops run)"
    products = ("on the C++ GEMM" if products_here() else "with NumPy (one thread: see kernels/compiled.py)")
    return f"yes, layer norm, softmax, GELU on {cpp.threads()} thread(s); products {products}"


def _ext():
    return extension_status()[0]


def matmul(a, b, bias=None):
    """a @ b (+ bias on every row) on the C++ GEMM when `runs(a, b)`, each product has at least
    PRODUCT_MIN_WORK multiply-adds and `products_here()`, else with the array module's matmul.
    a (..., m, k), b (..., k, n) of any strides (transposed views are read as they are), batch
    dimensions broadcast; bias (n,) or None. Returns a fresh (..., m, n)."""
    small = a.ndim < 2 or b.ndim < 2 or a.shape[-2] * a.shape[-1] * b.shape[-1] < PRODUCT_MIN_WORK
    if small or not runs(a, b) or (bias is not None and not runs(a, bias)) or not products_here():
        out = a @ b
        if bias is not None:
            out += bias
        return out
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    m, n = a.shape[-2], b.shape[-1]
    out = np.empty(batch + (m, n), dtype=a.dtype)
    a = np.broadcast_to(a, batch + a.shape[-2:])  # a view with batch strides 0 where it repeats
    b = np.broadcast_to(b, batch + b.shape[-2:])
    bias = None if bias is None else np.ascontiguousarray(bias)
    _ext().matmul_cpu(a, b, out, bias, isa=cpp._isa_arg())
    return out


def layer_norm_forward(x, eps, weight=None, bias=None):
    """``(y, x̂, inv_std)`` of ops/norm.py's layer_norm: x (..., D) -> y = x̂ · weight + bias and
    x̂ (..., D), inv_std (..., 1); weight, bias (D,) or None (1 and 0)."""
    x = np.ascontiguousarray(x)
    y, x_hat, inv_std = np.empty_like(x), np.empty_like(x), np.empty(x.shape[:-1] + (1,), dtype=x.dtype)
    weight, bias = (None if p is None else np.ascontiguousarray(p) for p in (weight, bias))
    _ext().layer_norm_forward_cpu(x, float(eps), weight, bias, x_hat, inv_std, y)
    return y, x_hat, inv_std


def layer_norm_backward(grad, x_hat, inv_std, weight=None, want_weight=False, want_bias=False):
    """``(dx, dweight, dbias)`` of layer_norm from grad (..., D) and what the forward saved;
    dweight and dbias (D,) only when wanted, else None."""
    D = x_hat.shape[-1]
    weight = None if weight is None else np.ascontiguousarray(weight)
    dx = np.empty_like(x_hat)
    dweight = np.empty(D, dtype=x_hat.dtype) if want_weight else None
    dbias = np.empty(D, dtype=x_hat.dtype) if want_bias else None
    _ext().layer_norm_backward_cpu(np.ascontiguousarray(grad), x_hat, inv_std, weight, dx, dweight, dbias)
    return dx, dweight, dbias


def softmax_forward(x, scale=1.0, causal=False):
    """softmax(scale · x) over the last axis of x (..., n); with `causal`, row t of each trailing
    (T, n) matrix sees columns j <= t only (0 elsewhere). scale > 0."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _ext().softmax_forward_cpu(x, float(scale), bool(causal), y)
    return y


def softmax_backward(grad, y, scale=1.0):
    """dx = scale · y · (grad - Σ grad · y) over the last axis."""
    dx = np.empty_like(y)
    _ext().softmax_backward_cpu(np.ascontiguousarray(grad), y, float(scale), dx)
    return dx


def gelu_forward(x):
    """``(y, e)`` of ops/unary.py's Gelu: y = x / e, e = 1 + exp(-2z)."""
    x = np.ascontiguousarray(x)
    y, e = np.empty_like(x), np.empty_like(x)
    _ext().gelu_forward_cpu(x, y, e)
    return y, e


def gelu_backward(grad, x, e):
    """dx of Gelu from grad and the saved x and e."""
    dx = np.empty_like(x)
    _ext().gelu_backward_cpu(np.ascontiguousarray(grad), np.ascontiguousarray(x), e, dx)
    return dx
