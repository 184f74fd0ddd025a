"""apply_lora on a GPT: what is swapped, what trains; several adapters: switch, disable, delete,
combine (exact and SVD-truncated); trainable_summary."""

import copy
import math

import numpy as np
import pytest

from minilora.lora import (LoRAConfig, LoRALinear, ModulesToSave, add_adapter, apply_lora, combine_adapters,
                           delete_adapter, disable_adapters, set_adapter)
from minilora.lora.inject import get_module
from minilora.lora.summary import trainable_summary
from minilora.nn import Linear
from test_lora_support import TINY, logits, randomise_adapter, relative_error, tiny_gpt, tokens


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


# ---- apply_lora ------------------------------------------------------------------------------------
def test_apply_lora_swaps_the_targets_and_trains_only_a_and_b():
    model = tiny_gpt()
    assert apply_lora(model, LoRAConfig(r=4)) is model
    for i in range(TINY.n_layer):
        attn = model.h[i].attn
        assert isinstance(attn.q_proj, LoRALinear) and isinstance(attn.v_proj, LoRALinear)
        assert type(attn.k_proj) is Linear and type(model.h[i].mlp.fc_in) is Linear
        assert attn.q_proj.lora_A.shape == (4, 16) and attn.q_proj.lora_B.shape == (16, 4)
        assert attn.q_proj.scaling == 4.0
    assert trainable(model) == {f"h.{i}.attn.{p}.adapters.default.{m}" for i in range(2)
                                for p in ("q_proj", "v_proj") for m in ("lora_A", "lora_B")}
    assert model.active_adapter == "default" and model.lora_configs["default"] == LoRAConfig(r=4)


def test_only_the_adapters_receive_gradients(rng):
    model = apply_lora(tiny_gpt(), LoRAConfig(r=2))
    randomise_adapter(model, "default", rng)
    model.train()
    idx = tokens(rng)
    _, loss = model(idx, idx)
    loss.backward()
    for name, p in model.named_parameters():
        if "adapters" in name:
            assert p.grad is not None and np.any(p.grad), name
        else:
            assert p.grad is None, name


@pytest.mark.parametrize("bias, expected", [
    ("none", set()),
    ("lora_only", {f"h.{i}.attn.{p}.base.bias" for i in range(2) for p in ("q_proj", "v_proj")}),
    ("all", {f"h.{i}.{m}.bias" for i in range(2) for m in ("ln_1", "attn.k_proj", "attn.o_proj", "ln_2",
                                                            "mlp.fc_in", "mlp.fc_out")}
     | {f"h.{i}.attn.{p}.base.bias" for i in range(2) for p in ("q_proj", "v_proj")} | {"ln_f.bias"}),
])
def test_bias_modes(bias, expected):
    model = apply_lora(tiny_gpt(), LoRAConfig(r=2, bias=bias))
    assert {n for n in trainable(model) if "adapters" not in n} == expected


def test_modules_to_save_get_a_trainable_copy_per_adapter(rng):
    plain = tiny_gpt()
    model = apply_lora(copy.deepcopy(plain), LoRAConfig(r=2, modules_to_save=["lm_head"]))
    assert isinstance(model.lm_head, ModulesToSave)
    assert {n for n in trainable(model) if "adapters" not in n} == {"lm_head.copies.default.weight"}
    idx = tokens(rng)
    np.testing.assert_allclose(logits(model, idx), logits(plain, idx), rtol=1e-5, atol=1e-6)  # B = 0
    model.lm_head.copies["default"].weight.data[...] *= 2.0
    assert not np.allclose(logits(model, idx), logits(plain, idx))
    assert model.lm_head.weight is model.lm_head.copies["default"].weight    # the wrapper stands for it
    with disable_adapters(model):
        assert np.array_equal(logits(model, idx), logits(plain, idx))
        assert model.lm_head.weight is model.lm_head.original.weight
    with pytest.raises(ValueError, match="'lm_head' names lm_head, which is also a LoRA target"):
        apply_lora(tiny_gpt(), LoRAConfig(r=2, target_modules=("lm_head",), modules_to_save=["lm_head"]))
    with pytest.raises(ValueError, match="modules_to_save entry 'head' matches no module"):
        apply_lora(tiny_gpt(), LoRAConfig(r=2, modules_to_save=["head"]))


def test_embeddings_can_be_trained_next_to_lora(rng):
    """A new token's embedding row is trained with modules_to_save=["wte", "lm_head"]."""
    model = apply_lora(tiny_gpt(), LoRAConfig(r=2, modules_to_save=["wte", "lm_head"]))
    randomise_adapter(model, "default", rng)
    model.train()
    idx = tokens(rng)
    _, loss = model(idx, idx)
    loss.backward()
    assert model.wte.copies["default"].weight.grad is not None and model.wte.original.weight.grad is None
    assert model.num_parameters(trainable_only=True) == 2 * 2 * 2 * (16 + 16) + 2 * 13 * 16


