"""minilora against transformers and PEFT themselves (where torch, peft and transformers are
installed; they are never dependencies of minilora, so these tests skip with that reason elsewhere).

    (a) GPT.from_pretrained on a random GPT2LMHeadModel saved by save_pretrained: the same logits;
    (b) save_peft_adapter -> PeftModel.from_pretrained, on a PyTorch twin of minilora's GPT (the same
        module names: minilora.nn.torch_twin, itself checked here against minilora's GPT) and on
        GPT2LMHeadModel through its fused c_attn;
    (c) an adapter that PEFT trained and saved -> load_peft_adapter.
Each of (b) and (c) also with DoRA (use_dora, the magnitude as PEFT's lora_magnitude_vector).
Each test prints the largest absolute difference of the logits (run with -s to see them).
"""

import copy
import importlib.util

import numpy as np
import pytest

from gpt2_files import randomly_trained
from minilora.lora import LoRAConfig, load_peft_adapter, save_peft_adapter
from minilora.nn import GPT, GPTConfig

MISSING = [m for m in ("torch", "peft", "transformers") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed: the interop with "
                                                      "PyTorch, PEFT and transformers is checked where they are")
if not MISSING:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from minilora.nn.torch_twin import torch_twin


CONFIG = GPTConfig(vocab_size=29, block_size=10, n_layer=2, n_head=2, n_embd=16)


def torch_logits(module, idx):
    with torch.no_grad():
        out = module(torch.from_numpy(idx))
    return (out.logits if hasattr(out, "logits") else out).numpy()


def compare(what, ours, theirs, tol=2e-5):
    diff = float(np.abs(ours - theirs).max())
    print(f"{what}: max |logits difference| = {diff:.2e} (logits up to {np.abs(theirs).max():.2f})")
    assert diff <= tol * max(1.0, float(np.abs(theirs).max())), what
    return diff


def random_tokens(rng, B=3, T=10):
    return rng.integers(0, CONFIG.vocab_size, (B, T))


