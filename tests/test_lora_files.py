"""save_adapter / load_adapter: a round trip that reproduces the adapted model exactly, files that
hold only the adapter, and clear errors for empty, tampered, truncated and mismatched files."""

import os

import numpy as np
import pytest

from minilora import io
from minilora.checkpoint import load_checkpoint
from minilora.lora import (LoRAConfig, LoRALinear, add_adapter, apply_lora, load_adapter, merge_adapters,
                           save_adapter, set_adapter)
from minilora.lora.files import adapter_and_checkpoint_sizes
from minilora.nn import GPTConfig
from test_lora_support import logits, randomise_adapter, relative_error, tiny_gpt, tokens

CONFIG = LoRAConfig(r=4, alpha=8, target_modules=("q_proj", "v_proj", "fc_in"), bias="lora_only",
                    modules_to_save=["lm_head"], rank_pattern={"fc_in": 2})


def trained(rng, config=CONFIG, seed=0):
    """A tiny GPT with an adapter whose every saved part differs from its starting value."""
    model = apply_lora(tiny_gpt(seed), config)
    randomise_adapter(model, "default", rng)
    for name, p in model.named_parameters():
        if p.requires_grad and "adapters" not in name:
            p.data[...] += (0.1 * rng.standard_normal(p.shape)).astype(p.dtype)
    return model


def test_round_trip_reproduces_the_adapted_model_exactly(rng, tmp_path):
    model = trained(rng)
    path = save_adapter(model, str(tmp_path / "adapter"))
    arrays, metadata = io.load_arrays(path)
    layers = [f"h.{i}.{m}" for i in range(2) for m in ("attn.q_proj", "attn.v_proj", "mlp.fc_in")]
    assert set(arrays) == ({f"{n}.lora_{m}" for n in layers for m in "AB"} | {f"{n}.bias" for n in layers}
                           | {"lm_head.weight"})
    assert arrays["h.0.mlp.fc_in.lora_A"].shape == (2, 16) and arrays["h.1.attn.q_proj.lora_B"].shape == (16, 4)
    assert LoRAConfig.from_dict(metadata["config"]) == CONFIG

    fresh = tiny_gpt(0)                                   # the same base weights, no adapter
    assert load_adapter(fresh, path, adapter_name="task") is fresh
    idx = tokens(rng)
    assert np.array_equal(logits(fresh, idx), logits(model, idx))
    assert fresh.active_adapter == "task" and fresh.lora_configs["task"] == CONFIG
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == \
        {n.replace(".default.", ".task.") for n, p in model.named_parameters() if p.requires_grad}


def test_load_next_to_other_adapters(rng, tmp_path):
    model = trained(rng, LoRAConfig(r=2))
    path = save_adapter(model, str(tmp_path / "a"))
    other = apply_lora(tiny_gpt(0), LoRAConfig(r=3, target_modules=("k_proj",)), adapter_name="k")
    load_adapter(other, path, adapter_name="qv")
    idx = tokens(rng)
    assert np.array_equal(logits(other, idx), logits(model, idx))
    set_adapter(other, "k")
    assert list(other.lora_configs) == ["k", "qv"]
    with pytest.raises(ValueError, match="already has an adapter named 'qv'"):
        load_adapter(other, path, adapter_name="qv")
    merge_adapters(other)
    with pytest.raises(RuntimeError, match="merged into its weight; unmerge first"):
        load_adapter(other, path, adapter_name="again")
    assert list(other.lora_configs) == ["k", "qv"]


def test_saving_a_model_without_lora_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="has no LoRA layers, so there is no adapter to save"):
        save_adapter(tiny_gpt(), str(tmp_path / "empty"))
    assert os.listdir(tmp_path) == []
    model = apply_lora(tiny_gpt(), LoRAConfig(r=2))
    with pytest.raises(ValueError, match="no adapter named 'other'"):
        save_adapter(model, str(tmp_path / "x"), adapter_name="other")


