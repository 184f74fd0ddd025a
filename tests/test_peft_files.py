"""PEFT-format adapter files, checked against what PEFT's LoRA writes and reads (key names, shapes,
the JSON fields), written down here; no torch needed. tests/test_peft_interop.py loads the same
files in PEFT itself where torch, peft and transformers are installed."""

import copy
import json

import numpy as np
import pytest

import minilora
from safetensors import safe_open
from safetensors.numpy import save_file

from gpt2_files import SMALL, randomly_trained, write_gpt2_checkpoint
from minilora.lora import LoRAConfig, apply_lora, load_peft_adapter, save_peft_adapter
from minilora.lora.inject import get_module
from minilora.nn import GPT, GPTConfig

C, L = SMALL["n_embd"], SMALL["n_layer"]
P = "base_model.model."


def tiny_gpt(dtype="float64"):
    return GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=C)).to(dtype=dtype)


def read(directory):
    with open(directory / "adapter_config.json") as f:
        config = json.load(f)
    with safe_open(str(directory / "adapter_model.safetensors"), framework="np") as f:
        return config, {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def logits(model, idx):
    return model(idx)[0].numpy()


# ---- what is written: the twin layout (minilora's module names) ----------------------------------------
def test_keys_shapes_and_fields(tmp_path, rng):
    model = randomly_trained(tiny_gpt(), rng, LoRAConfig(r=2, alpha=6, target_modules=("q_proj", "v_proj"),
                                                rank_pattern={"h.1.attn.v_proj": 3}, dropout=0.1))
    assert save_peft_adapter(model, tmp_path) == tmp_path
    config, tensors, header = read(tmp_path)
    assert header.keys() == {"format", "minilora.adapter_config"} and header["format"] == "pt"
    record = json.loads(header["minilora.adapter_config"])  # the fields read back, to check the pair
    assert record["r"] == 2 and record["rank_pattern"] == {r"h\.1\.attn\.v_proj": 3}
    assert set(record) < set(config) and all(config[k] == v for k, v in record.items())
    expected = {}
    for i in range(L):
        for proj, r in (("q_proj", 2), ("v_proj", 3 if i == 1 else 2)):
            expected[f"{P}h.{i}.attn.{proj}.lora_A.weight"] = (r, C)
            expected[f"{P}h.{i}.attn.{proj}.lora_B.weight"] = (C, r)
    assert {k: v.shape for k, v in tensors.items()} == expected
    np.testing.assert_array_equal(tensors[f"{P}h.1.attn.v_proj.lora_B.weight"], model.h[1].attn.v_proj.lora_B.numpy())
    assert config["peft_type"] == "LORA" and config["r"] == 2 and config["lora_alpha"] == 6
    assert config["target_modules"] == ["q_proj", "v_proj"]
    assert config["rank_pattern"] == {r"h\.1\.attn\.v_proj": 3} and config["alpha_pattern"] == {}
    assert config["lora_dropout"] == 0.1 and config["use_rslora"] is False and config["bias"] == "none"
    assert config["init_lora_weights"] == "gaussian" and config["fan_in_fan_out"] is False
    assert config["use_dora"] is False and config["modules_to_save"] is None


def test_some_blocks_only_gives_full_names(tmp_path, rng):
    model = randomly_trained(tiny_gpt(), rng, LoRAConfig(r=1, target_modules=("q_proj",), layers_to_transform=[1],
                                                init="kaiming"))
    save_peft_adapter(model, tmp_path)
    config, tensors, _ = read(tmp_path)
    assert config["target_modules"] == ["h.1.attn.q_proj"] and config["init_lora_weights"] is True
    assert set(tensors) == {f"{P}h.1.attn.q_proj.lora_A.weight", f"{P}h.1.attn.q_proj.lora_B.weight"}


def test_trained_biases_go_where_peft_loads_them(tmp_path, rng):
    model = randomly_trained(tiny_gpt(), rng, LoRAConfig(r=2, target_modules=("q_proj",), bias="lora_only"))
    save_peft_adapter(model, tmp_path / "lora_only")
    _, tensors, _ = read(tmp_path / "lora_only")
    assert {k for k in tensors if "bias" in k} == {f"{P}h.{i}.attn.q_proj.base_layer.bias" for i in range(L)}
    np.testing.assert_array_equal(tensors[f"{P}h.0.attn.q_proj.base_layer.bias"], model.h[0].attn.q_proj.bias.numpy())

    model = randomly_trained(tiny_gpt(), rng, LoRAConfig(r=2, target_modules=("q_proj",), bias="all"))
    save_peft_adapter(model, tmp_path / "all")
    _, tensors, _ = read(tmp_path / "all")
    biases = {k for k in tensors if "bias" in k}
    assert f"{P}h.0.attn.q_proj.base_layer.bias" in biases and f"{P}h.0.attn.k_proj.bias" in biases
    assert f"{P}h.1.ln_2.bias" in biases and f"{P}ln_f.bias" in biases and len(biases) == 2 * 8 + 1


def test_modules_to_save_are_written_whole(tmp_path, rng):
    model = randomly_trained(tiny_gpt(), rng, LoRAConfig(r=2, modules_to_save=("lm_head",)))
    save_peft_adapter(model, tmp_path)
    config, tensors, _ = read(tmp_path)
    assert config["modules_to_save"] == ["lm_head"]
    np.testing.assert_array_equal(tensors[f"{P}lm_head.weight"], model.lm_head.copies["default"].weight.numpy())


# ---- what is written: GPT-2's layout ----------------------------------------------------------------------
@pytest.fixture
def gpt2(tmp_path, rng):
    write_gpt2_checkpoint(tmp_path / "gpt2", rng)
    return GPT.from_pretrained(tmp_path / "gpt2", dtype="float64")


def delta(layer):
    return layer.scaling * layer.lora_B.numpy() @ layer.lora_A.numpy()


def test_q_and_v_become_one_exact_c_attn_adapter(tmp_path, rng, gpt2):
    model = randomly_trained(gpt2, rng, LoRAConfig(r=2, alpha=5, target_modules=("q_proj", "v_proj", "fc_in"),
                                          rank_pattern={"v_proj": 3}, bias="lora_only"))
    save_peft_adapter(model, tmp_path / "out")   # a model from GPT-2: GPT-2's names by default
    config, tensors, header = read(tmp_path / "out")
    c_attn = f"{P}transformer.h.1.attn.c_attn"
    A, B = tensors[f"{c_attn}.lora_A.weight"], tensors[f"{c_attn}.lora_B.weight"]
    assert A.shape == (5, C) and B.shape == (3 * C, 5)
    assert config["target_modules"] == ["c_attn", "c_fc"] and config["fan_in_fan_out"] is True
    assert config["rank_pattern"][r"transformer\.h\.1\.attn\.c_attn"] == 5
    assert tensors[f"{P}transformer.h.1.mlp.c_fc.lora_B.weight"].shape == (4 * C, 2)
    # PEFT's update of c_attn, lora_alpha/r·B·A, is q's update, nothing for k, then v's update.
    alpha = config["alpha_pattern"].get(r"transformer\.h\.1\.attn\.c_attn", config["lora_alpha"])
    fused = alpha / 5 * B @ A
    attn = model.h[1].attn
    np.testing.assert_allclose(fused[:C], delta(attn.q_proj), rtol=1e-12, atol=1e-14)
    assert not fused[C:2 * C].any()
    np.testing.assert_allclose(fused[2 * C:], delta(attn.v_proj), rtol=1e-12, atol=1e-14)
    # the bias of c_attn is q's, k's and v's, one after the other
    np.testing.assert_array_equal(tensors[f"{c_attn}.base_layer.bias"],
                                  np.concatenate([attn.q_proj.bias.numpy(), attn.k_proj.bias.numpy(),
                                                  attn.v_proj.bias.numpy()]))
    assert json.loads(header["minilora.fused_parts"])["transformer.h.1.attn.c_attn"] == [[0, 2, 5], [2, 3, 5]]


def test_modules_to_save_of_a_third_of_c_attn_is_an_error(tmp_path, rng, gpt2):
    model = randomly_trained(gpt2, rng, LoRAConfig(r=2, target_modules=("v_proj",), modules_to_save=("h.0.attn.q_proj",)))
    with pytest.raises(ValueError, match="a third of GPT-2's fused transformer.h.0.attn.c_attn"):
        save_peft_adapter(model, tmp_path)
    save_peft_adapter(model, tmp_path, layout="minilora")


# ---- round trips --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["minilora", "gpt2"])
@pytest.mark.parametrize("config", [
    LoRAConfig(r=2, alpha=4, target_modules=("q_proj", "k_proj", "v_proj")),
    LoRAConfig(r=1, alpha=3, target_modules="all-linear", rank_pattern={"v_proj": 2}, alpha_pattern={"q_proj": 7},
               bias="lora_only"),
    LoRAConfig(r=2, target_modules=("v_proj", "o_proj"), use_rslora=True, bias="all", modules_to_save=("ln_f",)),
    LoRAConfig(r=2, alpha=3, target_modules=("q_proj", "v_proj", "fc_in"), rank_pattern={"v_proj": 1},
               use_dora=True, bias="lora_only"),
], ids=["qkv", "patterns_lora_only", "rslora_all_saved", "dora_q_v_fc_in"])
def test_save_then_load_gives_the_same_model(tmp_path, rng, gpt2, layout, config):
    base = copy.deepcopy(gpt2)
    model = randomly_trained(gpt2, rng, config)
    save_peft_adapter(model, tmp_path / "out", layout=layout)
    loaded = load_peft_adapter(base, tmp_path / "out", layout=layout)
    idx = rng.integers(0, SMALL["vocab_size"], (2, SMALL["n_positions"]))
    np.testing.assert_allclose(logits(loaded, idx), logits(model, idx), rtol=1e-12, atol=1e-12)
    ranks = {n: m.r for n, m in model.named_modules() if type(m).__name__ == "LoRALinear"}
    assert {n: m.r for n, m in loaded.named_modules() if type(m).__name__ == "LoRALinear"} == ranks


# ---- files PEFT wrote (built here the way PEFT writes them) ----------------------------------------------------
def peft_files(directory, tensors, **fields):
    directory.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj"],
              "bias": "none", "use_rslora": False, "init_lora_weights": True, "fan_in_fan_out": False,
              "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None, "layers_to_transform": None,
              "layers_pattern": None, "use_dora": False, "lora_bias": False, "loftq_config": {},
              "megatron_core": "megatron.core", "peft_version": "0.21.2", "task_type": None, **fields}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    save_file({k: np.asarray(v, np.float32) for k, v in tensors.items()},
              str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    return directory


def lora_tensors(rng, modules, r, in_f=C, out_f=C):
    tensors = {}
    for m in modules:
        rank = r(m) if callable(r) else r
        tensors[f"{P}{m}.lora_A.weight"] = rng.standard_normal((rank, in_f))
        tensors[f"{P}{m}.lora_B.weight"] = rng.standard_normal((out_f, rank))
    return tensors


def test_regex_rank_and_alpha_patterns(tmp_path, rng):
    ranks = {"h.0.attn.q_proj": 2, "h.1.attn.q_proj": 3, "h.0.attn.v_proj": 4, "h.1.attn.v_proj": 4}
    d = peft_files(tmp_path, lora_tensors(rng, ranks, ranks.get), target_modules=["q_proj", "v_proj"],
                   rank_pattern={r"h\.1\.attn\.q.*": 3, "v_proj": 4}, alpha_pattern={"^h.0.*v_proj": 2})
    model = load_peft_adapter(tiny_gpt(), d)
    assert model.h[1].attn.q_proj.r == 3 and model.h[0].attn.v_proj.r == 4 and model.h[0].attn.q_proj.r == 2
    assert model.h[0].attn.v_proj.scaling == 2 / 4 and model.h[1].attn.v_proj.scaling == 8 / 4
    np.testing.assert_array_equal(model.h[1].attn.q_proj.lora_A.numpy(), read_tensor(d, "h.1.attn.q_proj.lora_A"))


def read_tensor(directory, name, suffix=".weight"):
    with safe_open(str(directory / "adapter_model.safetensors"), framework="np") as f:
        return f.get_tensor(P + name + suffix).astype(np.float64)


def test_regex_target_modules_and_layers_to_transform(tmp_path, rng, gpt2):
    modules = [f"transformer.h.1.attn.c_attn"]
    d = peft_files(tmp_path / "a", lora_tensors(rng, modules, 2, out_f=3 * C), target_modules=["c_attn"],
                   layers_to_transform=[1], fan_in_fan_out=True)
    model = load_peft_adapter(copy.deepcopy(gpt2), d)
    assert model.h[1].attn.k_proj.r == 2 and type(model.h[0].attn.k_proj).__name__ == "Linear"
    d = peft_files(tmp_path / "b", lora_tensors(rng, ["transformer.h.0.mlp.c_fc"], 2, out_f=4 * C),
                   target_modules=r".*\.0\.mlp\.c_fc")
    assert load_peft_adapter(copy.deepcopy(gpt2), d).h[0].mlp.fc_in.r == 2


def test_a_c_attn_adapter_trained_in_peft_is_exact(tmp_path, rng, gpt2):
    """Without minilora's record of the parts, q, k and v each get c_attn's full rank; the update
    of each is its rows of PEFT's B·A, checked against the base weights merged by hand."""
    name = "transformer.h.0.attn.c_attn"
    tensors = lora_tensors(rng, [name], 2, out_f=3 * C)
    tensors[f"{P}{name}.base_layer.bias"] = rng.standard_normal(3 * C)
    d = peft_files(tmp_path, tensors, target_modules=["c_attn"], layers_to_transform=[0], bias="lora_only",
                   lora_alpha=3)
    model = load_peft_adapter(copy.deepcopy(gpt2), d)
    A, B = read_tensor(d, f"{name}.lora_A"), read_tensor(d, f"{name}.lora_B")
    merged = copy.deepcopy(gpt2)
    for p, proj in enumerate(("q_proj", "k_proj", "v_proj")):
        layer = getattr(merged.h[0].attn, proj)
        layer.weight.data += 3 / 2 * B[p * C:(p + 1) * C] @ A
        layer.bias.data[...] = tensors[f"{P}{name}.base_layer.bias"].astype(np.float32)[p * C:(p + 1) * C]
    idx = rng.integers(0, SMALL["vocab_size"], (1, SMALL["n_positions"]))
    np.testing.assert_allclose(logits(model, idx), logits(merged, idx), rtol=1e-10, atol=1e-10)


# ---- errors: never a warning -----------------------------------------------------------------------------------
def error_for(tmp_path, rng, tensors=None, **fields):
    tensors = lora_tensors(rng, [f"h.{i}.attn.q_proj" for i in range(L)], 2) if tensors is None else tensors
    d = peft_files(tmp_path / "bad", tensors, **fields)
    model = tiny_gpt()
    before = model.state_dict()
    with pytest.raises(ValueError) as info:
        load_peft_adapter(model, d)
    assert not getattr(model, "lora_configs", {})
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(array, before[name])
    return str(info.value)


def test_a_misnamed_key_is_an_error(tmp_path, rng):
    tensors = lora_tensors(rng, ["h.0.attn.q_proj", "h.1.attn.qproj"], 2)
    message = error_for(tmp_path, rng, tensors)
    assert "h.1.attn.q_proj: the config targets it, the file has no adapter for it" in message
    assert "h.1.attn.qproj: an adapter in the file, but the config does not target it and the model has no " \
           "such Linear" in message
    tensors = lora_tensors(rng, [f"h.{i}.attn.q_proj" for i in range(L)], 2)
    tensors[f"{P}h.0.attn.q_proj.lora_A.default.weight"] = tensors.pop(f"{P}h.0.attn.q_proj.lora_A.weight")
    assert "not a name PEFT's LoRA writes" in error_for(tmp_path, rng, tensors)
    tensors[f"{P}h.0.attn.q_proj.lora_A.weight"] = tensors.pop(f"{P}h.0.attn.q_proj.lora_A.default.weight")
    tensors["h.0.attn.q_proj.extra"] = np.zeros(1)
    assert "PEFT's names start with 'base_model.model.'" in error_for(tmp_path, rng, tensors)


def test_a_bias_under_the_name_peft_does_not_load_is_an_error(tmp_path, rng):
    tensors = lora_tensors(rng, [f"h.{i}.attn.q_proj" for i in range(L)], 2)
    for i in range(L):
        tensors[f"{P}h.{i}.attn.q_proj.bias"] = rng.standard_normal(C)
    message = error_for(tmp_path, rng, tensors, bias="lora_only")
    assert "h.0.attn.q_proj.bias: PEFT loads the bias of an adapted layer from " \
           "base_model.model.h.0.attn.q_proj.base_layer.bias" in message
    assert "h.0.attn.q_proj.bias: not trained with bias='none'" in error_for(tmp_path, rng, tensors)


def test_a_wrong_rank_is_an_error(tmp_path, rng):
    message = error_for(tmp_path, rng, rank_pattern={"h.1.attn.q_proj": 3})
    assert "h.1.attn.q_proj.lora_A.weight has shape (2, 12), the config (r=3) and the model need (3, 12)" in message


@pytest.mark.parametrize("field, value, says", [
    ("use_dora", True, "h.0.attn.q_proj: no lora_magnitude_vector (use_dora is true)"),
    ("lora_bias", True, "a bias on lora_B"),
    ("init_lora_weights", "pissa", "init_lora_weights='pissa' cannot be expressed"),
    ("peft_type", "IA3", "peft_type is 'IA3'"),
    ("layer_replication", [[0, 1]], "layers repeated"),
    ("some_future_field", 3, "some_future_field=3 cannot be expressed"),
    ("bias", "most", "bias='most'"),
    ("r", "2", "adapter_config.json: r must be an int >= 1, got '2'"),
    ("lora_alpha", None, "adapter_config.json: lora_alpha must be a finite number > 0, got None"),
])
def test_a_field_minilora_cannot_express_is_an_error(tmp_path, rng, field, value, says):
    assert says in error_for(tmp_path, rng, **{field: value})


def test_embedding_tensors_and_dora_magnitudes_that_do_not_fit_are_named(tmp_path, rng):
    tensors = lora_tensors(rng, [f"h.{i}.attn.q_proj" for i in range(L)], 2)
    tensors[f"{P}wte.lora_embedding_A"] = np.ones((2, 17))
    assert "LoRA on an Embedding" in error_for(tmp_path, rng, tensors)
    del tensors[f"{P}wte.lora_embedding_A"]
    tensors[f"{P}h.0.attn.q_proj.lora_magnitude_vector"] = np.ones(C)
    assert "h.0.attn.q_proj.lora_magnitude_vector: a DoRA magnitude, but the config has use_dora false" \
        in error_for(tmp_path, rng, tensors)
    tensors[f"{P}h.1.attn.q_proj.lora_magnitude_vector"] = np.ones(C + 1)
    message = error_for(tmp_path, rng, tensors, use_dora=True)
    assert f"h.1.attn.q_proj.lora_magnitude_vector has shape ({C + 1},), the config (r=2) and the model need ({C},)" \
        in message and "h.0.attn.q_proj" not in message


def test_weights_and_config_of_different_saves_are_refused(tmp_path, rng):
    """A save that stopped between its two files leaves new weights beside the old config: r or alpha
    would be read wrong. The weights' header records the config they were saved with."""
    model = randomly_trained(tiny_gpt(), rng, LoRAConfig(r=2, alpha=4))
    save_peft_adapter(model, tmp_path / "old")
    save_peft_adapter(randomly_trained(tiny_gpt(), rng, LoRAConfig(r=2, alpha=8)), tmp_path / "new")
    (tmp_path / "new" / "adapter_config.json").write_bytes((tmp_path / "old" / "adapter_config.json").read_bytes())
    with pytest.raises(ValueError, match="were not saved together .*lora_alpha=4 in the config, 8 in the weights"):
        load_peft_adapter(tiny_gpt(), tmp_path / "new")
    # A field minilora does not read may be edited; the pair still loads.
    config = json.loads((tmp_path / "old" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "gpt2"
    (tmp_path / "old" / "adapter_config.json").write_text(json.dumps(config))
    load_peft_adapter(tiny_gpt(), tmp_path / "old")


def test_loading_twice_and_unknown_layouts(tmp_path, rng):
    model = randomly_trained(tiny_gpt(), rng, LoRAConfig(r=2))
    save_peft_adapter(model, tmp_path)
    with pytest.raises(ValueError, match="already has an adapter named 'default'"):
        load_peft_adapter(model, tmp_path)
    load_peft_adapter(model, tmp_path, adapter_name="second")
    with pytest.raises(ValueError, match="layout must be one of"):
        save_peft_adapter(model, tmp_path, layout="llama")
    with pytest.raises(ValueError, match="no adapter named 'third'"):
        save_peft_adapter(model, tmp_path, adapter_name="third")


def test_a_leaf_name_shared_by_two_gpt2_layers_gives_full_names(tmp_path, rng, gpt2):
    """fc_out is GPT-2's mlp.c_proj, and "c_proj" alone would also select attn.c_proj in PEFT."""
    save_peft_adapter(randomly_trained(gpt2, rng, LoRAConfig(r=2, target_modules=("fc_out",))), tmp_path)
    config, _, _ = read(tmp_path)
    assert config["target_modules"] == [f"transformer.h.{i}.mlp.c_proj" for i in range(L)]


def test_modules_to_save_that_do_not_fit(tmp_path, rng, gpt2):
    tensors = lora_tensors(rng, [f"transformer.h.{i}.mlp.c_fc" for i in range(L)], 2, out_f=4 * C)
    tensors[f"{P}transformer.h.0.attn.c_attn.weight"] = np.zeros((C, 3 * C))
    tensors[f"{P}transformer.h.0.attn.c_attn.bias"] = np.zeros(3 * C)
    tensors[f"{P}transformer.ln_f.weight"] = np.zeros(C + 1)
    tensors[f"{P}transformer.ln_f.bias"] = np.zeros(C)
    tensors[f"{P}transformer.h.0.nowhere.weight"] = np.zeros(C)
    d = peft_files(tmp_path, tensors, target_modules=["c_fc"],
                   modules_to_save=["transformer.h.0.attn.c_attn", "ln_f", "nowhere"])
    with pytest.raises(ValueError) as info:
        load_peft_adapter(copy.deepcopy(gpt2), d)
    message = str(info.value)
    assert "transformer.h.0.attn.c_attn: a fused layer saved whole cannot be split back into h.0.attn.q_proj" in message
    assert f"transformer.ln_f.weight: the file has ({C + 1},), the model has ({C},)" in message
    assert "transformer.h.0.nowhere: the model has no such module" in message


# ---- DoRA: the magnitude under PEFT's name, and the c_attn fusion exact -------------------------------------
def dora_weight(W, A, B, scaling, m):
    """PEFT's DoRA weight, written out: m ⊙ (W + s·B·A) / ‖W + s·B·A‖, the norm per output row."""
    V = W + scaling * B @ A
    return V * (m / np.linalg.norm(V, axis=1))[:, None]


def layer_weight(layer):
    """W' (out, in) that a layer computes, read off its outputs on the identity: y(I) - b."""
    eye = np.eye(layer.in_features)
    return (layer(minilora.tensor(eye)).numpy() - layer.bias.numpy()).T


def test_dora_magnitudes_are_written_under_peft_s_name(tmp_path, rng):
    model = randomly_trained(tiny_gpt(), rng, LoRAConfig(r=2, target_modules=("q_proj", "fc_in"), use_dora=True))
    save_peft_adapter(model, tmp_path)
    config, tensors, _ = read(tmp_path)
    assert config["use_dora"] is True
    magnitudes = {k: v.shape for k, v in tensors.items() if "magnitude" in k}
    assert magnitudes == {**{f"{P}h.{i}.attn.q_proj.lora_magnitude_vector": (C,) for i in range(L)},
                          **{f"{P}h.{i}.mlp.fc_in.lora_magnitude_vector": (4 * C,) for i in range(L)}}
    np.testing.assert_array_equal(tensors[f"{P}h.1.mlp.fc_in.lora_magnitude_vector"],
                                  model.h[1].mlp.fc_in.lora_magnitude.numpy())
    # What PEFT computes from the file is the layer minilora trained.
    q = model.h[0].attn.q_proj
    name = f"{P}h.0.attn.q_proj"
    np.testing.assert_allclose(dora_weight(q.base.weight.numpy(), tensors[f"{name}.lora_A.weight"],
                                           tensors[f"{name}.lora_B.weight"], config["lora_alpha"] / config["r"],
                                           tensors[f"{name}.lora_magnitude_vector"]),
                               layer_weight(q), rtol=1e-12, atol=1e-12)


def test_dora_on_q_and_v_becomes_one_exact_c_attn_adapter(tmp_path, rng, gpt2):
    """Every row of c_attn's W + s·B·A is a row of q's, k's or v's own, so its per-row norm is theirs:
    PEFT's DoRA on c_attn computes minilora's q, k and v exactly; k's magnitude is ‖W_k‖ (no change)."""
    model = randomly_trained(gpt2, rng, LoRAConfig(r=2, alpha=5, target_modules=("q_proj", "v_proj"),
                                                   rank_pattern={"v_proj": 3}, use_dora=True))
    save_peft_adapter(model, tmp_path)
    config, tensors, _ = read(tmp_path)
    attn, c_attn = model.h[1].attn, f"{P}transformer.h.1.attn.c_attn"
    assert tensors[f"{c_attn}.lora_magnitude_vector"].shape == (3 * C,) and config["use_dora"] is True
    W = np.concatenate([attn.q_proj.base.weight.numpy(), attn.k_proj.weight.numpy(), attn.v_proj.base.weight.numpy()])
    alpha = config["alpha_pattern"].get(r"transformer\.h\.1\.attn\.c_attn", config["lora_alpha"])
    peft = dora_weight(W, tensors[f"{c_attn}.lora_A.weight"], tensors[f"{c_attn}.lora_B.weight"], alpha / 5,
                       tensors[f"{c_attn}.lora_magnitude_vector"])
    np.testing.assert_allclose(peft[:C], layer_weight(attn.q_proj), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(peft[C:2 * C], attn.k_proj.weight.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(peft[2 * C:], layer_weight(attn.v_proj), rtol=1e-12, atol=1e-12)


def dora_files(directory, rng, names, out_f, **fields):
    """A DoRA adapter as PEFT writes one: A, B and a magnitude for each module, random as if trained."""
    tensors = lora_tensors(rng, names, 2, out_f=out_f)
    for name in names:
        tensors[f"{P}{name}.lora_magnitude_vector"] = rng.uniform(0.5, 2, out_f)
    return peft_files(directory, tensors, use_dora=True, **fields)


def merged_by_hand(model, directory, layers):
    """A copy of `model` with PEFT's DoRA weights from the file in `directory` written into `layers`
    ({PEFT module: [minilora Linears, in the order of its output]})."""
    with open(directory / "adapter_config.json") as f:
        config = json.load(f)
    assert not config["rank_pattern"] and not config["alpha_pattern"]
    merged = copy.deepcopy(model)
    for name, parts in layers.items():
        linears = [get_module(merged, p) for p in parts]
        W = np.concatenate([linear.weight.numpy() for linear in linears])
        new = dora_weight(W, read_tensor(directory, f"{name}.lora_A"), read_tensor(directory, f"{name}.lora_B"),
                          config["lora_alpha"] / config["r"],
                          read_tensor(directory, f"{name}.lora_magnitude_vector", suffix=""))
        for p, linear in enumerate(linears):
            linear.weight.data[...] = new[p * linear.out_features:(p + 1) * linear.out_features]
    return merged


def qkv(i):
    return [f"h.{i}.attn.{p}" for p in ("q_proj", "k_proj", "v_proj")]


def test_a_dora_adapter_peft_wrote_loads_exactly(tmp_path, rng, gpt2):
    names = [f"h.{i}.attn.q_proj" for i in range(L)]
    d = dora_files(tmp_path / "twin", rng, names, C)
    base = tiny_gpt()
    model = load_peft_adapter(copy.deepcopy(base), d)
    assert model.h[0].attn.q_proj.lora_magnitude is not None
    idx = rng.integers(0, 17, (2, 8))
    np.testing.assert_allclose(logits(model, idx), logits(merged_by_hand(base, d, {n: [n] for n in names}), idx),
                               rtol=1e-10, atol=1e-10)

    c_attn = "transformer.h.0.attn.c_attn"  # PEFT trained k's rows too: q, k and v each get an adapter
    d = dora_files(tmp_path / "gpt2", rng, [c_attn], 3 * C, target_modules=["c_attn"], layers_to_transform=[0],
                   fan_in_fan_out=True)
    model = load_peft_adapter(copy.deepcopy(gpt2), d)
    assert model.h[0].attn.k_proj.lora_magnitude is not None and type(model.h[1].attn.k_proj).__name__ == "Linear"
    idx = rng.integers(0, SMALL["vocab_size"], (1, SMALL["n_positions"]))
    np.testing.assert_allclose(logits(model, idx), logits(merged_by_hand(gpt2, d, {c_attn: qkv(0)}), idx),
                               rtol=1e-10, atol=1e-10)


def test_a_changed_magnitude_of_k_gives_k_an_adapter_and_stays_exact(tmp_path, rng, gpt2):
    """save_peft_adapter gives k (no adapter) the magnitude ‖W_k‖; if it changed in PEFT, the
    record of the parts no longer describes c_attn, and k gets an adapter of its own."""
    model = randomly_trained(copy.deepcopy(gpt2), rng, LoRAConfig(r=2, target_modules=("q_proj", "v_proj"),
                                                                  use_dora=True))
    save_peft_adapter(model, tmp_path / "ours")
    assert type(load_peft_adapter(copy.deepcopy(gpt2), tmp_path / "ours").h[0].attn.k_proj).__name__ == "Linear"
    _, tensors, header = read(tmp_path / "ours")
    key = f"{P}transformer.h.0.attn.c_attn.lora_magnitude_vector"
    tensors[key] = tensors[key].copy()
    tensors[key][C:2 * C] *= rng.uniform(0.5, 2, C)
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "adapter_config.json").write_text((tmp_path / "ours" / "adapter_config.json").read_text())
    save_file(tensors, str(edited / "adapter_model.safetensors"), metadata=header)
    loaded = load_peft_adapter(copy.deepcopy(gpt2), edited)
    assert loaded.h[0].attn.k_proj.r == 4 and type(loaded.h[1].attn.k_proj).__name__ == "Linear"
    expected = merged_by_hand(gpt2, edited, {f"transformer.h.{i}.attn.c_attn": qkv(i) for i in range(L)})
    idx = rng.integers(0, SMALL["vocab_size"], (1, SMALL["n_positions"]))
    np.testing.assert_allclose(logits(loaded, idx), logits(expected, idx), rtol=1e-10, atol=1e-10)


def test_a_pissa_adapter_is_refused_for_peft(tmp_path, rng):
    model = apply_lora(tiny_gpt(), LoRAConfig(r=2, init="pissa"))
    with pytest.raises(ValueError, match="started with PiSSA, which replaced the frozen W by its residual"):
        save_peft_adapter(model, tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()