@pytest.fixture
def hf_gpt2(tmp_path):
    """A random GPT2LMHeadModel saved with save_pretrained (safetensors), in eval mode."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_head=2, n_layer=2, n_positions=10, vocab_size=29,
                                       bos_token_id=0, eos_token_id=0))
    with torch.no_grad():  # LayerNorms away from (1, 0), so a wrong conversion shows
        for name, p in model.named_parameters():
            if "ln" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    return model.eval(), tmp_path / "hf"


# ---- (a) -----------------------------------------------------------------------------------------------
def test_a_from_pretrained_matches_transformers(hf_gpt2, rng):
    hf, folder = hf_gpt2
    ours = GPT.from_pretrained(folder)
    idx = random_tokens(rng)
    compare("(a) GPT.from_pretrained vs GPT2LMHeadModel, float32", ours(idx)[0].numpy(), torch_logits(hf, idx))


def test_the_twin_computes_what_minilora_computes(rng):
    model = GPT(CONFIG)
    idx = random_tokens(rng)
    compare("torch_twin vs minilora's GPT, float32", model(idx)[0].numpy(), torch_logits(torch_twin(model), idx))


# ---- (b) -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_b_peft_loads_our_adapter_on_a_twin(tmp_path, rng, use_dora):
    base = GPT(CONFIG)
    model = randomly_trained(copy.deepcopy(base), rng, LoRAConfig(r=3, alpha=6, target_modules=("q_proj", "v_proj", "fc_in"),
                                                            rank_pattern={"h.1.attn.v_proj": 2}, bias="lora_only",
                                                            modules_to_save=("lm_head",), use_dora=use_dora))
    save_peft_adapter(model, tmp_path / "adapter")
    peft_model = PeftModel.from_pretrained(torch_twin(base), str(tmp_path / "adapter")).eval()
    assert peft_model.peft_config["default"].use_dora is use_dora
    idx = random_tokens(rng)
    compare(f"(b) save_peft_adapter -> PeftModel on the twin{', DoRA' if use_dora else ''}", model(idx)[0].numpy(),
            torch_logits(peft_model, idx))


@pytest.mark.parametrize("config", [
    LoRAConfig(r=2, alpha=4, target_modules=("q_proj", "v_proj", "fc_in"), rank_pattern={"v_proj": 3},
               bias="lora_only"),
    LoRAConfig(r=2, target_modules=("k_proj",), bias="all", modules_to_save=("ln_f", "h.0.mlp.fc_in")),
    LoRAConfig(r=2, alpha=3, target_modules=("q_proj", "v_proj", "fc_out"), rank_pattern={"v_proj": 1},
               use_dora=True, bias="lora_only"),
], ids=["q_v_fc_in_lora_only", "k_all_biases_saved_conv1d", "dora_q_v_fc_out"])
def test_b_peft_loads_our_adapter_on_gpt2_via_c_attn(hf_gpt2, tmp_path, rng, config):
    hf, folder = hf_gpt2
    model = randomly_trained(GPT.from_pretrained(folder), rng, config)
    save_peft_adapter(model, tmp_path / "adapter")
    peft_model = PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    idx = random_tokens(rng)
    compare(f"(b) save_peft_adapter -> PeftModel on GPT2LMHeadModel (c_attn){', DoRA' if config.use_dora else ''}",
            model(idx)[0].numpy(), torch_logits(peft_model, idx))


# ---- (c) -----------------------------------------------------------------------------------------------
def peft_trained(model, config, directory):
    """get_peft_model, random values in every trainable tensor (lora_B too), save_pretrained."""
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for _, p in peft_model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.2)
    peft_model.save_pretrained(str(directory))
    return peft_model.eval()


def test_c_we_load_an_adapter_peft_saved_from_a_twin(tmp_path, rng):
    torch.manual_seed(1)
    base = GPT(CONFIG)
    peft_model = peft_trained(torch_twin(base), LoraConfig(r=2, lora_alpha=5, target_modules=["q_proj", "v_proj", "o_proj"],
                                                        rank_pattern={r"h\.1\..*v_proj": 3}, alpha_pattern={"o_proj": 2},
                                                        bias="all"), tmp_path / "peft")
    ours = load_peft_adapter(base, tmp_path / "peft")
    assert ours.h[1].attn.v_proj.r == 3 and ours.h[0].attn.o_proj.scaling == 1.0
    idx = random_tokens(rng)
    compare("(c) PEFT (twin) -> load_peft_adapter", ours(idx)[0].numpy(), torch_logits(peft_model, idx))


def test_c_we_load_a_c_attn_adapter_peft_saved_from_gpt2(hf_gpt2, tmp_path, rng):
    hf, folder = hf_gpt2
    torch.manual_seed(2)
    peft_model = peft_trained(hf, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], bias="lora_only",
                                             use_rslora=True), tmp_path / "peft")
    ours = load_peft_adapter(GPT.from_pretrained(folder), tmp_path / "peft")
    assert ours.h[0].attn.k_proj.r == 4
    idx = random_tokens(rng)
    compare("(c) PEFT (GPT2LMHeadModel, c_attn) -> load_peft_adapter", ours(idx)[0].numpy(),
            torch_logits(peft_model, idx))


def test_c_we_load_dora_adapters_peft_saved(hf_gpt2, tmp_path, rng):
    torch.manual_seed(3)
    base = GPT(CONFIG)
    peft_model = peft_trained(torch_twin(base), LoraConfig(r=2, lora_alpha=5, target_modules=["q_proj", "fc_in"],
                                                        use_dora=True, bias="lora_only"), tmp_path / "twin")
    ours = load_peft_adapter(base, tmp_path / "twin")
    assert ours.h[0].mlp.fc_in.lora_magnitude.shape == (4 * CONFIG.n_embd,)
    idx = random_tokens(rng)
    compare("(c) PEFT (twin, DoRA) -> load_peft_adapter", ours(idx)[0].numpy(), torch_logits(peft_model, idx))

    hf, folder = hf_gpt2
    peft_model = peft_trained(hf, LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn", "c_proj"], use_dora=True),
                              tmp_path / "gpt2")
    ours = load_peft_adapter(GPT.from_pretrained(folder), tmp_path / "gpt2")
    assert ours.h[1].attn.k_proj.lora_magnitude is not None and ours.h[1].mlp.fc_out.lora_magnitude is not None
    compare("(c) PEFT (GPT2LMHeadModel, c_attn, DoRA) -> load_peft_adapter", ours(idx)[0].numpy(),
            torch_logits(peft_model, idx))
