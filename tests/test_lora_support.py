"""Helpers shared by the test_lora_* files (no tests here): a tiny GPT and adapters that matter."""

import numpy as np

import minilora
from minilora.lora.inject import lora_layers
from minilora.nn import GPT, GPTConfig

TINY = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)


def tiny_gpt(seed=0, config=TINY):
    minilora.manual_seed(seed)
    return GPT(config)


def tokens(rng, batch=3, length=8, vocab=TINY.vocab_size):
    return minilora.tensor(rng.integers(0, vocab, size=(batch, length)))


def logits(model, idx):
    """The model's logits as a NumPy array, computed in eval mode without a graph."""
    model.eval()
    with minilora.no_grad():
        return model(idx)[0].numpy()


def randomise_adapter(model, name, rng, scale=0.3):
    """Give adapter `name` random non-zero A and B in every layer, so it changes the output."""
    for _, layer in lora_layers(model):
        if name in layer.adapters:
            adapter = layer.adapters[name]
            for p in (adapter.lora_A, adapter.lora_B):
                p.data[...] = (scale * rng.standard_normal(p.shape)).astype(p.dtype)


def relative_error(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))
