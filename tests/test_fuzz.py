"""Fuzzing the public API with hypothesis: every call gives the reference's result, or raises a
ValueError or TypeError whose message names the argument that is wrong. Nothing else: no other
exception, no NaN where NumPy gives a number, no crash.

Each example draws a valid call and, most of the time, spoils one argument with a value from that
argument's list of bad values (NaN, inf, None, a string, a wrong shape or dtype, ...). A valid call
must match an independent reference (NumPy formulas written here, or the rule the API documents);
a spoiled one must be refused with a message that names the spoiled argument.

Calls that reach minilora._C (the kernels on the "cpp" backend, F.lora_linear, LoRALinear) run in
one subprocess (`python tests/test_fuzz.py compiled`), so a crash in compiled code fails a test
instead of ending the test run. Every test runs a fixed number of examples (EXAMPLES, 100: about
1,500 calls, 15 s on a 2-core machine) and the outcomes are counted by class: "matched" (ran and matched the reference), "ValueError",
"TypeError", and for the command line "usage error" (exit code 2). test_outcome_counts prints the
table (run with -s to see it).
"""

import collections
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minilora
from minilora import F, cli, io, lora, nn, optim
from minilora.kernels import available_backends, lora_backward, lora_forward

EXAMPLES = 100          # per group; hypothesis runs exactly this many (no database, no deadline)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None)
OUTCOMES = collections.Counter()  # (group, outcome) -> number of calls

NAN, INF = float("nan"), float("inf")
BAD_NUMBERS = [NAN, INF, -INF, None, "0.1", [0.1], True, 1j]


def run_case(group, call, bad=None, names=None, check=None, allowed=(ValueError, TypeError)):
    """Call `call()`. bad: the name of the spoiled argument, or None for a valid call. names: words
    of which the message must hold one (default: [bad]). check(result): asserts the result matches
    the reference."""
    try:
        result = call()
    except allowed as exc:
        message = str(exc)
        assert bad is not None, f"{group}: a valid call raised {type(exc).__name__}: {message}"
        wanted = names or [bad]
        assert any(w in message for w in wanted), f"{group}: {bad} spoiled, but the message does not name " \
                                                  f"any of {wanted}: {type(exc).__name__}: {message}"
        assert "incompatible function arguments" not in message, f"{group}: pybind11's dump: {message}"
        OUTCOMES[group, "ValueError" if isinstance(exc, ValueError) else "TypeError"] += 1
        return None
    assert bad is None, f"{group}: the spoiled argument {bad} was accepted (result {result!r:.200})"
    if check is not None:
        check(result)
    OUTCOMES[group, "matched"] += 1
    return result


def spoil(draw, pools):
    """(name, value) of the argument to spoil, or (None, None) for a valid call (about 1 in 3)."""
    name = draw(st.sampled_from([None] + list(pools)))
    return (None, None) if name is None else (name, draw(st.sampled_from(pools[name])))


