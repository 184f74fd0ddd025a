"""DoRA: y = (m / n) ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) + b with n = ‖W + s·B·A‖ per output row, detached.

Checked against NumPy written here: the forward; the gradients of x and m by gradcheck (the norm
does not depend on them); the gradients of A and B by gradcheck with n held at its value (the
detached norm), and shown to differ from the gradient through n; merge, unmerge,
dropout, apply_lora and the adapter file. The comparison with PEFT is in test_dora_peft.py.
"""

import copy

import numpy as np
import pytest

import minilora
from minilora import F
from minilora.gradcheck import gradcheck
from minilora.lora import LoRAConfig, LoRALinear, apply_lora, dora, load_adapter, save_adapter
from minilora.lora.merge import merge_and_unload
from minilora.nn import GPT, GPTConfig, Linear


def dora_layer(rng, K=7, N=5, r=3, alpha=6.0, bias=True, dropout=0.0):
    """A float64 DoRA layer with random W, b, A, a NON-ZERO B and a magnitude away from ‖W‖."""
    layer = LoRALinear(Linear(K, N, bias=bias, dtype="float64"), r=r, alpha=alpha, dropout=dropout, use_dora=True)
    for p in [layer.base.weight, layer.lora_A, layer.lora_B] + ([layer.base.bias] if bias else []):
        p.data[...] = rng.standard_normal(p.shape)
    layer.lora_magnitude.data[...] = rng.uniform(0.5, 2.0, N)
    return layer


def formula(x, layer, norm=None):
    """NumPy: the DoRA output; `norm` (N,) fixed, or None to compute it from A and B."""
    W, A, B, s = layer.base.weight.numpy(), layer.lora_A.numpy(), layer.lora_B.numpy(), layer.scaling
    m = layer.lora_magnitude.numpy()
    if norm is None:
        norm = np.linalg.norm(W + s * B @ A, axis=1)
    bias = 0.0 if layer.base.bias is None else layer.base.bias.numpy()
    return (x @ W.T + s * (x @ A.T) @ B.T) * (m / norm) + bias


def test_a_fresh_dora_adapter_has_the_row_norms_of_w_and_computes_the_base_layer(rng):
    linear = Linear(9, 4, dtype="float64")
    linear.weight.data[...] = rng.standard_normal((4, 9))
    layer = LoRALinear(linear, r=2, use_dora=True)
    np.testing.assert_allclose(layer.lora_magnitude.numpy(), np.linalg.norm(linear.weight.numpy(), axis=1),
                               rtol=1e-15)
    assert layer.lora_magnitude.requires_grad and layer.lora_magnitude.shape == (4,)
    x = rng.standard_normal((3, 9))
    np.testing.assert_allclose(layer(minilora.tensor(x)).numpy(), linear(minilora.tensor(x)).numpy(),
                               rtol=1e-12, atol=1e-12)
    assert LoRALinear(Linear(9, 4), r=2).lora_magnitude is None


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(4,), (2, 3), (1,)])
def test_forward_matches_the_formula(rng, bias, lead):
    layer = dora_layer(rng, bias=bias)
    x = rng.standard_normal(lead + (7,))
    y = layer(minilora.tensor(x))
    assert y.shape == lead + (5,)
    np.testing.assert_allclose(y.numpy(), formula(x, layer), rtol=1e-12, atol=1e-12)


def test_gradients_of_x_and_the_magnitude_pass_gradcheck(rng):
    layer = dora_layer(rng)
    x = minilora.tensor(rng.standard_normal((4, 7)), requires_grad=True)
    result = gradcheck(lambda x, m: layer(x), [x, layer.lora_magnitude])
    assert result.ok, result


def test_gradients_of_a_and_b_treat_the_norm_as_a_constant(rng, monkeypatch):
    layer = dora_layer(rng)
    x = minilora.tensor(rng.standard_normal((4, 7)))
    inputs = [layer.lora_A, layer.lora_B]
    # Central differences of the layer as it is move n with A and B; the backward does not (detached).
    through_norm = gradcheck(lambda A, B: layer(x), inputs)
    assert not through_norm.ok and through_norm.max_abs_err > 1e-3
    # With n held at its value, central differences see what the backward computes.
    fixed = dora.weight_norm(layer.base, layer.active)
    monkeypatch.setattr(dora, "weight_norm", lambda base, adapter, dtype=None: fixed)
    result = gradcheck(lambda A, B: layer(x), inputs)
    assert result.ok, result


