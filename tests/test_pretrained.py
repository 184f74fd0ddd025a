"""GPT.from_pretrained: a GPT-2 checkpoint in Hugging Face's layout gives minilora's GPT the logits
that GPT-2's own forward (tests/gpt2_files.py, written in NumPy from the HF tensors) computes."""

import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from gpt2_files import SMALL, gpt2_forward, write_gpt2_checkpoint
from minilora.nn import GPT
from minilora.nn.pretrained import gpt2_module, minilora_modules


def idx_for(rng, config, B=2):
    return rng.integers(0, config["vocab_size"], size=(B, config["n_positions"]))


@pytest.mark.parametrize("prefix", ["transformer.", ""], ids=["save_pretrained_names", "gpt2_hub_names"])
def test_logits_match_gpt2s_forward(tmp_path, rng, prefix):
    config, tensors = write_gpt2_checkpoint(tmp_path, rng, prefix=prefix)
    model = GPT.from_pretrained(tmp_path, dtype="float64")
    idx = idx_for(rng, config)
    logits, _ = model(idx)
    expected = gpt2_forward(tensors, config, idx)
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert model.config.block_size == SMALL["n_positions"] and model.config.dropout == 0.0
    assert model.pretrained_layout == "gpt2"


def test_float32_by_default_and_a_safetensors_path_works(tmp_path, rng):
    config, tensors = write_gpt2_checkpoint(tmp_path, rng)
    model = GPT.from_pretrained(tmp_path / "model.safetensors")
    assert model.wte.weight.dtype == np.float32
    idx = idx_for(rng, config, B=1)
    logits, _ = model(idx)
    np.testing.assert_allclose(logits.numpy(), gpt2_forward(tensors, config, idx), rtol=1e-4, atol=1e-5)


def test_the_weights_land_where_the_table_says(tmp_path, rng):
    """Spot checks of the conversion, each against the HF tensor directly."""
    _, t = write_gpt2_checkpoint(tmp_path, rng)
    model = GPT.from_pretrained(tmp_path, dtype="float64")
    C = SMALL["n_embd"]
    c_attn = t["transformer.h.1.attn.c_attn.weight"]
    np.testing.assert_array_equal(model.h[1].attn.k_proj.weight.numpy(), c_attn[:, C:2 * C].T)
    np.testing.assert_array_equal(model.h[1].attn.v_proj.bias.numpy(), t["transformer.h.1.attn.c_attn.bias"][2 * C:])
    np.testing.assert_array_equal(model.h[0].mlp.fc_out.weight.numpy(), t["transformer.h.0.mlp.c_proj.weight"].T)
    np.testing.assert_array_equal(model.lm_head.weight.numpy(), t["transformer.wte.weight"])
    assert model.lm_head.weight.data is not model.wte.weight.data  # a copy: minilora's head is untied


