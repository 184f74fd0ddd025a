"""Merging: merged outputs equal unmerged ones, unmerge restores W bit for bit (also after 1,000
cycles), training while merged and non-finite merges are errors, merge_and_unload gives a plain GPT."""

import copy

import numpy as np
import pytest

import minilora
from minilora.lora import (LoRAConfig, LoRALinear, ModulesToSave, apply_lora, merge_adapters, merge_and_unload,
                           set_adapter, disable_adapters, unmerge_adapters, add_adapter)
from minilora.nn import Linear
from minilora.checkpoint import load_checkpoint, save_checkpoint
from minilora.lora.inject import lora_layers
from test_lora_support import logits, randomise_adapter, relative_error, tiny_gpt, tokens


def random_layer(rng, in_features=64, out_features=48, r=8):
    layer = LoRALinear(Linear(in_features, out_features), r=r, alpha=16)
    layer.base.weight.data[...] = rng.standard_normal(layer.base.weight.shape).astype(np.float32)
    layer.base.bias.data[...] = rng.standard_normal(layer.base.bias.shape).astype(np.float32)
    layer.lora_B.data[...] = rng.standard_normal(layer.lora_B.shape).astype(np.float32) * 0.1
    return layer


def test_merged_output_equals_unmerged_output_in_float32(rng):
    layer = random_layer(rng).eval()
    x = minilora.tensor(rng.standard_normal((32, 64)), dtype="float32")
    W = layer.base.weight.numpy().copy()
    before = layer(x).numpy()
    layer.merge()
    assert layer.merged and layer.merged_adapter == "default"
    after = layer(x).numpy()
    delta = (layer.lora_B.numpy().astype(np.float64) @ layer.lora_A.numpy()) * 2.0  # alpha / r = 16 / 8
    np.testing.assert_allclose(layer.base.weight.numpy(), W + delta, rtol=1e-6, atol=1e-6)
    assert relative_error(after, before) <= 1e-6


def test_unmerge_restores_w_bit_for_bit_even_after_1000_cycles(rng):
    layer = random_layer(rng, 24, 20, r=4).eval()
    original = layer.base.weight.numpy().copy()
    layer.merge()
    merged = layer.base.weight.numpy().copy()
    assert not np.array_equal(merged, original)
    # An unmerge that subtracted scaling·B·A again would not give W back: (W + d) - d != W in float32.
    delta = layer.delta_weight(dtype="float32")
    assert not np.array_equal(merged - delta, original)
    layer.unmerge()
    assert np.array_equal(layer.base.weight.numpy(), original)
    for _ in range(1000):
        layer.merge()
        layer.unmerge()
    assert np.array_equal(layer.base.weight.numpy(), original)
    layer.merge()
    assert np.array_equal(layer.base.weight.numpy(), merged)


def test_merge_and_unmerge_misuse_is_an_error(rng):
    layer = random_layer(rng, 8, 6, r=2)
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()


def test_training_while_merged_is_an_error(rng):
    layer = random_layer(rng, 8, 6, r=2)
    layer.merge()
    x = minilora.tensor(rng.standard_normal((3, 8)), dtype="float32")
    layer.train()
    with pytest.raises(RuntimeError, match="merged into the weight.*unmerge\\(\\) before training"):
        layer(x)
    with minilora.no_grad():
        layer(x)             # inference in training mode is fine without a graph
    layer.eval()
    layer(x)                 # and in eval mode
    layer.unmerge()
    layer.train()
    layer(x)


@pytest.mark.parametrize("poison", ["nan", "overflow"])
def test_a_non_finite_merge_raises_and_leaves_w_untouched(rng, poison):
    layer = random_layer(rng, 8, 6, r=2)
    original = layer.base.weight.numpy().copy()
    if poison == "nan":
        layer.lora_B.data[1, 0] = np.nan
    else:  # finite factors whose product overflows float32
        layer.lora_B.data[...] = 1e30
        layer.lora_A.data[...] = 1e30
    with pytest.raises(ValueError, match="would put NaN or inf into the weight"):
        layer.merge()
    assert not layer.merged
    assert np.array_equal(layer.base.weight.numpy(), original)


