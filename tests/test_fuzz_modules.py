"""Fuzzing nn modules, optimizers, LoRA configs, array files and the command line's parsing with
hypothesis (see fuzz_support.py for the rules)."""

import json
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import minilora
from minilora import cli, io, lora, nn, optim
from fuzz_support import BAD_NUMBERS, FUZZ, INF, NAN, OUTCOMES, assert_close, run_case, shapes, spoil

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
        opts = {"lr": data.draw(st.sampled_from([0.0, 1e-3, 0.1])), "eps": data.draw(st.sampled_from([1e-12, 1e-8])),
                "weight_decay": data.draw(st.sampled_from([0.0, 0.01])), "betas": (0.9, 0.999)}
        pools = {k: BAD_NUMBERS + [-1.0] for k in ("lr", "eps", "weight_decay")}
        pools["eps"] = pools["eps"] + [0.0]  # eps = 0 gives 0 / 0 where a gradient is 0
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