def test_an_untied_lm_head_in_the_file_is_used(tmp_path, rng):
    config, tensors = write_gpt2_checkpoint(tmp_path, rng)
    tensors["lm_head.weight"] = rng.standard_normal((SMALL["vocab_size"], SMALL["n_embd"])).astype(np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    model = GPT.from_pretrained(tmp_path, dtype="float64")
    idx = idx_for(rng, config, B=1)
    np.testing.assert_allclose(model(idx)[0].numpy(), gpt2_forward(tensors, config, idx), rtol=1e-12, atol=1e-12)


def test_old_checkpoints_causal_mask_buffers_are_skipped(tmp_path, rng):
    config, tensors = write_gpt2_checkpoint(tmp_path, rng, prefix="")
    T = config["n_positions"]
    tensors["h.0.attn.bias"] = np.tril(np.ones((1, 1, T, T), np.float32))
    tensors["h.0.attn.masked_bias"] = np.array(-1e4, np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    GPT.from_pretrained(tmp_path)


# ---- clear errors -----------------------------------------------------------------------------------
def rewrite(tmp_path, tensors):
    save_file(tensors, str(tmp_path / "model.safetensors"))


def test_a_missing_tensor_is_named(tmp_path, rng):
    _, tensors = write_gpt2_checkpoint(tmp_path, rng)
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    rewrite(tmp_path, tensors)
    with pytest.raises(ValueError, match=r"missing tensor 'h\.1\.mlp\.c_fc\.bias' \(for h\.1\.mlp\.fc_in\.bias\)"):
        GPT.from_pretrained(tmp_path)


def test_a_shape_that_does_not_fit_is_named(tmp_path, rng):
    _, tensors = write_gpt2_checkpoint(tmp_path, rng)
    C = SMALL["n_embd"]
    tensors["transformer.h.0.attn.c_attn.weight"] = np.zeros((3 * C, C), np.float32)  # (out, in): not Conv1D
    rewrite(tmp_path, tensors)
    with pytest.raises(ValueError, match=rf"'h\.0\.attn\.c_attn\.weight' has shape \({3 * C}, {C}\), "
                                         rf"h\.0\.attn\.q_proj\.weight needs \({C}, {3 * C}\)"):
        GPT.from_pretrained(tmp_path)


def test_an_unexpected_tensor_is_named(tmp_path, rng):
    _, tensors = write_gpt2_checkpoint(tmp_path, rng)
    tensors["transformer.h.0.attn.c_attn.lora_A"] = np.zeros((2, 3), np.float32)
    rewrite(tmp_path, tensors)
    with pytest.raises(ValueError, match=r"unexpected tensor 'h\.0\.attn\.c_attn\.lora_A'"):
        GPT.from_pretrained(tmp_path)


@pytest.mark.parametrize("field, value, says", [
    ("activation_function", "gelu", "tanh approximation"),
    ("layer_norm_epsilon", 1e-6, "eps 1e-5"),
    ("n_inner", 20, "4·n_embd"),
    ("scale_attn_by_inverse_layer_idx", True, "layer index"),
    ("model_type", "llama", "model_type 'gpt2'"),
])
def test_a_config_minilora_cannot_express_is_an_error(tmp_path, rng, field, value, says):
    write_gpt2_checkpoint(tmp_path, rng, **{field: value})
    with pytest.raises(ValueError, match=f"{field}.*{says}|{says}"):
        GPT.from_pretrained(tmp_path)


def test_n_inner_of_four_times_n_embd_is_fine(tmp_path, rng):
    write_gpt2_checkpoint(tmp_path, rng, n_inner=4 * SMALL["n_embd"])
    GPT.from_pretrained(tmp_path)


def test_missing_files_and_bad_paths(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="config.json"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="path must be a folder"):
        GPT.from_pretrained(tmp_path / "notes.txt")
    write_gpt2_checkpoint(tmp_path, rng)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(ValueError, match="cannot be read as a .safetensors file"):
        GPT.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match="floating dtype"):
        GPT.from_pretrained(tmp_path, dtype="int32")


def test_config_json_that_is_not_json(tmp_path, rng):
    write_gpt2_checkpoint(tmp_path, rng)
    (tmp_path / "config.json").write_text("{n_embd: 12")
    with pytest.raises(ValueError, match="not valid JSON"):
        GPT.from_pretrained(tmp_path)


# ---- the name table ------------------------------------------------------------------------------------
def test_the_name_table_both_ways():
    assert gpt2_module("h.3.attn.k_proj") == ("transformer.h.3.attn.c_attn", 1, True)
    assert gpt2_module("h.0.mlp.fc_in") == ("transformer.h.0.mlp.c_fc", None, True)
    assert gpt2_module("lm_head") == ("lm_head", None, False)
    assert gpt2_module("h.2.ln_2") == ("transformer.h.2.ln_2", None, False)
    assert minilora_modules("transformer.h.1.attn.c_attn", 2) == ["h.1.attn.q_proj", "h.1.attn.k_proj",
                                                                  "h.1.attn.v_proj"]
    assert minilora_modules("transformer.h.1.mlp.c_proj", 2) == ["h.1.mlp.fc_out"]
    for bad in ("h.0.attn", "h.0.attn.causal_mask", "blocks.0.attn.q_proj"):
        with pytest.raises(ValueError, match="not a module of minilora's GPT"):
            gpt2_module(bad)
    with pytest.raises(ValueError, match="with 2 blocks"):
        minilora_modules("transformer.h.2.attn.c_attn", 2)


# ---- fetching GPT-2 (no network here: the Hub client is replaced) -----------------------------------
def test_fetch_without_huggingface_hub_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    import sys

    from minilora import cli, hub

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` now fails
    with pytest.raises(hub.HubUnavailable, match="needs the huggingface_hub package") as info:
        hub.fetch_gpt2(tmp_path)
    assert "\n" not in str(info.value)
    assert cli.main(["fetch-gpt2", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "huggingface_hub" in out


def test_fetch_without_network_says_so_in_one_line(monkeypatch, tmp_path):
    import sys
    import types

    from minilora import hub

    def offline(repo_id, filename, local_dir):
        raise OSError("Failed to resolve 'huggingface.co'\n(more lines the user does not need)")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=offline))
    with pytest.raises(hub.HubUnavailable, match=r"could not download config.json of 'gpt2' .*"
                                                 r"\(OSError: Failed to resolve 'huggingface.co'\)$"):
        hub.fetch_gpt2(tmp_path)


def test_fetch_puts_the_four_files_where_from_pretrained_reads_them(monkeypatch, tmp_path, rng):
    import shutil
    import sys
    import types

    from minilora import hub

    source = tmp_path / "hub"
    write_gpt2_checkpoint(source, rng)
    (source / "vocab.json").write_text("{}")
    (source / "merges.txt").write_text("#version: 0.2\n")
    asked = []

    def download(repo_id, filename, local_dir):
        asked.append((repo_id, filename))
        return shutil.copy(source / filename, os.path.join(local_dir, filename))

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=download))
    folder = tmp_path / "gpt2"
    folder.mkdir()
    assert hub.fetch_gpt2(folder) == folder
    assert asked == [("gpt2", name) for name in hub.GPT2_FILES]
    GPT.from_pretrained(folder)
