"""Small random GPT-2 checkpoints in Hugging Face's layout, GPT-2's forward pass in NumPy, and
LoRA models whose adapters hold random values (for the PEFT file tests).

Both are written from GPT-2's own conventions (Conv1D weights (in, out) used as x·W + b, one fused
c_attn whose output is q, k, v side by side, lm_head tied to wte), not from minilora's code, so a
test that compares minilora's GPT with `gpt2_forward` checks the conversion independently.
"""

import json
import math
import os

import numpy as np
from safetensors.numpy import save_file

from minilora.lora import apply_lora

SMALL = {"n_embd": 12, "n_head": 3, "n_layer": 2, "n_positions": 9, "vocab_size": 23}


def gpt2_config(**overrides):
    """config.json as transformers' GPT2Config writes it (the fields minilora reads, and a few more)."""
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "activation_function": "gelu_new",
              "layer_norm_epsilon": 1e-5, "n_inner": None, "scale_attn_weights": True,
              "scale_attn_by_inverse_layer_idx": False, "tie_word_embeddings": True,
              "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, **SMALL}
    config.update(overrides)
    return config


def random_gpt2_tensors(rng, config, prefix="transformer."):
    """{GPT2LMHeadModel state-dict name: float32 array} with random values (LayerNorm weights near 1)."""
    C, V, T = config["n_embd"], config["vocab_size"], config["n_positions"]

    def normal(*shape, std=0.2):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    tensors = {f"{prefix}wte.weight": normal(V, C, std=0.5), f"{prefix}wpe.weight": normal(T, C, std=0.5)}
    for i in range(config["n_layer"]):
        h = f"{prefix}h.{i}."
        for ln in ("ln_1", "ln_2"):
            tensors[h + ln + ".weight"] = 1.0 + normal(C, std=0.1)
            tensors[h + ln + ".bias"] = normal(C, std=0.1)
        for module, (n_in, n_out) in {"attn.c_attn": (C, 3 * C), "attn.c_proj": (C, C),
                                      "mlp.c_fc": (C, 4 * C), "mlp.c_proj": (4 * C, C)}.items():
            tensors[h + module + ".weight"] = normal(n_in, n_out)   # Conv1D: (in, out)
            tensors[h + module + ".bias"] = normal(n_out, std=0.1)
    tensors[f"{prefix}ln_f.weight"] = 1.0 + normal(C, std=0.1)
    tensors[f"{prefix}ln_f.bias"] = normal(C, std=0.1)
    return tensors


def write_gpt2_checkpoint(folder, rng, prefix="transformer.", **overrides):
    """Write config.json and model.safetensors into `folder`; return (config, tensors)."""
    config = gpt2_config(**overrides)
    tensors = random_gpt2_tensors(rng, config, prefix)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    return config, tensors


def gpt2_forward(tensors, config, idx):
    """GPT-2's logits (B, T, vocab) in float64 for token ids idx (B, T), from the HF tensors."""
    t = {name.removeprefix("transformer."): np.asarray(a, np.float64) for name, a in tensors.items()}
    C, nh = config["n_embd"], config["n_head"]
    hd = C // nh
    idx = np.asarray(idx)
    B, T = idx.shape

    def layer_norm(x, name):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + config["layer_norm_epsilon"]) * t[name + ".weight"] + t[name + ".bias"]

    def conv1d(x, name):
        return x @ t[name + ".weight"] + t[name + ".bias"]

    def gelu_new(x):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))

    x = t["wte.weight"][idx] + t["wpe.weight"][:T]
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    for i in range(config["n_layer"]):
        h = f"h.{i}."
        qkv = conv1d(layer_norm(x, h + "ln_1"), h + "attn.c_attn")           # (B, T, 3C)
        q, k, v = (part.reshape(B, T, nh, hd).transpose(0, 2, 1, 3) for part in np.split(qkv, 3, axis=-1))
        scores = np.where(future, -np.inf, q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd))
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        y = (weights @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + conv1d(y, h + "attn.c_proj")
        x = x + conv1d(gelu_new(conv1d(layer_norm(x, h + "ln_2"), h + "mlp.c_fc")), h + "mlp.c_proj")
    head = t.get("lm_head.weight", t["wte.weight"])
    return layer_norm(x, "ln_f") @ head.T


def randomly_trained(model, rng, config, std=0.3):
    """`model` with LoRA `config` applied and every trainable parameter (B too) set to random
    values, as if trained: a fresh adapter (B = 0) would hide a wrong A or scaling."""
    apply_lora(model, config)
    for _, p in model.named_parameters():
        if p.requires_grad:
            p.data[...] = rng.standard_normal(p.shape) * std
    return model
