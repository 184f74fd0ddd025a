"""Checking a path of the fused op that takes W in NF4: a random layer, its float64 reference and
the rounding bounds every output must stay within.

Where it sits: the tests of the C++ op (tests/test_quant_kernels.py), of the CUDA "nf4" rung on the
emulator (minilora/kernels/emulated_nf4.py) and on a GPU use these, so every NF4 path is held to
the same reference: the float64 products on Ŵ = W.dequantize(), which is exact in float64 (levels
and absmaxes are float32), so a path that dequantizes correctly differs from it by the rounding of
its sums only (minilora/kernels/accuracy.py), and one that reads a wrong nibble or a wrong
block's absmax is off by a whole level.
"""

import numpy as np

from minilora.kernels import accuracy, reference
from minilora.quant.nf4 import nf4_quantize

NAMES = ("y", "u", "dx", "dA", "dB")


def random_layer(rng, M, N, K, r, dtype, block_size=64, double_quant=True, bias=True):
    """``(arrays, scaling, expected)``: arrays {x, W, A, B, dy, u, bias} in `dtype` with W an
    NF4Tensor (N, K) and u = x·Aᵀ rounded to dtype (the backward's input, so that its error is its
    own); expected {name: (float64 reference, bound)} for y, u, dx, dA, dB."""
    shapes = {"x": (M, K), "W": (N, K), "A": (r, K), "B": (N, r), "dy": (M, N)} | ({"bias": (N,)} if bias else {})
    h = {name: rng.standard_normal(shape).astype(dtype).astype(np.float64) for name, shape in shapes.items()}
    s = float(np.float32(rng.uniform(0.5, 4.0)))
    W = nf4_quantize(h["W"].astype(dtype), block_size, double_quant)
    h["W"] = W.dequantize(np.float64)
    y, u = reference.lora_forward(h["x"], h["W"], h["A"], h["B"], s, h.get("bias"))
    u_in = u.astype(dtype)
    grads = reference.lora_backward(h["dy"], h["x"], h["W"], h["A"], h["B"], u_in.astype(np.float64), s)
    bounds = (accuracy.forward_bounds(h["x"], h["W"], h["A"], h["B"], s, h.get("bias"), dtype) +
              accuracy.backward_bounds(h["dy"], h["x"], h["W"], h["A"], h["B"], u_in, s, dtype))
    arrays = {name: a.astype(dtype) for name, a in h.items() if name != "W"} | {"W": W, "u": u_in}
    return arrays, s, dict(zip(NAMES, zip((y, u) + grads, bounds)))


def failures(outputs, expected):
    """One line for each of `outputs` ({name: array}, some of NAMES) outside its bound; [] if none."""
    found = (accuracy.check(name, out, *expected[name]) for name, out in outputs.items())
    return [line for line in found if line]