def assert_close(got, expected, dtype):
    """‖got − expected‖ ≤ tol·‖expected‖ + floor, with DESIGN.md's tolerances."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    tol = 1e-5 if np.dtype(dtype) == np.float32 else 1e-12
    assert np.linalg.norm(got - expected) <= tol * np.linalg.norm(expected) + tol, (got, expected)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
dtypes = st.sampled_from(["float32", "float64"])


# ---- tensor creation -----------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_tensor_creation(data):
    shape = data.draw(shapes)
    values = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).standard_normal(shape)
    kind = data.draw(st.sampled_from(["floats", "ints", "array"]))
    payload = {"floats": values.tolist(), "ints": np.round(values * 10).astype(int).tolist(), "array": values}[kind]
    dtype = data.draw(st.sampled_from([None, "float32", "float64", "int64"]))
    big = [2**70] if dtype in (None, "int64") else []  # a float dtype holds 2**70
    bad, value = spoil(data.draw, {"data": [None, "abc", [[1.0], [2.0, 3.0]], 1j, {"a": 1}, [None], [1.0, "2"]] + big,
                                   "dtype": ["U3", "complex64", "not-a-dtype", object, "datetime64"]})
    args = {"data": payload, "dtype": dtype, bad: value} if bad else {"data": payload, "dtype": dtype}

    def check(t):
        default = {"floats": "float32", "ints": "int64", "array": "float64"}[kind]
        expected = np.array(payload, dtype=dtype or default)
        assert t.dtype == expected.dtype and t.shape == expected.shape
        np.testing.assert_array_equal(t.numpy(), expected)

    run_case("tensor()", lambda: minilora.tensor(args["data"], dtype=args["dtype"]), bad, check=check)


@FUZZ
@given(data=st.data())
def test_zeros_ones_randn_arange(data):
    shape = data.draw(st.lists(st.integers(0, 4), max_size=3).map(tuple))
    dtype = data.draw(dtypes)
    maker = data.draw(st.sampled_from(["zeros", "ones", "randn"]))
    bad, value = spoil(data.draw, {"shape": [(-1,), (2, -3), ("a",), (2.5,), (None,)],
                                   "dtype": ["U3", "complex64", "not-a-dtype"]})
    args = {"shape": shape, "dtype": dtype, **({bad: value} if bad else {})}

    def check(t):
        assert t.shape == shape and t.dtype == np.dtype(dtype)
        if maker != "randn":
            np.testing.assert_array_equal(t.numpy(), np.full(shape, 1.0 if maker == "ones" else 0.0))

    run_case(maker, lambda: getattr(minilora, maker)(args["shape"], dtype=args["dtype"]), bad,
             names=["shape" if bad == "shape" else "dtype"], check=check)

    start, stop, step = data.draw(st.integers(-5, 5)), data.draw(st.integers(-5, 10)), data.draw(
        st.sampled_from([1, 2, -1, 0.5]))
    bad, value = spoil(data.draw, {"start": [NAN, INF, None, "0"], "stop": [NAN, -INF, "9"], "step": [0, NAN, None]})
    args = {"start": start, "stop": stop, "step": step, **({bad: value} if bad else {})}
    expected_dtype = "int64" if isinstance(step, int) else "float32"
    run_case("arange", lambda: minilora.arange(args["start"], args["stop"], args["step"]), bad,
             check=lambda t: np.testing.assert_array_equal(t.numpy(), np.arange(start, stop, step, dtype=expected_dtype)))


# ---- ops -----------------------------------------------------------------------------------------
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}


@FUZZ
@given(data=st.data())
def test_elementwise_binary_ops(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = data.draw(shapes)
    # b broadcasts against a: the trailing dims of a, some of them 1.
    b_shape = tuple(n if data.draw(st.booleans()) else 1 for n in shape[data.draw(st.integers(0, len(shape) - 1)):])
    dtype = data.draw(dtypes)
    name = data.draw(st.sampled_from(sorted(BINARY)))
    a_np = rng.uniform(0.5, 2.0, shape).astype(dtype)
    b_np = rng.uniform(0.5, 2.0, b_shape).astype(dtype)
    pools = {"operand": [None, "abc", {}, np.array(["x"]), [None]]}
    if shape[-1] > 1:  # a last axis of another length > 1 broadcasts against nothing
        pools["shape"] = [(shape[-1] + 1,)]
    bad, value = spoil(data.draw, pools)
    a = minilora.tensor(a_np, requires_grad=True)
    b = minilora.tensor(b_np, requires_grad=True)
    other = value if bad == "operand" else (minilora.tensor(rng.uniform(0.5, 2, value).astype(dtype))
                                            if bad == "shape" else b)

    def check(out):
        assert out.dtype == np.dtype(dtype)
        assert_close(out.numpy(), BINARY[name](a_np.astype(np.float64), b_np), dtype)
        out.sum().backward()
        # d(sum)/da for each op, reduced over b's broadcast axes for b.
        da = {"add": 1.0, "sub": 1.0, "mul": b_np + 0 * a_np, "div": 1 / b_np + 0 * a_np}[name]
        assert_close(a.grad, np.broadcast_to(da, shape), dtype)

    run_case(f"F.{name}", lambda: getattr(F, name)(a, other), bad,
             names=["operand", "broadcast", "needs numbers"], check=check)


REDUCTIONS = {"sum": np.sum, "mean": np.mean, "max": np.max}
UNARY = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "relu": lambda x: np.maximum(x, 0)}


@FUZZ
@given(data=st.data())
def test_unary_reductions_softmax_and_shape_ops(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = data.draw(shapes)
    dtype = data.draw(dtypes)
    x_np = rng.uniform(0.5, 2.0, shape).astype(dtype)
    x = minilora.tensor(x_np, requires_grad=True)
    ndim = len(shape)
    kind = data.draw(st.sampled_from(["unary", "reduce", "softmax", "reshape", "transpose"]))
    if kind == "unary":
        name = data.draw(st.sampled_from(sorted(UNARY)))
        bad, value = spoil(data.draw, {"x": [None, [1.0], "abc"]})
        arg = value if bad else x
        run_case(f"F.{name}", lambda: getattr(F, name)(arg), bad, names=["input 0", "x"],
                 check=lambda out: assert_close(out.numpy(), UNARY[name](x_np.astype(np.float64)), dtype))
    elif kind == "reduce":
        name = data.draw(st.sampled_from(sorted(REDUCTIONS)))
        axis = data.draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1)))
        keepdims = data.draw(st.booleans())
        bad, value = spoil(data.draw, {"axis": [ndim, -ndim - 1, "0", 1.0, (0, 0)], "keepdims": ["yes", None, 1]})
        args = {"axis": axis, "keepdims": keepdims, **({bad: value} if bad else {})}
        run_case(f"F.{name}", lambda: getattr(F, name)(x, axis=args["axis"], keepdims=args["keepdims"]), bad,
                 check=lambda out: assert_close(out.numpy(), REDUCTIONS[name](x_np.astype(np.float64), axis=axis,
                                                                                keepdims=keepdims), dtype))
    elif kind == "softmax":
        axis = data.draw(st.integers(-ndim, ndim - 1))
        bad, value = spoil(data.draw, {"axis": [ndim, "x", None, 0.5]})
        arg = value if bad else axis
        e = np.exp(x_np.astype(np.float64) - x_np.max(axis=axis, keepdims=True))
        run_case("F.softmax", lambda: F.softmax(x, axis=arg), bad,
                 check=lambda out: assert_close(out.numpy(), e / e.sum(axis=axis, keepdims=True), dtype))
    elif kind == "reshape":
        target = (-1,) + (1,) * data.draw(st.integers(0, 2))
        bad, value = spoil(data.draw, {"shape": [(x.size + 1,), (-1, -1), ("a",), (-2, -1), (2.5,)]})
        arg = value if bad else target
        run_case("reshape", lambda: x.reshape(*arg), bad, names=["shape", "reshape"],
                 check=lambda out: np.testing.assert_array_equal(out.numpy(), x_np.reshape(target)))
    else:
        axes = tuple(data.draw(st.permutations(range(ndim))))
        bad, value = spoil(data.draw, {"axes": [(0,) * ndim + (0,), (ndim,) + tuple(range(1, ndim)), ("a",)]})
        arg = value if bad else axes
        run_case("transpose", lambda: x.transpose(*arg), bad, names=["axes"],
                 check=lambda out: np.testing.assert_array_equal(out.numpy(), x_np.transpose(axes)))


@FUZZ
@given(data=st.data())
def test_matmul_pow_linear_log_softmax_indexing(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    dtype = data.draw(dtypes)
    M, K, N = (data.draw(st.integers(1, 4)) for _ in range(3))
    a_np, b_np = rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype)
    a, b = minilora.tensor(a_np), minilora.tensor(b_np)
    kind = data.draw(st.sampled_from(["matmul", "pow", "linear", "log_softmax", "getitem", "masked_fill"]))
    if kind == "matmul":
        bad, value = spoil(data.draw, {"b": [None, "x", minilora.tensor(np.ones((K + 1, N), dtype=dtype))]})
        run_case("F.matmul", lambda: a @ (value if bad else b), bad, names=["operand", "inner dimensions"],
                 check=lambda out: assert_close(out.numpy(), a_np.astype(np.float64) @ b_np, dtype))
    elif kind == "pow":
        exponent = data.draw(st.sampled_from([2, 3, 0.5, -1.0]))
        bad, value = spoil(data.draw, {"exponent": [None, "2", b, [2]]})
        base = np.abs(a_np) + 0.5
        run_case("F.pow", lambda: minilora.tensor(base) ** (value if bad else exponent), bad,
                 check=lambda out: assert_close(out.numpy(), base.astype(np.float64) ** exponent, dtype))
    elif kind == "linear":
        weight = minilora.tensor(b_np.T.copy())  # (N, K)
        bad, value = spoil(data.draw, {"weight": [None, b_np, minilora.tensor(np.ones((N, K + 1), dtype=dtype))],
                                       "bias": [np.zeros(N), minilora.tensor(np.zeros(N + 1, dtype=dtype))]})
        args = {"weight": weight, "bias": minilora.tensor(np.ones(N, dtype=dtype)), **({bad: value} if bad else {})}
        run_case("F.linear", lambda: F.linear(a, args["weight"], args["bias"]), bad, names=[bad, "x must have shape"],
                 check=lambda out: assert_close(out.numpy(), a_np.astype(np.float64) @ b_np + 1.0, dtype))
    elif kind == "log_softmax":
        bad, value = spoil(data.draw, {"axis": [2, -3, "1", None]})
        x = a_np.astype(np.float64)
        expected = x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
        run_case("F.log_softmax", lambda: F.log_softmax(a, axis=value if bad else -1), bad,
                 check=lambda out: assert_close(out.numpy(), expected, dtype))
    elif kind == "getitem":
        row, cols = data.draw(st.integers(-M, M - 1)), slice(data.draw(st.integers(0, K)), None)
        bad, value = spoil(data.draw, {"index": ["a", 1.5, [0.5], {"k": 1}]})
        run_case("Tensor.__getitem__", lambda: a[value] if bad else a[row, cols], bad, names=["index"],
                 check=lambda out: np.testing.assert_array_equal(out.numpy(), a_np[row, cols]))
    else:
        mask_np = a_np > 0
        bad, value = spoil(data.draw, {"mask": [mask_np, minilora.tensor(a_np), minilora.tensor(np.ones((M + 1, K), bool))],
                                       "value": [None, "x", {}]})
        mask = value if bad == "mask" else minilora.tensor(mask_np)
        fill = value if bad == "value" else -1.0
        run_case("Tensor.masked_fill", lambda: a.masked_fill(mask, fill), bad, names=["mask", "operand", "broadcast"],
                 check=lambda out: np.testing.assert_array_equal(out.numpy(), np.where(mask_np, -1.0, a_np).astype(dtype)))


@FUZZ
@given(data=st.data())
def test_functional_losses_norms_embedding_dropout(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    dtype = data.draw(dtypes)
    B, C = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))
    logits_np = rng.standard_normal((B, C)).astype(dtype)
    logits = minilora.tensor(logits_np, requires_grad=True)
    kind = data.draw(st.sampled_from(["cross_entropy", "layer_norm", "embedding", "dropout", "gelu"]))
    if kind == "cross_entropy":
        targets_np = rng.integers(0, C, B)
        ignore = data.draw(st.sampled_from([None, 0]))
        bad, value = spoil(data.draw, {"targets": [np.full(B, C), np.full(B, -1), targets_np[:, None],
                                                   targets_np.astype(np.float32)],
                                       "ignore_index": ["0", 0.5, True]})
        targets = minilora.tensor(value if bad == "targets" else targets_np)
        ignore_index = value if bad == "ignore_index" else ignore

        def check(loss):
            logp = logits_np.astype(np.float64) - np.log(np.exp(logits_np.astype(np.float64)).sum(-1, keepdims=True))
            keep = targets_np != ignore if ignore is not None else np.ones(B, bool)
            picked = -logp[np.arange(B), targets_np][keep]
            assert_close(loss.numpy(), picked.mean() if keep.any() else 0.0, dtype)

        run_case("F.cross_entropy", lambda: F.cross_entropy(logits, targets, ignore_index=ignore_index), bad,
                 names=["target", "ignore_index"], check=check)
    elif kind == "layer_norm":
        eps = data.draw(st.sampled_from([1e-5, 1e-3, 1.0]))
        bad, value = spoil(data.draw, {"eps": [0, -1e-5, NAN, INF, None, "1e-5"],
                                       "weight": [np.ones(C), minilora.tensor(np.ones(C + 1, dtype=dtype))]})
        weight = value if bad == "weight" else minilora.tensor(np.full(C, 2.0, dtype=dtype))
        eps_arg = value if bad == "eps" else eps

        def check(out):
            x = logits_np.astype(np.float64)
            centered = x - x.mean(-1, keepdims=True)
            assert_close(out.numpy(), 2.0 * centered / np.sqrt((centered ** 2).mean(-1, keepdims=True) + eps), dtype)

        run_case("F.layer_norm", lambda: F.layer_norm(logits, weight, None, eps=eps_arg), bad, check=check)
    elif kind == "embedding":
        idx_np = rng.integers(0, B, (2, 3))
        bad, value = spoil(data.draw, {"idx": [np.full((2, 3), B), np.full(2, -1), idx_np.astype(np.float64), None]})
        idx = value if bad == "idx" and value is None else minilora.tensor(value if bad else idx_np)
        run_case("F.embedding", lambda: F.embedding(idx, logits), bad, names=["idx", "indices", "Tensors"],
                 check=lambda out: np.testing.assert_array_equal(out.numpy(), logits_np[idx_np]))
    elif kind == "dropout":
        p = data.draw(st.sampled_from([0.0, 0.25, 0.5]))
        bad, value = spoil(data.draw, {"p": [1.0, -0.1, NAN, INF, "0.5", None, True], "training": ["yes", None, 1]})
        args = {"p": p, "training": True, **({bad: value} if bad else {})}

        def check(out):
            kept = out.numpy() != 0
            np.testing.assert_allclose(out.numpy()[kept], (logits_np / (1 - p))[kept], rtol=1e-6)

        run_case("F.dropout", lambda: F.dropout(logits, args["p"], args["training"]), bad, check=check)
    else:
        bad, value = spoil(data.draw, {"x": [None, logits_np]})
        arg = value if bad else logits
        x = logits_np.astype(np.float64)
        reference = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        run_case("F.gelu", lambda: F.gelu(arg), bad, names=["input 0"],
                 check=lambda out: assert_close(out.numpy(), reference, dtype))


# ---- nn modules ----------------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_nn_modules(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n_in, n_out = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    kind = data.draw(st.sampled_from(["Linear", "LayerNorm", "Embedding", "Dropout", "GPTConfig"]))
    if kind == "Linear":
        bias, init_std = data.draw(st.booleans()), data.draw(st.sampled_from([0.0, 0.02, 1.0]))
        bad, value = spoil(data.draw, {"in_features": [0, -1, 2.5, "3", True], "out_features": [0, None],
                                       "init_std": [NAN, INF, -0.1, None, "0.02"]})
        args = {"in_features": n_in, "out_features": n_out, "init_std": init_std, **({bad: value} if bad else {})}
        x_np = rng.standard_normal((3, n_in)).astype(np.float32)

        def check(layer):
            W = layer.weight.numpy().astype(np.float64)
            assert W.shape == (n_out, n_in) and (layer.bias is not None) == bias
            assert init_std > 0 or not W.any()
            expected = x_np @ W.T + (layer.bias.numpy() if bias else 0)
            assert_close(layer(minilora.tensor(x_np)).numpy(), expected, "float32")

        run_case("nn.Linear", lambda: nn.Linear(args["in_features"], args["out_features"], bias=bias,
                                                init_std=args["init_std"]), bad, check=check)
    elif kind == "LayerNorm":
        bad, value = spoil(data.draw, {"dim": [0, -2, 1.5], "eps": [0, -1.0, NAN, INF, None, "1e-5", True]})
        args = {"dim": n_in, "eps": 1e-5, **({bad: value} if bad else {})}
        x_np = rng.standard_normal((2, n_in))

        def check(layer):
            centered = x_np - x_np.mean(-1, keepdims=True)
            expected = centered / np.sqrt((centered ** 2).mean(-1, keepdims=True) + 1e-5)
            assert_close(layer.to(dtype="float64")(minilora.tensor(x_np)).numpy(), expected, "float64")

        run_case("nn.LayerNorm", lambda: nn.LayerNorm(args["dim"], eps=args["eps"]), bad, check=check)
    elif kind == "Embedding":
        bad, value = spoil(data.draw, {"num_embeddings": [0, -1, "5"], "embedding_dim": [0, 2.0]})
        args = {"num_embeddings": n_in, "embedding_dim": n_out, **({bad: value} if bad else {})}
        run_case("nn.Embedding", lambda: nn.Embedding(args["num_embeddings"], args["embedding_dim"]), bad,
                 check=lambda layer: np.testing.assert_array_equal(
                     layer(minilora.tensor([[0]])).numpy()[0, 0], layer.weight.numpy()[0]))
    elif kind == "Dropout":
        bad, value = spoil(data.draw, {"p": [1.0, -0.5, NAN, INF, None, "0.1"]})
        run_case("nn.Dropout", lambda: nn.Dropout(value if bad else 0.1), bad,
                 check=lambda layer: np.testing.assert_array_equal(
                     layer.eval()(minilora.tensor([1.0, 2.0])).numpy(), [1.0, 2.0]))
    else:
        n_head = data.draw(st.integers(1, 3))
        fields = {"vocab_size": 7, "block_size": 4, "n_layer": 1, "n_head": n_head, "n_embd": 4 * n_head,
                  "dropout": 0.0}
        bad, value = spoil(data.draw, {"vocab_size": [0, -3, 2.0], "n_layer": [0, "1"], "n_head": [0, None],
                                       "n_embd": [4 * n_head + 1] if n_head > 1 else [0], "dropout": [1.0, NAN, -0.1], "bias": ["yes", None]})
        config = {**fields, **({bad: value} if bad else {})}
        names = {"n_embd": ["n_embd", "n_head"], "n_head": ["n_head"]}.get(bad)

        def check(cfg):
            model = nn.GPT(cfg)
            logits, loss = model(minilora.tensor([[0, 1, 2]]), minilora.tensor([[1, 2, 3]]))
            assert logits.shape == (1, 3, 7) and np.isfinite(loss.item())

        run_case("nn.GPTConfig", lambda: nn.GPTConfig(**config), bad, names=names, check=check)


# ---- optimizers ----------------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_optimizers_clipping_and_schedule(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    p0, g = rng.standard_normal(5), rng.standard_normal(5)
    p = nn.Parameter(p0.copy())
    p.grad = g.copy()
    kind = data.draw(st.sampled_from(["SGD", "AdamW", "clip_grad_norm", "cosine_lr"]))
    if kind == "SGD":
        opts = {"lr": data.draw(st.sampled_from([0.0, 0.1, 1.0])), "momentum": data.draw(st.sampled_from([0.0, 0.9])),
                "weight_decay": data.draw(st.sampled_from([0.0, 0.01]))}
        bad, value = spoil(data.draw, {k: BAD_NUMBERS + [-1.0] for k in opts})
        opts = {**opts, **({bad: value} if bad else {})}

        def check(opt):
            opt.step()
            assert_close(p.data, p0 - opts["lr"] * (g + opts["weight_decay"] * p0), "float64")

        run_case("optim.SGD", lambda: optim.SGD([p], **opts), bad, check=check)
    elif kind == "AdamW":
        opts = {"lr": data.draw(st.sampled_from([0.0, 1e-3, 0.1])), "eps": data.draw(st.sampled_from([0.0, 1e-8])),
                "weight_decay": data.draw(st.sampled_from([0.0, 0.01])), "betas": (0.9, 0.999)}
        pools = {k: BAD_NUMBERS + [-1.0] for k in ("lr", "eps", "weight_decay")}
        pools["betas"] = [(NAN, 0.999), (0.9, NAN), (1.0, 0.9), (0.9,), (0.9, INF), "0.9", (None, 0.9)]
        bad, value = spoil(data.draw, pools)
        opts = {**opts, **({bad: value} if bad else {})}

        def check(opt):
            opt.step()
            # The first step: m̂ = g, v̂ = g², so p moves by lr·g/(|g| + eps) after the decay.
            lr = opts["lr"]
            assert_close(p.data, p0 * (1 - lr * opts["weight_decay"]) - lr * g / (np.abs(g) + opts["eps"]), "float64")

        run_case("optim.AdamW", lambda: optim.AdamW([p], **opts), bad, check=check)
    elif kind == "clip_grad_norm":
        max_norm = data.draw(st.sampled_from([0.5, 1.0, 10.0, INF]))
        bad, value = spoil(data.draw, {"max_norm": [NAN, -1.0, None, "1.0", True]})
        norm = float(np.linalg.norm(g))

        def check(total):
            assert math.isclose(total, norm, rel_tol=1e-12)
            scale = min(1.0, max_norm / (norm + 1e-6))
            assert_close(p.grad, g * scale, "float64")

        run_case("optim.clip_grad_norm", lambda: optim.clip_grad_norm([p], value if bad else max_norm), bad,
                 check=check)
    else:
        args = {"step": data.draw(st.integers(0, 12)), "max_lr": 0.1, "warmup_steps": 3, "total_steps": 10,
                "min_lr": 0.01}
        bad, value = spoil(data.draw, {"step": [-1, 1.5, None], "max_lr": [NAN, -0.1, None],
                                       "min_lr": [NAN, INF, 0.5], "warmup_steps": [-1, 11, 2.0],
                                       "total_steps": [-1, 2, None]})
        args = {**args, **({bad: value} if bad else {})}
        names = {"min_lr": ["min_lr"], "warmup_steps": ["warmup_steps"], "total_steps": ["total_steps"]}.get(bad)

        def check(lr):
            s = args["step"]
            expected = (0.1 * (s + 1) / 3 if s < 3 else 0.01 if s >= 10
                        else 0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * (s - 3) / 7)))
            assert math.isclose(lr, expected, rel_tol=1e-12)

        run_case("optim.cosine_lr", lambda: optim.cosine_lr(**args), bad, names=names, check=check)


# ---- LoRA configuration and counting -------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_lora_config_and_counting(data):
    r, alpha = data.draw(st.integers(1, 4)), data.draw(st.sampled_from([1, 4, 16.0]))
    targets = data.draw(st.sampled_from([("q_proj",), ("q_proj", "v_proj"), ("fc_in", "o_proj")]))
    rslora = data.draw(st.booleans())
    bad, value = spoil(data.draw, {"r": [0, -1, 2.5, "4", None, True], "alpha": [0, -1, NAN, INF, "8", None],
                                   "dropout": [1.0, -0.1, NAN, "0"], "target_modules": [5, None, []],
                                   "init": ["zeros", None], "use_rslora": ["yes", 1]})
    kwargs = {"r": r, "alpha": alpha, "target_modules": targets, "use_rslora": rslora, **({bad: value} if bad else {})}
    model_config = nn.GPTConfig(vocab_size=11, block_size=4, n_layer=2, n_head=2, n_embd=8)

    def check(config):
        sizes = {"q_proj": (8, 8), "v_proj": (8, 8), "o_proj": (8, 8), "fc_in": (8, 32)}
        expected = 2 * sum(r * (sizes[t][0] + sizes[t][1]) for t in targets)  # two blocks
        assert lora.count_lora_parameters(model_config, config) == expected
        model = lora.apply_lora(nn.GPT(model_config), config)
        assert model.num_parameters(trainable_only=True) == expected
        layer = model.h[0].attn.q_proj if "q_proj" in targets else model.h[0].mlp.fc_in
        assert math.isclose(layer.scaling, alpha / (math.sqrt(r) if rslora else r), rel_tol=1e-12)

    run_case("lora.LoRAConfig", lambda: lora.LoRAConfig(**kwargs), bad, check=check)


# ---- array files ---------------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_save_and_load_arrays(data, tmp_path_factory):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    names = data.draw(st.lists(st.text("abcxyz._/0", min_size=1, max_size=6).filter(lambda s: not s.endswith(".npy")),
                               min_size=1, max_size=3, unique=True))
    arrays = {n: rng.standard_normal(data.draw(shapes)).astype(data.draw(st.sampled_from(["<f4", "<f8", "<i8", "|b1"])))
              for n in names}
    metadata = data.draw(st.dictionaries(st.text(max_size=4), st.one_of(
        st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5),
        st.lists(st.integers(), max_size=3), st.none()), max_size=3))
    bad, value = spoil(data.draw, {"arrays": [{"a": np.zeros(1), "a.npy": np.zeros(1)}, {"": np.zeros(1)},
                                              {3: np.zeros(1)}, {"x": [1, 2]}, {"x": np.array(["s"])},
                                              {io.METADATA_ENTRY: np.zeros(1)}, [np.zeros(1)]],
                                   "metadata": [[1], {"x": NAN}, {"x": np.zeros(1)}, {"d": json.loads("[" * 40 + "]" * 40)}]})
    args = {"arrays": arrays, "metadata": metadata, **({bad: value} if bad else {})}
    path = tmp_path_factory.mktemp("fuzz") / "f"

    def check(written):
        loaded, meta = io.load_arrays(written)
        assert list(loaded) == list(arrays) and meta == metadata
        for n, a in arrays.items():
            assert loaded[n].dtype == a.dtype and loaded[n].tobytes() == a.tobytes()

    names_for = {"arrays": ["arrays", "array names", "reserved", ".npy"], "metadata": ["metadata"]}
    run_case("io.save_arrays", lambda: io.save_arrays(path, args["arrays"], args["metadata"]), bad,
             names=names_for.get(bad), check=check)


# ---- the command line (parsing only: nothing runs) -----------------------------------------------
OPTION_VALUES = {"--steps": ["5", "0", "-5", "x", "1e3"], "--lr": ["0.01", "-1", "nan", "inf", "0"],
                 "--batch-size": ["8", "0", "-2"], "--seed": ["0", "3", "-1", "a"],
                 "--device": ["cpu", "cuda", "tpu"], "--backend": ["numpy", "cpp", "cuda", "cupy", "fast"]}
COMMAND_OPTIONS = {"train": ["--steps", "--lr", "--batch-size", "--seed", "--device"],
                   "finetune": ["--seed", "--device", "--backend"], "demo": ["--seed", "--device", "--backend"]}


def _valid(option, text, args):
    """The rule the command line documents for one option's value."""
    if option in ("--steps", "--batch-size"):
        return text.lstrip("-").isdigit() and int(text) >= 1
    if option == "--seed":
        return text.isdigit()
    if option == "--lr":
        return math.isfinite(float(text)) and float(text) > 0
    if option == "--device":
        return text == "cpu" or (text == "cuda" and minilora.cuda_available())
    return text in ("numpy", "cpp") or (text in ("cuda", "cupy") and args.get("--device") == "cuda")