def test_save_writes_the_named_adapter_not_the_active_one(rng, tmp_path):
    model = trained(rng, LoRAConfig(r=2))
    add_adapter(model, "second", LoRAConfig(r=1, target_modules=("k_proj",)))
    path = save_adapter(model, str(tmp_path / "second"), adapter_name="second")
    arrays, _ = io.load_arrays(path)
    assert set(arrays) == {f"h.{i}.attn.k_proj.lora_{m}" for i in range(2) for m in "AB"}


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_tampered_or_truncated_file_is_an_error(rng, tmp_path, damage):
    path = save_adapter(trained(rng), str(tmp_path / "adapter"))
    data = bytearray(open(path, "rb").read())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    open(path, "wb").write(bytes(data))
    model = tiny_gpt(0)
    with pytest.raises(ValueError, match="truncated or corrupted|checksum mismatch|not an .npz"):
        load_adapter(model, path)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())


def test_a_config_edited_to_disagree_with_the_weights_is_an_error(rng, tmp_path):
    """A file re-written with a valid checksum but a config that does not match its arrays."""
    path = save_adapter(trained(rng, LoRAConfig(r=2)), str(tmp_path / "adapter"))
    arrays, metadata = io.load_arrays(path)
    metadata["config"]["r"] = 3
    io.save_arrays(path, arrays, metadata)
    with pytest.raises(ValueError, match="h.0.attn.q_proj.lora_A: the file has \\(2, 16\\) float32, "
                                         "the model needs \\(3, 16\\) float32"):
        load_adapter(tiny_gpt(0), path)
    metadata["config"]["rank"] = 3
    io.save_arrays(path, arrays, metadata)
    with pytest.raises(ValueError, match="unknown keys \\['rank'\\]"):
        load_adapter(tiny_gpt(0), path)


@pytest.mark.parametrize("other, fragment", [
    (GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=32),
     "h.0.attn.q_proj.weight: the model has (32, 32), the adapter was made for (16, 16)"),
    (GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16),
     "h.1.attn.q_proj.weight: not in the model"),
    (GPTConfig(vocab_size=13, block_size=8, n_layer=3, n_head=2, n_embd=16),
     "missing array h.2.attn.q_proj.lora_A"),
    (GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16),
     "lm_head.weight: the model has (20, 16), the adapter was made for (13, 16)"),
])
def test_a_mismatched_base_model_is_named_and_left_unchanged(rng, tmp_path, other, fragment):
    path = save_adapter(trained(rng), str(tmp_path / "adapter"))
    model = tiny_gpt(0, other)
    names = [n for n, _ in model.named_parameters()]
    with pytest.raises(ValueError) as info:
        load_adapter(model, path)
    assert fragment in str(info.value)
    assert [n for n, _ in model.named_parameters()] == names


def test_a_dtype_mismatch_is_an_error(rng, tmp_path):
    path = save_adapter(trained(rng, LoRAConfig(r=2)), str(tmp_path / "adapter"))
    with pytest.raises(ValueError, match="h.0.attn.q_proj.lora_A: the file has \\(2, 16\\) float32, "
                                         "the model needs \\(2, 16\\) float64"):
        load_adapter(tiny_gpt(0).to(dtype="float64"), path)


def test_a_file_that_is_not_an_adapter(tmp_path):
    path = io.save_arrays(str(tmp_path / "other"), {"x": np.zeros(3, np.float32)}, {"format": "something"})
    with pytest.raises(ValueError, match="is not a minilora adapter file"):
        load_adapter(tiny_gpt(), path)


def test_adapter_is_small_next_to_the_full_checkpoint(rng, tmp_path):
    model = trained(rng, LoRAConfig(r=2))
    sizes = adapter_and_checkpoint_sizes(model, str(tmp_path))
    assert os.path.getsize(sizes["adapter_path"]) == sizes["adapter_bytes"]
    assert os.path.getsize(sizes["checkpoint_path"]) == sizes["checkpoint_bytes"]
    lora_bytes = 4 * 2 * 2 * 2 * (16 + 16)          # float32, 2 layers x (q, v), r = 2
    full_bytes = 4 * tiny_gpt().num_parameters()
    assert lora_bytes <= sizes["adapter_bytes"] < lora_bytes + 20_000
    assert full_bytes <= sizes["checkpoint_bytes"] < full_bytes + 40_000
    # the checkpoint is the merged model: a plain GPT that computes what the adapted one does
    idx = tokens(rng)
    merged = load_checkpoint(sizes["checkpoint_path"])
    assert relative_error(logits(merged, idx), logits(model, idx)) < 1e-5
    assert isinstance(model.h[0].attn.q_proj, LoRALinear)      # the model itself is left as it was