def test_a_config_that_does_not_fit_leaves_the_model_untouched():
    model = tiny_gpt()
    names = [n for n, _ in model.named_parameters()]
    with pytest.raises(ValueError, match="'query' matches no Linear layer.*h.\\*.attn.q_proj"):
        apply_lora(model, LoRAConfig(target_modules=("q_proj", "query")))
    with pytest.raises(ValueError, match="r=17 is too large"):
        apply_lora(model, LoRAConfig(r=17))
    assert [n for n, _ in model.named_parameters()] == names
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(TypeError, match="config must be a LoRAConfig"):
        apply_lora(model, {"r": 4})


# ---- several adapters ------------------------------------------------------------------------------
def test_switching_changes_the_output_and_disabling_gives_the_base_model_exactly(rng):
    plain = tiny_gpt()
    model = apply_lora(copy.deepcopy(plain), LoRAConfig(r=4), adapter_name="first")
    add_adapter(model, "second", LoRAConfig(r=2, target_modules=("k_proj", "v_proj", "fc_out")))
    randomise_adapter(model, "first", rng)
    randomise_adapter(model, "second", rng)
    idx = tokens(rng)
    base, first = logits(plain, idx), logits(model, idx)
    assert model.active_adapter == "first"        # add_adapter does not switch
    set_adapter(model, "second")
    second = logits(model, idx)
    assert relative_error(first, base) > 1e-2 and relative_error(second, base) > 1e-2
    assert relative_error(second, first) > 1e-2
    assert {n.split(".adapters.")[1] for n in trainable(model)} == {"second.lora_A", "second.lora_B"}
    with disable_adapters(model):
        assert np.array_equal(logits(model, idx), base)
    assert np.array_equal(logits(model, idx), second)
    set_adapter(model, "first")
    assert np.array_equal(logits(model, idx), first)


def test_adapter_names_are_checked():
    model = apply_lora(tiny_gpt(), LoRAConfig(r=2))
    with pytest.raises(ValueError, match="already has an adapter named 'default'"):
        add_adapter(model, "default", LoRAConfig(r=2))
    with pytest.raises(ValueError, match="no adapter named 'nope'; the model's adapters are \\['default'\\]"):
        set_adapter(model, "nope")
    with pytest.raises(ValueError, match="adapter_name must be an identifier"):
        add_adapter(model, "task.b", LoRAConfig(r=2))
    with pytest.raises(ValueError, match="no LoRA layers"):
        with disable_adapters(tiny_gpt()):
            pass


def test_delete_adapter_switches_away_and_the_last_one_restores_plain_layers(rng):
    plain = tiny_gpt()
    model = apply_lora(copy.deepcopy(plain), LoRAConfig(r=2, modules_to_save=["lm_head"]), adapter_name="a")
    add_adapter(model, "b", LoRAConfig(r=2, target_modules=("q_proj", "fc_in")))
    randomise_adapter(model, "a", rng)
    randomise_adapter(model, "b", rng)
    idx = tokens(rng)
    set_adapter(model, "b")
    only_b = logits(model, idx)
    set_adapter(model, "a")
    delete_adapter(model, "a")
    assert model.active_adapter == "b" and list(model.lora_configs) == ["b"]
    assert type(model.h[0].attn.v_proj) is Linear and type(model.lm_head) is Linear  # "a" was their only one
    assert np.array_equal(logits(model, idx), only_b)
    delete_adapter(model, "b")
    assert not any(isinstance(m, (LoRALinear, ModulesToSave)) for m in model.modules())
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert np.array_equal(logits(model, idx), logits(plain, idx))
    with pytest.raises(ValueError, match="no adapter named 'b'"):
        delete_adapter(model, "b")


# ---- combining adapters ----------------------------------------------------------------------------
def two_adapters(rng):
    model = apply_lora(tiny_gpt(), LoRAConfig(r=3, alpha=6), adapter_name="a")
    add_adapter(model, "b", LoRAConfig(r=2, alpha=8, target_modules=("v_proj", "fc_in")))
    randomise_adapter(model, "a", rng)
    randomise_adapter(model, "b", rng)
    return model


def delta(layer, name):
    """scaling·B·A from the adapter's own arrays, in float64."""
    adapter = layer.adapters[name]
    return adapter.scaling * adapter.lora_B.numpy().astype(np.float64) @ adapter.lora_A.numpy()


