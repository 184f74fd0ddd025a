"""LoRA-FA (A frozen), LoRA+ (B's learning rate λ times A's) and PiSSA (start from W's top-r
singular vectors), each checked against what its paper says it does."""

import copy

import numpy as np
import pytest

import minilora
from minilora.lora import LoRAConfig, LoRALinear, apply_lora, lora_plus_param_groups, load_adapter, save_adapter
from minilora.lora.pissa import pissa_factors
from minilora.nn import GPT, GPTConfig, Linear
from minilora.optim import AdamW


def small_gpt(seed=7):
    minilora.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=13, block_size=6, n_layer=2, n_head=2, n_embd=16))


def tokens(rng):
    return minilora.tensor(rng.integers(0, 13, size=(3, 6)))


def step(model, idx, optimizer):
    loss = model(idx, idx)[1]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


# ---- LoRA-FA ------------------------------------------------------------------------------------
def test_lora_fa_trains_b_and_leaves_a_as_initialised(rng):
    model = apply_lora(small_gpt(), LoRAConfig(r=4, use_lora_fa=True))
    trainable = sorted(n.split(".")[-1] for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["lora_B"] * 4
    A0 = model.h[0].attn.q_proj.lora_A.numpy().copy()
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    idx = tokens(rng)
    for _ in range(3):
        step(model, idx, optimizer)
    np.testing.assert_array_equal(model.h[0].attn.q_proj.lora_A.numpy(), A0)
    assert model.h[0].attn.q_proj.lora_A.grad is None
    assert np.abs(model.h[0].attn.q_proj.lora_B.numpy()).max() > 0


def test_lora_fa_with_dora_trains_b_and_the_magnitude():
    model = apply_lora(small_gpt(), LoRAConfig(r=2, use_lora_fa=True, use_dora=True))
    trainable = {n.split(".")[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"lora_B", "lora_magnitude"}


# ---- LoRA+ --------------------------------------------------------------------------------------
def test_lora_plus_groups_cover_every_trainable_parameter_once():
    model = apply_lora(small_gpt(), LoRAConfig(r=2, bias="lora_only"))
    groups = lora_plus_param_groups(model, lr=1e-3, ratio=16)
    listed = [id(p) for g in groups for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    fast = [g for g in groups if g["name"] == "lora_B"]
    assert len(fast) == 1 and fast[0]["lr"] == pytest.approx(16e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("lora_B") for p in fast[0]["params"]) and len(fast[0]["params"]) == 4
    assert all(g["lr"] == 1e-3 for g in groups if g is not fast[0])
    assert groups[0]["lr"] == 1e-3    # the first group is the base learning rate, as train() logs it


def test_lora_plus_moves_b_like_an_optimizer_with_lambda_times_the_lr(rng):
    """One AdamW step with the groups equals, for B, a step with lr·λ and, for A, one with lr."""
    idx = tokens(rng)
    start = apply_lora(small_gpt(), LoRAConfig(r=2))
    for name, p in start.named_parameters():
        if name.endswith("lora_B"):
            p.data[...] = 0.1 * rng.standard_normal(p.shape)
    plus, slow, fast = copy.deepcopy(start), copy.deepcopy(start), copy.deepcopy(start)
    step(plus, idx, AdamW(lora_plus_param_groups(plus, lr=1e-3, ratio=8, weight_decay=0.0), lr=1e-3))
    step(slow, idx, AdamW([p for p in slow.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0))
    step(fast, idx, AdamW([p for p in fast.parameters() if p.requires_grad], lr=8e-3, weight_decay=0.0))
    got, slow_p, fast_p = (dict(m.named_parameters()) for m in (plus, slow, fast))
    for name in got:
        if name.endswith("lora_B"):
            np.testing.assert_allclose(got[name].numpy(), fast_p[name].numpy(), rtol=1e-6, atol=1e-8)
        elif name.endswith("lora_A"):
            np.testing.assert_allclose(got[name].numpy(), slow_p[name].numpy(), rtol=1e-6, atol=1e-8)


def test_lora_plus_needs_a_trainable_b():
    with pytest.raises(ValueError, match="lora_B"):
        lora_plus_param_groups(small_gpt(), lr=1e-3)
    with pytest.raises(ValueError, match="ratio"):
        lora_plus_param_groups(apply_lora(small_gpt(), LoRAConfig(r=2)), lr=1e-3, ratio=-1)


# ---- PiSSA --------------------------------------------------------------------------------------
def test_pissa_factors_are_the_principal_part_and_the_residual_the_rest(rng):
    W = rng.standard_normal((9, 14))
    A, B, residual = pissa_factors(W, 3, scaling=2.0)
    assert A.shape == (3, 14) and B.shape == (9, 3)
    np.testing.assert_allclose(2.0 * B @ A + residual, W, rtol=1e-13, atol=1e-13)
    singular = np.linalg.svd(W, compute_uv=False)
    np.testing.assert_allclose(np.linalg.svd(2.0 * B @ A, compute_uv=False)[:3], singular[:3], rtol=1e-12)
    np.testing.assert_allclose(np.linalg.svd(residual, compute_uv=False)[:6], singular[3:9], rtol=1e-10, atol=1e-12)
    # A's rows are orthogonal, as are B's columns (both scaled by √(σ/s))
    gram = A @ A.T
    np.testing.assert_allclose(gram, np.diag(np.diag(gram)), atol=1e-12)
    np.testing.assert_allclose(np.diag(gram), singular[:3] / 2.0, rtol=1e-12)


def test_pissa_leaves_the_model_function_unchanged_at_the_start(rng):
    model = small_gpt().to(dtype="float64")
    idx = tokens(rng)
    adapted = apply_lora(copy.deepcopy(model), LoRAConfig(r=3, init="pissa", target_modules="all-linear"))
    np.testing.assert_allclose(adapted(idx)[0].numpy(), model(idx)[0].numpy(), rtol=1e-12, atol=1e-12)
    layer, original = adapted.h[0].mlp.fc_in, model.h[0].mlp.fc_in.weight.numpy()
    assert np.abs(layer.lora_B.numpy()).min() > 0     # B does not start at zero
    np.testing.assert_allclose(layer.base.weight.numpy() + layer.delta_weight(), original, rtol=1e-13, atol=1e-13)


def test_pissa_in_float32_starts_within_rounding(rng):
    model = small_gpt()
    idx = tokens(rng)
    adapted = apply_lora(copy.deepcopy(model), LoRAConfig(r=2, init="pissa"))
    np.testing.assert_allclose(adapted(idx)[0].numpy(), model(idx)[0].numpy(), rtol=1e-4, atol=1e-5)


def test_a_pissa_adapter_loads_into_the_original_base(rng, tmp_path):
    model, idx = small_gpt(), tokens(rng)
    adapted = apply_lora(copy.deepcopy(model), LoRAConfig(r=2, init="pissa"))
    for name, p in adapted.named_parameters():
        if p.requires_grad:
            p.data += 0.05 * rng.standard_normal(p.shape).astype(np.float32)
    path = save_adapter(adapted, tmp_path / "pissa")
    loaded = load_adapter(copy.deepcopy(model), path)
    np.testing.assert_allclose(loaded(idx)[0].numpy(), adapted(idx)[0].numpy(), rtol=1e-5, atol=1e-6)


def test_pissa_refuses_a_layer_that_already_has_an_adapter():
    model = apply_lora(small_gpt(), LoRAConfig(r=2))
    before = model.h[0].attn.q_proj.base.weight.numpy().copy()
    with pytest.raises(ValueError, match="pissa"):
        minilora.lora.add_adapter(model, "second", LoRAConfig(r=2, init="pissa"))
    np.testing.assert_array_equal(model.h[0].attn.q_proj.base.weight.numpy(), before)
    with pytest.raises(ValueError, match="pissa"):
        LoRALinear(Linear(4, 4), r=2, init="pissa")


# ---- the config fields ----------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["use_dora", "use_lora_fa", "base_quant_double"])
def test_the_variant_switches_must_be_booleans(field):
    with pytest.raises(TypeError, match=field):
        LoRAConfig(**{field: 1})


def test_the_variant_fields_survive_json():
    config = LoRAConfig(r=4, use_dora=True, use_lora_fa=True, init="pissa", base_quant="nf4",
                        base_quant_block_size=32, base_quant_double=False, base_quant_scope="all-linear")
    assert LoRAConfig.from_dict(config.to_dict()) == config
    assert LoRAConfig.from_dict({"r": 4}).use_dora is False    # files written before these fields