def test_model_merge_is_all_or_nothing(rng):
    model = apply_lora(tiny_gpt(), LoRAConfig(r=2))
    randomise_adapter(model, "default", rng)
    weights = {n: p.numpy().copy() for n, p in model.named_parameters()}
    model.h[1].attn.v_proj.lora_B.data[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        merge_adapters(model)
    assert not any(layer.merged for layer in model.modules() if isinstance(layer, LoRALinear))
    for n, p in model.named_parameters():
        if "lora_B" not in n:
            assert np.array_equal(p.numpy(), weights[n]), n


def test_model_merge_keeps_outputs_and_blocks_switching(rng):
    model = apply_lora(tiny_gpt(), LoRAConfig(r=4, target_modules="all-linear"))
    randomise_adapter(model, "default", rng)
    add_adapter(model, "other", LoRAConfig(r=2))
    idx = tokens(rng)
    before = logits(model, idx)
    merge_adapters(model)
    assert relative_error(logits(model, idx), before) <= 1e-5
    with pytest.raises(RuntimeError, match="unmerge first"):
        set_adapter(model, "other")
    with pytest.raises(RuntimeError, match="unmerge first"):
        with disable_adapters(model):
            pass
    unmerge_adapters(model)
    assert np.array_equal(logits(model, idx), before)


def test_merge_and_unload_gives_a_plain_gpt_with_the_same_outputs(rng):
    plain = tiny_gpt()
    names = [n for n, _ in plain.named_parameters()]
    shapes = {n: p.shape for n, p in plain.named_parameters()}
    model = apply_lora(copy.deepcopy(plain), LoRAConfig(r=4, target_modules=("q_proj", "v_proj", "fc_in"),
                                                        modules_to_save=("lm_head",)))
    randomise_adapter(model, "default", rng)
    model.lm_head.copies["default"].weight.data[...] += 0.5   # the trained head must be the one kept
    idx = tokens(rng)
    adapted = logits(model, idx)
    assert relative_error(adapted, logits(plain, idx)) > 1e-2
    result = merge_and_unload(model)
    assert result is model
    assert not any(isinstance(m, (LoRALinear, ModulesToSave)) for m in model.modules())
    assert type(model.h[0].attn.q_proj) is Linear and type(model.lm_head) is Linear
    assert [n for n, _ in model.named_parameters()] == names
    assert {n: p.shape for n, p in model.named_parameters()} == shapes
    assert relative_error(logits(model, idx), adapted) <= 1e-5
    assert "lora_configs" not in model.__dict__
    with pytest.raises(ValueError, match="no LoRA layers to merge"):
        merge_and_unload(model)


# ---- saving and loading a merged model: the unmerged weights travel, the merged state stays ------
def adapted_gpt(rng, seed=0):
    model = apply_lora(tiny_gpt(seed), LoRAConfig(r=2, alpha=4, target_modules=("q_proj", "v_proj", "fc_in")))
    randomise_adapter(model, "default", rng)
    return model.eval()


def test_state_dict_of_a_merged_model_holds_the_unmerged_weights(rng):
    model = adapted_gpt(rng)
    unmerged_state = model.state_dict()
    merge_adapters(model)
    merged_weights = {n: p.numpy().copy() for n, p in model.named_parameters()}
    state = model.state_dict()
    assert list(state) == list(unmerged_state)
    for name in state:
        assert np.array_equal(state[name], unmerged_state[name]), name
    # Taking the state changes nothing: still merged, with the very same merged values.
    assert all(layer.merged for _, layer in lora_layers(model))
    for name, p in model.named_parameters():
        assert np.array_equal(p.numpy(), merged_weights[name]), name


def test_a_checkpoint_of_a_merged_model_reloads_exactly(rng, tmp_path):
    idx = tokens(rng)
    source = adapted_gpt(rng)
    unmerged_logits = logits(source, idx)
    merge_adapters(source)
    merged_logits = logits(source, idx)
    path = save_checkpoint(source, tmp_path / "merged")
    # Into an unmerged model of the same architecture: the adapter is applied once, exactly as before.
    target = adapted_gpt(np.random.default_rng(1), seed=1)
    load_checkpoint(path, model=target)
    assert not any(layer.merged for _, layer in lora_layers(target))
    assert np.array_equal(logits(target, idx), unmerged_logits)
    assert relative_error(logits(target, idx), merged_logits) <= 1e-5
    # Into a merged model: it is merged again with the loaded weights, bit for bit as the source.
    merged_target = merge_adapters(adapted_gpt(np.random.default_rng(2), seed=2))
    load_checkpoint(path, model=merged_target)
    assert all(layer.merged for _, layer in lora_layers(merged_target))
    for (name, p), (_, q) in zip(source.named_parameters(), merged_target.named_parameters()):
        assert np.array_equal(p.numpy(), q.numpy()), name
    assert np.array_equal(logits(merged_target, idx), merged_logits)
    unmerge_adapters(merged_target)
    assert np.array_equal(logits(merged_target, idx), unmerged_logits)


def test_a_merged_model_cast_with_to_still_saves_and_unmerges(rng):
    """Module.to casts the weight that unmerge() puts back along with the merged one."""
    idx = tokens(rng)
    model = adapted_gpt(rng)
    unmerged_state = model.state_dict()
    merge_adapters(model)
    model.to(dtype="float64")
    state = model.state_dict()
    for name in unmerged_state:
        assert state[name].dtype == np.float64
        assert np.array_equal(state[name], unmerged_state[name].astype(np.float64)), name
    merged_logits = logits(model, idx)
    unmerge_adapters(model)
    for name, p in model.named_parameters():
        assert p.dtype == np.float64 and np.array_equal(p.numpy(), unmerged_state[name]), name
    assert relative_error(logits(model, idx), merged_logits) <= 1e-12


def test_load_state_dict_into_a_merged_layer_keeps_what_was_loaded(rng):
    source, layer = random_layer(rng, 10, 6, r=2).eval(), random_layer(rng, 10, 6, r=2).eval()
    layer.merge()
    layer.load_state_dict(source.state_dict())
    assert layer.merged
    x = minilora.tensor(rng.standard_normal((5, 10)), dtype="float32")
    with minilora.no_grad():
        assert relative_error(layer(x).numpy(), source(x).numpy()) <= 1e-6
        layer.unmerge()  # the loaded W comes back, not the one that was there before loading
        assert np.array_equal(layer.base.weight.numpy(), source.base.weight.numpy())
        assert np.array_equal(layer(x).numpy(), source(x).numpy())


def test_a_merge_that_fails_after_loading_leaves_the_layer_unmerged_and_says_so(rng):
    layer = random_layer(rng, 6, 4, r=2)
    layer.merge()
    state = layer.state_dict()
    state["adapters.default.lora_B"] = np.full((4, 2), 3e38, dtype=np.float32)
    with pytest.raises(ValueError, match="could not be merged back into the weight after loading"):
        layer.load_state_dict(state)
    assert not layer.merged
    assert np.array_equal(layer.lora_B.numpy(), state["adapters.default.lora_B"])
