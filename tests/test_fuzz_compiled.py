"""Fuzzing what reaches minilora._C (the fused op on the "cpp" backend, its out= buffers,
F.lora_linear and LoRALinear) with hypothesis (see fuzz_support.py for the rules), in a subprocess:
`python tests/test_fuzz_compiled.py` runs the groups below, so a crash in compiled code fails
test_calls_into_compiled_code_in_a_subprocess instead of ending the test run."""

import json
import os
import subprocess
import sys

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import minilora
from minilora import F, lora, nn
from minilora.kernels import available_backends, lora_backward, lora_forward
from fuzz_support import BAD_NUMBERS, EXAMPLES, FUZZ, INF, NAN, OUTCOMES, assert_close, dtypes, run_case, spoil

# ---- everything that reaches minilora._C: in a subprocess ----------------------------------------
def reference_forward(x, W, A, B, s, bias):
    x, W, A, B = (np.asarray(a, dtype=np.float64) for a in (x, W, A, B))
    u = x @ A.T
    return x @ W.T + s * (u @ B.T) + (0 if bias is None else bias), u


@FUZZ
@given(data=st.data())
def compiled_lora_kernels(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    M, K, N, r = (data.draw(st.sampled_from(v)) for v in ([0, 1, 3, 7], [1, 3, 8], [1, 5, 6], [1, 2, 4]))
    lead = data.draw(st.sampled_from([(M,), (1, M), (M, 1)]))
    dtype = data.draw(dtypes)
    backend_name = data.draw(st.sampled_from([b for b in ("numpy", "cpp") if b in available_backends()]))
    arrays = {"x": rng.standard_normal(lead + (K,)), "W": rng.standard_normal((N, K)),
              "A": rng.standard_normal((r, K)), "B": rng.standard_normal((N, r)), "bias": rng.standard_normal(N)}
    arrays = {k: v.astype(dtype) for k, v in arrays.items()}
    other = "float64" if dtype == "float32" else "float32"
    pools = {name: [a.astype(other), a.astype(np.float16), a.astype(np.int64), a.tolist(),
                    np.concatenate([a, a], axis=-1)] for name, a in arrays.items()}
    pools["scaling"] = BAD_NUMBERS + ([1e300, -1e39] if dtype == "float32" else [])
    bad, value = spoil(data.draw, pools)
    scaling = data.draw(st.sampled_from([0.0, 0.5, 2.0, -3.0]))
    args = {**arrays, "scaling": scaling, **({bad: value} if bad else {})}
    names = {"x": ["x", "W", "A"], "bias": ["bias"]}.get(bad)

    def forward():
        return lora_forward(args["x"], args["W"], args["A"], args["B"], args["scaling"], args["bias"],
                            backend=backend_name)

    def check(result):
        y, u = result
        expected_y, expected_u = reference_forward(arrays["x"], arrays["W"], arrays["A"], arrays["B"], scaling,
                                                   arrays["bias"].astype(np.float64))
        assert y.dtype == np.dtype(dtype)
        assert_close(y, expected_y, dtype)
        assert_close(u, expected_u, dtype)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx, dA, dB = lora_backward(dy, arrays["x"], arrays["W"], arrays["A"], arrays["B"], u, scaling,
                                   backend=backend_name)
        x64, W64, A64, B64, dy64 = (a.astype(np.float64).reshape(-1, a.shape[-1])
                                    for a in (arrays["x"], arrays["W"], arrays["A"], arrays["B"], dy))
        v = dy64 @ B64
        assert_close(dx.reshape(-1, K), dy64 @ W64 + scaling * (v @ A64), dtype)
        assert_close(dA, scaling * (v.T @ x64), dtype)
        assert_close(dB, scaling * (dy64.T @ (x64 @ A64.T)), dtype)

    run_case(f"kernels.lora_forward/backward ({backend_name})", forward, bad, names=names, check=check)


@FUZZ
@given(data=st.data())
def compiled_cpp_out_buffers(data):
    from minilora.kernels import cpp
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    M, K, N, r = 3, 5, 4, 2
    dtype = data.draw(dtypes)
    x, W, A, B = (rng.standard_normal(s).astype(dtype) for s in ((M, K), (N, K), (r, K), (N, r)))
    y, u = np.full((M, N), np.nan, dtype=dtype), np.full((M, r), np.nan, dtype=dtype)
    read_only = y.copy()
    read_only.flags.writeable = False
    bad, value = spoil(data.draw, {
        "y": [x.reshape(-1)[: M * N].reshape(M, N), np.empty((M, N + 1), dtype=dtype), read_only,
              np.empty((M, N), dtype=np.float16), np.empty((N, M), dtype=dtype).T, [[0.0] * N] * M],
        "u": [y.reshape(-1)[: M * r].reshape(M, r), W.reshape(-1)[: M * r].reshape(M, r), np.empty(M * r, dtype=dtype)],
        "out": [(y,), (y, u, u), y, "yu"]})
    out = value if bad == "out" else ((value, u) if bad == "y" else (y, value) if bad == "u" else (y, u))
    names = {"y": ["y", "out"], "u": ["u", "out"], "out": ["out"]}.get(bad)

    def check(result):
        assert result[0] is y and result[1] is u
        expected_y, expected_u = reference_forward(x, W, A, B, 1.5, None)
        assert_close(y, expected_y, dtype)
        assert_close(u, expected_u, dtype)

    run_case("kernels.cpp.forward(out=)", lambda: cpp.forward(x, W, A, B, 1.5, out=out), bad, names=names,
             check=check)


@FUZZ
@given(data=st.data())
def compiled_lora_layer_and_op(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n_in, n_out = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    rows = data.draw(st.sampled_from([0, 1, 4]))
    dtype = data.draw(dtypes)
    r = data.draw(st.integers(1, min(n_in, n_out)))
    kind = data.draw(st.sampled_from(["LoRALinear", "F.lora_linear"]))
    x_np = rng.standard_normal((rows, n_in)).astype(dtype)
    if kind == "LoRALinear":
        alpha = data.draw(st.sampled_from([1, 8.0]))
        bad, value = spoil(data.draw, {"r": [0, min(n_in, n_out) + 1, 2.5, "2", True],  # None: no adapter yet
                                       "alpha": [0, -1.0, NAN, INF, None, "8"], "dropout": [1.0, NAN, -0.5],
                                       "base": [None, nn.LayerNorm(3)]})
        base = value if bad == "base" else nn.Linear(n_in, n_out).to(dtype=dtype)
        kwargs = {"r": r, "alpha": alpha, "dropout": 0.0, **({bad: value} if bad and bad != "base" else {})}

        def check(layer):
            layer.lora_B.data[...] = rng.standard_normal((n_out, r)).astype(dtype)
            W, b = layer.weight.numpy(), layer.bias.numpy()
            expected, _ = reference_forward(x_np, W, layer.lora_A.numpy(), layer.lora_B.numpy(), alpha / r, b)
            assert_close(layer(minilora.tensor(x_np)).numpy(), expected, dtype)

        run_case("lora.LoRALinear", lambda: lora.LoRALinear(base, **kwargs), bad,
                 names=["LoRALinear wraps a Linear"] if bad == "base" else None, check=check)
    else:
        W, A, B = (minilora.tensor(rng.standard_normal(s).astype(dtype))
                   for s in ((n_out, n_in), (r, n_in), (n_out, r)))
        bad, value = spoil(data.draw, {"scaling": BAD_NUMBERS, "lora_A": [None, A.numpy(), minilora.tensor(np.ones((r, n_in + 1), dtype=dtype))],
                                       "bias": [np.zeros(n_out), minilora.tensor(np.zeros(n_out + 1, dtype=dtype))]})
        scaling = data.draw(st.sampled_from([0.5, 2.0]))
        args = {"scaling": scaling, "lora_A": A, "bias": None, **({bad: value} if bad else {})}
        names = {"lora_A": ["lora_A", "A has shape", "B has shape"], "bias": ["bias"]}.get(bad)
        run_case("F.lora_linear", lambda: F.lora_linear(minilora.tensor(x_np), W, args["lora_A"], B, args["scaling"],
                                                        bias=args["bias"]), bad, names=names,
                 check=lambda y: assert_close(y.numpy(), reference_forward(x_np, W.numpy(), A.numpy(), B.numpy(),
                                                                           scaling, None)[0], dtype))


COMPILED = [compiled_lora_kernels, compiled_cpp_out_buffers, compiled_lora_layer_and_op]


def test_calls_into_compiled_code_in_a_subprocess():
    """The groups above, run by `python tests/test_fuzz_compiled.py`: a crash (a signal) fails this
    test with what the subprocess printed, instead of killing pytest."""
    here = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run([sys.executable, os.path.abspath(__file__)], capture_output=True, text=True,
                            timeout=600, cwd=here)
    assert result.returncode == 0, (f"the subprocess ended with code {result.returncode} "
                                    f"({'a crash' if result.returncode < 0 else 'a failure'}):\n"
                                    f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    for key, count in counts.items():
        OUTCOMES[tuple(key.split("|"))] += count
    assert sum(counts.values()) >= len(COMPILED) * EXAMPLES // 2, counts  # the groups did run


if __name__ == "__main__":
    for group in COMPILED:
        group()
    print(json.dumps({"|".join(key): n for key, n in OUTCOMES.items()}))
