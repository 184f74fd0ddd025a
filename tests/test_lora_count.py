"""Parameter counting from a GPTConfig alone, against live models and the LoRA paper's numbers.

Expected values are written out by hand from the paper's setups (d_model, layers, adapted matrices,
rank): a square d x d matrix with rank r adds r·(d + d) numbers.
"""

import tracemalloc

import pytest

from minilora.lora import (LoRAConfig, adamw_state_bytes, apply_lora, count_lora_from_shapes,
                           count_lora_parameters, count_model_parameters, count_trainable_parameters,
                           finetune_memory, paper_table)
from minilora.lora.count import gpt3_config
from minilora.nn import GPT, GPTConfig
from test_lora_support import TINY, tiny_gpt


def paper_millions(count):
    """How the paper prints a count: in millions, truncated to one decimal."""
    return int(count / 1e5) / 10


# ---- the paper's trainable-parameter column ----------------------------------------------------------
@pytest.mark.parametrize("targets, r, expected, paper", [
    (("q_proj", "v_proj"), 1, 96 * 2 * 1 * (12288 + 12288), 4.7),         # Tables 4 and 15
    (("v_proj",), 2, 96 * 1 * 2 * (12288 + 12288), 4.7),                  # Table 15
    (("q_proj", "v_proj"), 2, 96 * 2 * 2 * (12288 + 12288), 9.4),         # Table 15
    (("q_proj", "v_proj"), 4, 96 * 2 * 4 * (12288 + 12288), 18.8),        # Table 15
    (("q_proj", "k_proj", "v_proj", "o_proj"), 2, 96 * 4 * 2 * 24576, 18.8),
    (("q_proj", "v_proj"), 8, 96 * 2 * 8 * (12288 + 12288), 37.7),        # Tables 4 and 15
    (("q_proj", "k_proj", "v_proj", "o_proj"), 4, 96 * 4 * 4 * 24576, 37.7),
    (("q_proj", "v_proj"), 64, 96 * 2 * 64 * (12288 + 12288), 301.9),     # Table 15
])
def test_gpt3_175b_from_its_config(targets, r, expected, paper):
    count = count_lora_parameters(gpt3_config(), LoRAConfig(r=r, target_modules=targets))
    assert count == expected
    assert paper_millions(count) == paper


def test_table_5_budget_of_18m_is_one_matrix_at_rank_8():
    count = count_lora_parameters(gpt3_config(), LoRAConfig(r=8, target_modules=("q_proj",)))
    assert count == 18_874_368 and round(count / 1e6) == 19 and int(count / 1e6) == 18


def test_gpt3_counting_allocates_no_weights():
    """175 billion float32 weights would be 700 GB; counting must not come near a single layer."""
    tracemalloc.start()
    count_model_parameters(gpt3_config())
    count_lora_parameters(gpt3_config(), LoRAConfig(r=8))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2_000_000   # bytes; one 12288 x 12288 float32 matrix is 604 MB


def test_gpt3_model_size_is_175b():
    # per block 12·d² + 13·d (with biases), plus token and position embeddings, ln_f and lm_head
    d, L, V, T = 12288, 96, 50257, 2048
    expected = L * (12 * d * d + 13 * d) + V * d + T * d + 2 * d + V * d
    assert count_model_parameters(gpt3_config()) == expected
    assert 175.0e9 < expected < 175.3e9


@pytest.mark.parametrize("layers, d, expected, paper", [
    (12, 768, 12 * 2 * 8 * (768 + 768), 0.3),       # RoBERTa base, Table 2
    (24, 1024, 24 * 2 * 8 * (1024 + 1024), 0.8),    # RoBERTa large, Table 2
])
def test_roberta_from_layer_shapes(layers, d, expected, paper):
    count = count_lora_from_shapes([(d, d)] * (2 * layers), r=8)
    assert count == expected and round(count / 1e6, 1) == paper


def test_gpt2_medium_differs_from_the_papers_035m():
    """r_q = r_v = 4 on 24 layers of width 1024 is 393,216 (0.39M); the paper prints 0.35M."""
    gpt2_medium = GPTConfig(vocab_size=50257, block_size=1024, n_layer=24, n_head=16, n_embd=1024)
    count = count_lora_parameters(gpt2_medium, LoRAConfig(r=4))
    assert count == 24 * 2 * 4 * (1024 + 1024) == 393_216


def test_the_seed_example_4096_squared():
    assert 4096 * 4096 == 16_777_216
    assert count_lora_from_shapes([(4096, 4096)], r=8) == 65_536
    assert "16,777,216" in paper_table() and "65,536 (0.39%)" in paper_table()


def test_paper_table_prints_both_columns():
    text = paper_table()
    assert "4,718,592" in text and "4.7M" in text and "37,748,736" in text and "37.7M" in text
    assert "393,216" in text and "0.35M" in text


def test_count_from_shapes_rejects_bad_input():
    with pytest.raises(ValueError, match="r=9 is larger than min\\(d, k\\) = 8"):
        count_lora_from_shapes([(8, 16)], r=9)
    with pytest.raises(ValueError, match="r must be an int >= 1"):
        count_lora_from_shapes([(8, 16)], r=0)
    with pytest.raises(ValueError, match="pair \\(d, k\\)"):
        count_lora_from_shapes([(8, 16, 2)], r=1)


# ---- the formulas against live models ------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_model_count_equals_a_live_gpt(bias):
    config = GPTConfig(vocab_size=21, block_size=9, n_layer=3, n_head=2, n_embd=12, bias=bias)
    assert count_model_parameters(config) == GPT(config).num_parameters()


@pytest.mark.parametrize("config", [
    LoRAConfig(r=4),
    LoRAConfig(r=2, target_modules="all-linear", bias="all"),
    LoRAConfig(r=3, target_modules=("q_proj", "fc_in", "fc_out"), bias="lora_only",
               rank_pattern={"fc_out": 1}, layers_to_transform=[1]),
    LoRAConfig(r=2, target_modules=r"h\.0\.attn\.[qkvo]_proj", modules_to_save=["lm_head", "ln_f"]),
    LoRAConfig(r=3, use_dora=True, target_modules=("q_proj", "fc_in"), bias="lora_only"),
    LoRAConfig(r=2, use_lora_fa=True, target_modules="all-linear"),
    LoRAConfig(r=2, use_dora=True, use_lora_fa=True, rank_pattern={"v_proj": 1}),
])
def test_trainable_count_equals_what_apply_lora_leaves_trainable(config):
    model = apply_lora(tiny_gpt(), config)
    assert count_trainable_parameters(TINY, config) == model.num_parameters(trainable_only=True)
    lora = sum(p.size for n, p in model.named_parameters() if n.endswith((".lora_A", ".lora_B")))
    assert count_lora_parameters(TINY, config) == lora


def test_optimizer_memory_full_versus_lora():
    assert adamw_state_bytes(1_000) == 8_000                 # two float32 moments per number
    assert adamw_state_bytes(1_000, "float64") == 16_000
    memory = finetune_memory(TINY, LoRAConfig(r=4))
    assert memory["lora_trainable"] == 4 * 4 * (16 + 16)
    assert memory["lora_adamw_bytes"] == 2 * 4 * 512
    assert memory["full_adamw_bytes"] == 2 * 4 * tiny_gpt().num_parameters()
    gpt3 = finetune_memory(gpt3_config(), LoRAConfig(r=1))
    assert gpt3["lora_adamw_bytes"] == 8 * 4_718_592
    assert gpt3["full_adamw_bytes"] > 1.4e12                 # 1.4 TB of AdamW state for GPT-3
