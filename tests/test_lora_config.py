"""LoRAConfig: validation, JSON round trip, scaling; target selection against a model's layers."""

import json
import math

import numpy as np
import pytest

from minilora.lora import LoRAConfig
from minilora.lora.count import gpt_linear_shapes
from minilora.lora.targets import select_targets
from minilora.nn import GPTConfig

SMALL = GPTConfig(vocab_size=11, block_size=8, n_layer=3, n_head=2, n_embd=16)
LINEARS = gpt_linear_shapes(SMALL)


# ---- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, fragment", [
    (dict(r=0), "r must be an int >= 1"),
    (dict(r=2.0), "r must be an int >= 1"),
    (dict(r=True), "r must be an int >= 1"),
    (dict(alpha=0), "alpha must be a finite number > 0"),
    (dict(alpha=-1.0), "alpha must be a finite number > 0"),
    (dict(alpha=float("inf")), "alpha must be a finite number > 0"),
    (dict(dropout=1.0), "dropout must be a number in [0, 1)"),
    (dict(dropout=-0.1), "dropout must be a number in [0, 1)"),
    (dict(init="xavier"), "init must be one of"),
    (dict(bias="some"), "bias must be one of"),
    (dict(target_modules=()), "target_modules must name at least one module"),
    (dict(target_modules="q_proj(("), "does not compile"),
    (dict(layers_to_transform=[-1]), "layers_to_transform must be None or a non-empty list"),
    (dict(layers_to_transform=[]), "layers_to_transform must be None or a non-empty list"),
    (dict(rank_pattern={"q_proj": 0}), "rank_pattern['q_proj'] must be an int >= 1"),
    (dict(alpha_pattern={"q_proj": -2}), "alpha_pattern['q_proj'] must be a finite number > 0"),
    (dict(exclude_modules="all-linear"), "exclude_modules cannot be 'all-linear'"),
])
def test_bad_values_are_rejected_with_the_argument_named(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        LoRAConfig(**kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("kwargs", [dict(target_modules=[1]), dict(modules_to_save="lm_head"),
                                    dict(use_rslora=1), dict(rank_pattern=[("q_proj", 2)])])
def test_wrong_types_are_type_errors(kwargs):
    with pytest.raises(TypeError):
        LoRAConfig(**kwargs)


def test_numpy_numbers_are_taken_and_kept_as_python_numbers():
    """r = np.int64(4) from an array of ranks, alpha = np.float32(8): stored as int and float, so the
    config still writes to JSON."""
    config = LoRAConfig(r=np.int64(4), alpha=np.float32(8), dropout=np.float64(0.1),
                        rank_pattern={"q_proj": np.int32(2)}, alpha_pattern={"q_proj": np.int64(3)})
    assert (config.r, config.alpha, config.dropout) == (4, 8.0, 0.1)
    assert type(config.r) is int and type(config.alpha) is float and type(config.dropout) is float
    assert type(config.rank_pattern["q_proj"]) is int and type(config.alpha_pattern["q_proj"]) is int
    assert LoRAConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_json_round_trip_gives_an_equal_config():
    config = LoRAConfig(r=4, alpha=8.0, dropout=0.1, target_modules=["q_proj", "attn.v_proj"],
                        exclude_modules=["h.0.attn.q_proj"], modules_to_save=["lm_head"], use_rslora=True,
                        init="kaiming", bias="lora_only", layers_to_transform=[2, 0],
                        rank_pattern={"v_proj": 2}, alpha_pattern={"v_proj": 3.0})
    text = json.dumps(config.to_dict())
    again = LoRAConfig.from_dict(json.loads(text))
    assert again == config
    assert again.layers_to_transform == (0, 2)
    assert again.target_modules == ("q_proj", "attn.v_proj")


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys \\['rank'\\]"):
        LoRAConfig.from_dict({"rank": 4})


def test_scaling_is_alpha_over_r_or_over_sqrt_r():
    assert LoRAConfig(r=4, alpha=16).scaling_for("h.0.attn.q_proj") == 4.0
    assert LoRAConfig(r=4, alpha=16, use_rslora=True).scaling_for("h.0.attn.q_proj") == 8.0
    config = LoRAConfig(r=8, alpha=16, rank_pattern={"v_proj": 2}, alpha_pattern={"h.1.attn.v_proj": 1})
    assert config.rank_for("h.0.attn.v_proj") == 2 and config.rank_for("h.0.attn.q_proj") == 8
    assert config.scaling_for("h.0.attn.v_proj") == 8.0   # 16 / 2
    assert config.scaling_for("h.1.attn.v_proj") == 0.5   # 1 / 2
    assert math.isclose(LoRAConfig(r=9, alpha=6, use_rslora=True).scaling_for("x"), 2.0)


# ---- which layers a config selects ---------------------------------------------------------------
def test_names_and_suffixes_select_in_model_order():
    assert select_targets(LINEARS, LoRAConfig(target_modules=("v_proj", "q_proj"))) == [
        f"h.{i}.attn.{p}" for i in range(3) for p in ("q_proj", "v_proj")]
    assert select_targets(LINEARS, LoRAConfig(r=4, target_modules=("mlp.fc_in",))) == [
        f"h.{i}.mlp.fc_in" for i in range(3)]
    # a suffix is made of whole dotted parts: "proj" is not a suffix of "h.0.attn.q_proj"
    with pytest.raises(ValueError, match="'proj' matches no Linear layer"):
        select_targets(LINEARS, LoRAConfig(target_modules=("proj",)))


def test_a_string_is_a_regex_over_whole_names():
    config = LoRAConfig(target_modules=r"h\.[02]\.attn\.(q|k)_proj")
    assert select_targets(LINEARS, config) == ["h.0.attn.q_proj", "h.0.attn.k_proj",
                                               "h.2.attn.q_proj", "h.2.attn.k_proj"]
    with pytest.raises(ValueError, match="matches no Linear layer"):
        select_targets(LINEARS, LoRAConfig(target_modules="q_proj"))  # not a whole name


def test_all_linear_leaves_out_the_output_head():
    selected = select_targets(LINEARS, LoRAConfig(r=4, target_modules="all-linear"))
    assert "lm_head" not in selected and len(selected) == 3 * 6


def test_exclude_and_layers_to_transform():
    config = LoRAConfig(target_modules=("q_proj", "v_proj"), exclude_modules=("h.1.attn.v_proj",),
                        layers_to_transform=[1, 2])
    assert select_targets(LINEARS, config) == ["h.1.attn.q_proj", "h.2.attn.q_proj", "h.2.attn.v_proj"]
    with pytest.raises(ValueError, match="blocks \\[5\\].*0..2"):
        select_targets(LINEARS, LoRAConfig(layers_to_transform=[5]))
    with pytest.raises(ValueError, match="exclude_modules entry 'h.7.attn.q_proj' matches no Linear"):
        select_targets(LINEARS, LoRAConfig(exclude_modules=("h.7.attn.q_proj",)))
    with pytest.raises(ValueError, match="selects no layer"):
        select_targets(LINEARS, LoRAConfig(target_modules=("q_proj",), exclude_modules=("q_proj",)))


def test_an_unknown_target_lists_the_linear_layers_that_exist():
    with pytest.raises(ValueError) as info:
        select_targets(LINEARS, LoRAConfig(target_modules=("q_proj", "query")))
    message = str(info.value)
    assert "'query' matches no Linear layer" in message
    for name in ("h.*.attn.q_proj", "h.*.attn.k_proj", "h.*.mlp.fc_out", "lm_head"):
        assert name in message


def test_a_target_that_is_not_a_linear_says_what_it_is():
    with pytest.raises(ValueError, match="names h.0.ln_1, a LayerNorm, not a Linear"):
        select_targets(LINEARS, LoRAConfig(target_modules=("ln_1",)), {"h.0.ln_1": "LayerNorm"})


def test_rank_must_fit_every_targeted_layer():
    narrow = {"a.q_proj": (16, 3), "a.v_proj": (16, 16)}
    with pytest.raises(ValueError, match="r=4 is too large for a.q_proj.*min\\(in, out\\) = 3"):
        select_targets(narrow, LoRAConfig(r=4))
    assert select_targets(narrow, LoRAConfig(r=4, rank_pattern={"a.q_proj": 3})) == ["a.q_proj", "a.v_proj"]
    with pytest.raises(ValueError, match="r=17 is too large for h.0.attn.q_proj"):
        select_targets(LINEARS, LoRAConfig(r=17))
    # fc_in is 16 -> 64: r = 16 fits, r = 17 does not
    assert len(select_targets(LINEARS, LoRAConfig(r=16, target_modules=("fc_in",)))) == 3


def test_a_rank_pattern_key_that_matches_no_target_is_an_error():
    with pytest.raises(ValueError, match="rank_pattern key 'k_proj' matches none of the adapted layers"):
        select_targets(LINEARS, LoRAConfig(rank_pattern={"k_proj": 2}))
