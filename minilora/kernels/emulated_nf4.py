"""The CUDA "nf4" rung (csrc/cuda/lora_nf4.cu: W in NF4, dequantized by the tile loader) run on the
CPU emulator (minilora.kernels.emulated), and the check every emulated NF4 case goes through.

    from minilora.kernels import emulated, emulated_nf4
    emulator = emulated.load()
    y, u = emulated_nf4.forward(emulator, x, W, A, B, scaling, bias)    # W an NF4Tensor (N, K)
    dx, dA, dB = emulated_nf4.backward(emulator, dy, x, W, A, B, u, scaling, shuffle=7)

As for the other rungs: outputs and workspace start as NaN inside NaN guard zones, and the inputs,
the packed bytes, the absmaxes and the 16 levels included, sit inside guard zones too (a read past
the absmaxes or the levels brings NaN in; a write into any input raises EmulationError).
"""

import ctypes

import numpy as np

from minilora.kernels import checks, emulated, nf4, nf4_check

_P, _I64, _MSG = ctypes.c_void_p, ctypes.c_int64, (ctypes.c_char_p, ctypes.c_size_t)
_FORWARD_ARGS = [ctypes.c_int, *[_P] * 4, ctypes.c_int, *[_P] * 6, _I64, _I64, _I64, _I64, _I64,
                 ctypes.c_double, *_MSG]
_BACKWARD_ARGS = [ctypes.c_int, *[_P] * 5, ctypes.c_int, *[_P] * 7, _I64, _I64, _I64, _I64, _I64,
                  ctypes.c_double, *_MSG]


def _entry(emulator, name, argtypes):
    function = getattr(emulator._lib, name)
    function.argtypes = argtypes
    return function


def _weight(W, dtype):
    """The NF4 operands (packed, absmax, code) as guarded inputs, and block_size."""
    packed, absmax, code = nf4.operands(W)
    return [emulated._Guarded(a.shape, a.dtype, a) for a in (packed, absmax, code)], W.block_size


def _sizes(named, W, bias=None):
    dtype, _ = checks.check_arrays(named, device="cpu")
    checks.expect_2d("x", named["x"], "(M, K)")
    M, K, N, r = checks.lora_sizes(named["x"], W, named["A"], named["B"], bias)
    return dtype, M, K, N, r


def forward(emulator, x, W, A, B, scaling, bias=None, shuffle=None):
    """``(y, u)`` of the LoRA forward on the nf4 rung; W an NF4Tensor (N, K), the rest as
    minilora.kernels.lora_forward takes them (2-D x)."""
    named = {"x": x, "A": A, "B": B} | ({} if bias is None else {"bias": bias})
    dtype, M, K, N, r = _sizes(named, W, bias)
    scaling = checks.check_scaling(scaling, dtype)
    inputs = {name: emulated._Guarded(a.shape, dtype, a) for name, a in named.items()}
    weight, block_size = _weight(W, dtype)
    y, u = emulated._Guarded((M, N), dtype), emulated._Guarded((M, r), dtype)
    size = emulator.workspace_size(nf4.VARIANT, dtype, M, N, K, r, False)
    workspace = emulated._Guarded((size,), dtype)
    function = _entry(emulator, "minilora_emulated_forward_nf4", _FORWARD_ARGS)
    with emulator._one_at_a_time:
        emulator._schedule(shuffle)
        emulator._call(function, emulated._is_float64(dtype), inputs["x"].pointer,
                       *(g.pointer for g in weight), block_size, inputs["A"].pointer, inputs["B"].pointer,
                       inputs["bias"].pointer if bias is not None else None, y.pointer, u.pointer,
                       workspace.pointer, size, M, N, K, r, scaling)
    emulator._check_damage({**inputs, **dict(zip(("W.packed", "W.absmax", "W.code"), weight)),
                            "y": y, "u": u, "workspace": workspace})
    return y.array, u.array


def backward(emulator, dy, x, W, A, B, u, scaling, shuffle=None):
    """``(dx, dA, dB)`` of the LoRA backward on the nf4 rung (2-D arrays, W an NF4Tensor)."""
    named = {"dy": dy, "x": x, "A": A, "B": B, "u": u}
    dtype, M, K, N, r = _sizes(named, W)
    checks.check_backward_shapes(dy, x, u, N, r)
    scaling = checks.check_scaling(scaling, dtype)
    inputs = {name: emulated._Guarded(a.shape, dtype, a) for name, a in named.items()}
    weight, block_size = _weight(W, dtype)
    outputs = {name: emulated._Guarded(shape, dtype) for name, shape in
               (("dx", (M, K)), ("dA", (r, K)), ("dB", (N, r)))}
    size = emulator.workspace_size(nf4.VARIANT, dtype, M, N, K, r, True)
    workspace = emulated._Guarded((size,), dtype)
    function = _entry(emulator, "minilora_emulated_backward_nf4", _BACKWARD_ARGS)
    with emulator._one_at_a_time:
        emulator._schedule(shuffle)
        emulator._call(function, emulated._is_float64(dtype), inputs["dy"].pointer, inputs["x"].pointer,
                       *(g.pointer for g in weight), block_size, inputs["A"].pointer, inputs["B"].pointer,
                       inputs["u"].pointer, *(g.pointer for g in outputs.values()), workspace.pointer,
                       size, M, N, K, r, scaling)
    emulator._check_damage({**inputs, **dict(zip(("W.packed", "W.absmax", "W.code"), weight)),
                            **outputs, "workspace": workspace})
    return tuple(g.array for g in outputs.values())


def check_layer(emulator, dtype, M, N, K, r, rng, block_size=64, double_quant=True, seed=0, bias=True):
    """emulated.check_layer for the nf4 rung: a random layer with W in NF4 (nf4_check), forward and
    backward in index order and shuffled with `seed`; what is wrong, one line each ([] if nothing)."""
    a, s, expected = nf4_check.random_layer(rng, M, N, K, r, dtype, block_size, double_quant, bias)
    failures, runs = [], []
    for shuffle in (None, seed):
        order = "in order" if shuffle is None else f"shuffled (seed {seed})"
        try:
            y, u = forward(emulator, a["x"], a["W"], a["A"], a["B"], s, a.get("bias"), shuffle)
            grads = backward(emulator, a["dy"], a["x"], a["W"], a["A"], a["B"], a["u"], s, shuffle)
        except emulated.EmulationError as exc:
            failures.append(f"{order}: {exc}")
            continue
        runs.append((order, dict(zip(nf4_check.NAMES, (y, u) + grads))))
    if runs:
        failures += [f"{runs[0][0]}: {line}" for line in nf4_check.failures(runs[0][1], expected)]
    if len(runs) == 2:
        for name in nf4_check.NAMES:
            first, second = runs[0][1][name], runs[1][1][name]
            if not np.array_equal(first.view(np.uint8), second.view(np.uint8)):
                failures.append(f"{name} differs between {runs[0][0]} and {runs[1][0]}: "
                                f"{int((first != second).sum())} elements (a race between threads or blocks)")
    return failures