@FUZZ
@given(data=st.data())
def test_command_line_parsing(data, capsys):
    command = data.draw(st.sampled_from(sorted(COMMAND_OPTIONS)))
    chosen = data.draw(st.lists(st.sampled_from(COMMAND_OPTIONS[command]), unique=True, max_size=3))
    given_values = {option: data.draw(st.sampled_from(OPTION_VALUES[option])) for option in chosen}
    argv = [command] + [w for option, text in given_values.items() for w in (option, text)]
    effective = dict(given_values)  # demo's default --device auto is the GPU where there is one
    if "--device" not in effective:
        effective["--device"] = "cuda" if command == "demo" and minilora.cuda_available() else "cpu"
    invalid = [o for o, t in given_values.items() if o != "--backend" and not _valid(o, t, effective)]
    backend_bad = "--backend" in given_values and not _valid("--backend", given_values["--backend"], effective)
    parser = cli.build_parser(command)
    try:
        args = cli.parse_arguments(parser, argv, lambda a: a.check and a.check(a))
    except SystemExit as exit_:
        err = capsys.readouterr().err
        assert exit_.code == 2 and f"minilora {command}: error:" in err, err
        assert invalid or backend_bad, f"{argv} is valid but was refused: {err}"
        assert any(o in err for o in invalid + ["--backend"]), f"{argv}: the error names no option: {err}"
        OUTCOMES["cli parsing", "usage error"] += 1
        return
    assert not invalid and not backend_bad, f"{argv} was accepted"
    for option, text in given_values.items():
        assert str(getattr(args, option[2:].replace("-", "_"))) == str(type(getattr(args, option[2:].replace(
            "-", "_")))(text)), (option, text)
    OUTCOMES["cli parsing", "matched"] += 1


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
    """The compiled groups above, run by `python tests/test_fuzz.py compiled`: a crash (a signal)
    fails this test with what the subprocess printed, instead of killing pytest."""
    here = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run([sys.executable, os.path.join(here, "test_fuzz.py"), "compiled"], capture_output=True,
                            text=True, timeout=600, cwd=here)
    assert result.returncode == 0, (f"the subprocess ended with code {result.returncode} "
                                    f"({'a crash' if result.returncode < 0 else 'a failure'}):\n"
                                    f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    for key, count in counts.items():
        OUTCOMES[tuple(key.split("|"))] += count
    assert sum(counts.values()) >= len(COMPILED) * EXAMPLES // 2, counts  # the groups did run


def test_outcome_counts():
    """Print the table of outcomes (pytest -s shows it): calls that matched and calls refused with
    each kind of error."""
    if not OUTCOMES:
        pytest.skip("no fuzz group ran before this test (run the whole file)")
    groups = sorted({g for g, _ in OUTCOMES})
    classes = ["matched", "ValueError", "TypeError", "usage error"]
    lines = [f"{'group':<40}" + "".join(f"{c:>13}" for c in classes)]
    for g in groups:
        lines.append(f"{g:<40}" + "".join(f"{OUTCOMES[g, c]:>13}" for c in classes))
    totals = collections.Counter()
    for (_, c), n in OUTCOMES.items():
        totals[c] += n
    lines.append(f"{'all ' + str(sum(totals.values())) + ' calls':<40}" + "".join(f"{totals[c]:>13}" for c in classes))
    print("\nfuzz outcomes\n" + "\n".join(lines))
    assert totals["matched"] > 0 and totals["ValueError"] > 0 and totals["TypeError"] > 0


if __name__ == "__main__" and sys.argv[1:] == ["compiled"]:
    for group in COMPILED:
        group()
    print(json.dumps({"|".join(key): n for key, n in OUTCOMES.items()}))