def test_dropout_follows_peft_on_the_dora_path(rng):
    layer = dora_layer(rng, dropout=0.4)
    x = rng.standard_normal((6, 7))
    minilora.manual_seed(11)
    y = layer(minilora.tensor(x)).numpy()
    minilora.manual_seed(11)
    dropped = F.dropout(minilora.tensor(x), 0.4, True).numpy()   # the same mask, drawn the same way
    W, b = layer.base.weight.numpy(), layer.base.bias.numpy()
    A, B = layer.lora_A.numpy(), layer.lora_B.numpy()
    scale = layer.lora_magnitude.numpy() / np.linalg.norm(W + layer.scaling * B @ A, axis=1)
    lora = layer.scaling * (dropped @ A.T) @ B.T
    expected = x @ W.T + b + (scale - 1) * (dropped @ W.T) + scale * lora
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    layer.eval()
    np.testing.assert_allclose(layer(minilora.tensor(x)).numpy(), formula(x, layer), rtol=1e-12, atol=1e-12)


def test_merge_is_the_formula_and_unmerge_gives_w_back_bit_for_bit(rng):
    layer = dora_layer(rng)
    original = layer.base.weight.data
    x = rng.standard_normal((3, 7))
    before = layer(minilora.tensor(x)).numpy()
    layer.merge()
    W, A, B, s = original, layer.lora_A.numpy(), layer.lora_B.numpy(), layer.scaling
    combined = W + s * B @ A
    expected = combined * (layer.lora_magnitude.numpy() / np.linalg.norm(combined, axis=1))[:, None]
    np.testing.assert_allclose(layer.base.weight.numpy(), expected, rtol=1e-15, atol=1e-15)
    with minilora.no_grad():
        np.testing.assert_allclose(layer(minilora.tensor(x)).numpy(), before, rtol=1e-12, atol=1e-12)
    layer.unmerge()
    assert layer.base.weight.data is original


def small_gpt():
    minilora.manual_seed(5)
    return GPT(GPTConfig(vocab_size=13, block_size=6, n_layer=2, n_head=2, n_embd=16))


def test_apply_lora_with_dora_trains_the_magnitudes_and_saves_them(rng, tmp_path):
    model = small_gpt()
    tokens = minilora.tensor(rng.integers(0, 13, size=(2, 6)))
    adapted = apply_lora(copy.deepcopy(model), LoRAConfig(r=2, use_dora=True))
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert "h.0.attn.q_proj.adapters.default.lora_magnitude" in trainable and len(trainable) == 12
    np.testing.assert_allclose(adapted(tokens)[0].numpy(), model(tokens)[0].numpy(), rtol=1e-5, atol=1e-6)
    for name, p in adapted.named_parameters():
        if p.requires_grad:
            p.data += 0.1 * rng.standard_normal(p.shape).astype(np.float32)
    expected = adapted(tokens)[0].numpy()
    path = save_adapter(adapted, tmp_path / "dora")
    loaded = load_adapter(copy.deepcopy(model), path)
    np.testing.assert_array_equal(loaded.h[1].attn.v_proj.lora_magnitude.numpy(),
                                  adapted.h[1].attn.v_proj.lora_magnitude.numpy())
    np.testing.assert_array_equal(loaded(tokens)[0].numpy(), expected)
    np.testing.assert_allclose(merge_and_unload(loaded)(tokens)[0].numpy(), expected, rtol=1e-4, atol=1e-5)


def test_an_adapter_file_without_magnitudes_is_refused_for_a_dora_config(rng, tmp_path):
    model = small_gpt()
    path = save_adapter(apply_lora(copy.deepcopy(model), LoRAConfig(r=2)), tmp_path / "plain")
    arrays, metadata = minilora.io.load_arrays(path)
    metadata["config"]["use_dora"] = True
    minilora.io.save_arrays(tmp_path / "broken", arrays, metadata)
    with pytest.raises(ValueError, match="missing array h.0.attn.q_proj.lora_magnitude"):
        load_adapter(copy.deepcopy(model), tmp_path / "broken.npz")


def test_dora_adapters_cannot_be_combined():
    model = apply_lora(small_gpt(), LoRAConfig(r=2, use_dora=True))
    with pytest.raises(ValueError, match="DoRA"):
        minilora.lora.combine_adapters(model, {"default": 1.0}, "both")
