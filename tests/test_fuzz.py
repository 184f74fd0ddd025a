"""Fuzzing tensors, ops and minilora.functional with hypothesis (see fuzz_support.py for the rules):
each call matches NumPy or is a ValueError/TypeError naming the spoiled argument."""

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import minilora
from minilora import F
from fuzz_support import FUZZ, INF, NAN, assert_close, dtypes, run_case, shapes, spoil

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