def test_cat_combination_is_exact_with_the_summed_rank(rng):
    model = two_adapters(rng)
    errors = combine_adapters(model, {"a": 0.7, "b": -1.5}, "mix")
    assert set(errors) == {f"h.{i}.{m}" for i in range(2) for m in ("attn.q_proj", "attn.v_proj", "mlp.fc_in")}
    assert all(e == 0.0 for e in errors.values())
    for i in range(2):
        q, v, fc = model.h[i].attn.q_proj, model.h[i].attn.v_proj, model.h[i].mlp.fc_in
        assert v.adapters["mix"].r == 5 and q.adapters["mix"].r == 3 and fc.adapters["mix"].r == 2
        expected = 0.7 * delta(v, "a") - 1.5 * delta(v, "b")
        assert relative_error(delta(v, "mix"), expected) < 1e-6
        assert relative_error(delta(q, "mix"), 0.7 * delta(q, "a")) < 1e-6
        assert relative_error(delta(fc, "mix"), -1.5 * delta(fc, "b")) < 1e-6
    assert model.active_adapter == "a"
    config = model.lora_configs["mix"]
    assert config.rank_for("h.0.attn.v_proj") == 5 and config.scaling_for("h.0.attn.v_proj") == 1.0


def test_svd_combination_reports_the_discarded_singular_values(rng):
    model = two_adapters(rng)
    exact = {f"h.{i}.attn.v_proj": 0.5 * delta(model.h[i].attn.v_proj, "a")
             + 2.0 * delta(model.h[i].attn.v_proj, "b") for i in range(2)}
    errors = combine_adapters(model, {"a": 0.5, "b": 2.0}, "short", method="svd", rank=2)
    for name, target in exact.items():
        sigma = np.linalg.svd(target, compute_uv=False)
        assert np.sum(sigma > 1e-9 * sigma[0]) == 5                 # the stacked rank is 3 + 2
        expected = math.sqrt(np.sum(sigma[2:] ** 2) / np.sum(sigma ** 2))
        assert expected > 0.05 and abs(errors[name] - expected) < 1e-12
        layer = get_module(model, name)
        assert layer.adapters["short"].r == 2
        assert abs(relative_error(delta(layer, "short"), target) - expected) < 1e-5
    # a layer whose stacked rank is below the requested rank loses nothing
    assert errors["h.0.mlp.fc_in"] < 1e-7 and model.h[0].mlp.fc_in.adapters["short"].r == 2
    full = combine_adapters(model, {"a": 0.5, "b": 2.0}, "full", method="svd", rank=5)
    assert max(full.values()) < 1e-7


def test_bad_combinations_are_rejected(rng):
    model = two_adapters(rng)
    with pytest.raises(ValueError, match="method='svd' needs rank"):
        combine_adapters(model, {"a": 1.0}, "x", method="svd")
    with pytest.raises(ValueError, match="rank is only for method='svd'"):
        combine_adapters(model, {"a": 1.0}, "x", rank=2)
    with pytest.raises(ValueError, match="no adapter named 'c'"):
        combine_adapters(model, {"a": 1.0, "c": 1.0}, "x")
    with pytest.raises(ValueError, match="weights\\['a'\\] must be a finite number"):
        combine_adapters(model, {"a": float("nan")}, "x")
    with pytest.raises(ValueError, match="already has an adapter named 'b'"):
        combine_adapters(model, {"a": 1.0}, "b")
    with pytest.raises(ValueError, match="rank=17 exceeds min\\(in, out\\) = 16"):
        combine_adapters(model, {"a": 1.0}, "x", method="svd", rank=17)
    assert list(model.lora_configs) == ["a", "b"]


# ---- trainable_summary ------------------------------------------------------------------------------
def test_trainable_summary_counts_and_table(capsys):
    model = apply_lora(tiny_gpt(), LoRAConfig(r=4, rank_pattern={"h.1.attn.v_proj": 2}))
    text = trainable_summary(model)
    assert capsys.readouterr().out.strip() == text
    lora = 3 * 4 * (16 + 16) + 2 * (16 + 16)              # three r=4 layers and one r=2 layer
    total = tiny_gpt().num_parameters() + lora
    assert f"trainable params: {lora:,} || all params: {total:,} || trainable: {100 * lora / total:.2f}%" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()[3:]}
    assert rows["h.1.attn.v_proj"][4:] == ["256", "2", "64", "25.00%"]
    assert rows["h.0.attn.q_proj"][4:] == ["256", "4", "128", "50.00%"]
    assert rows["total"][1:] == ["1,024", "448", "43.75%"]
