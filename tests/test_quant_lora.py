"""A 4-bit base under LoRA: the fused op with an NF4 weight, NF4Linear, and LoRAConfig(base_quant="nf4").

The reference for every output is the same computation on the dequantized weight, written here
with NumPy; the NF4 weight itself is tested against the QLoRA definition in test_quant.py.
"""

import copy

import numpy as np
import pytest

import minilora
from minilora import F, kernels
from minilora.checkpoint import save_checkpoint
from minilora.gradcheck import gradcheck
from minilora.lora import LoRAConfig, LoRALinear, apply_lora, load_adapter, merge_and_unload, save_adapter
from minilora.lora.merge import merge_adapters, unmerge_adapters
from minilora.nn import GPT, GPTConfig, Linear
from minilora.kernels import nf4
from minilora.quant import NF4Linear, NF4Tensor, nf4_quantize


def arrays(rng, M=5, K=67, N=9, r=3, dtype=np.float64):
    x, W = rng.standard_normal((M, K)), rng.standard_normal((N, K))
    A, B, bias = rng.standard_normal((r, K)), rng.standard_normal((N, r)), rng.standard_normal(N)
    return [a.astype(dtype) for a in (x, W, A, B, bias)]


# ---- the fused op with an NF4 weight -------------------------------------------------------------------
@pytest.mark.parametrize("M, K, N, r", [(1, 3, 1, 1), (5, 67, 9, 3), (4, 128, 33, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_take_an_nf4_weight_and_dequantize_it(rng, M, K, N, r, dtype):
    x, W, A, B, bias = arrays(rng, M, K, N, r, dtype)
    q = nf4_quantize(W, 16, double_quant=True)
    W_hat = q.dequantize(dtype)
    y, u = kernels.lora_forward(x, q, A, B, 1.5, bias, backend="numpy")
    assert y.dtype == dtype
    np.testing.assert_array_equal(u, x @ A.T)
    np.testing.assert_allclose(y, x @ W_hat.T + 1.5 * (x @ A.T) @ B.T + bias, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)
    dy = rng.standard_normal((M, N)).astype(dtype)
    dx, dA, dB = kernels.lora_backward(dy, x, q, A, B, u, 1.5, backend="numpy")
    ref = kernels.lora_backward(dy, x, W_hat, A, B, u, 1.5, backend="numpy")
    for got, want in zip((dx, dA, dB), ref):
        np.testing.assert_array_equal(got, want)


def test_an_nf4_weight_runs_where_it_is_sent_and_nowhere_it_cannot(rng):
    """backend= and use_backend() send it to the C++ op (its own tests: test_quant_kernels.py); the
    GPU backends take CuPy arrays, and a variant is a CUDA rung."""
    x, W, A, B, _ = arrays(rng)
    q = nf4_quantize(W)
    ref = kernels.lora_forward(x, q.dequantize(), A, B, 2.0, backend="numpy")[0]
    with kernels.use_backend("cpp"):
        y, _ = kernels.lora_forward(x, q, A, B, 2.0)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    for name in ("cuda", "cupy"):
        with pytest.raises(ValueError, match=f"backend '{name}' .* works on CuPy arrays"):
            kernels.lora_forward(x, q, A, B, 2.0, backend=name)
    with pytest.raises(ValueError, match="variant= applies only to backend 'cuda'"):
        kernels.lora_forward(x, q, A, B, 2.0, backend="cpp", variant="nf4")


def test_lora_linear_with_an_nf4_weight_has_the_gradients_of_x_A_B_and_bias(rng):
    x, W, A, B, bias = arrays(rng, M=4, K=20, N=6, r=2)
    q = nf4_quantize(W, 8)
    inputs = [minilora.tensor(a, requires_grad=True) for a in (x, A, B, bias)]
    result = gradcheck(lambda x, A, B, b: F.lora_linear(x, q, A, B, 0.75, bias=b), inputs)
    assert result.ok, result
    y = F.lora_linear(*[minilora.tensor(a) for a in (x,)], q, inputs[1], inputs[2], 0.75)
    np.testing.assert_allclose(y.numpy(), x @ q.dequantize().T + 0.75 * (x @ A.T) @ B.T, rtol=1e-12, atol=1e-12)


def test_an_nf4_weight_must_be_where_the_other_arrays_are(rng):
    q = nf4_quantize(rng.standard_normal((4, 6)))
    assert q.device == "cpu" and q.to("cpu") is q
    with pytest.raises(ValueError, match=r"W is an NF4Tensor on 'cpu' but the other arrays are on 'cuda'; "
                                         r"move it with W.to\('cuda'\)"):
        nf4.check_weight(q, "cuda")


def test_module_to_moves_every_nf4_base(monkeypatch):
    """Module.to(device) calls _moved_to on every submodule, and NF4Linear moves its NF4 weight there
    (the GPU half is tests/test_kernels_cuda_nf4.py)."""
    model = apply_lora(small_gpt(), LoRAConfig(r=2, base_quant="nf4", base_quant_scope="all-linear"))
    moved = []
    monkeypatch.setattr(NF4Tensor, "to", lambda self, device: moved.append((self, device)) or self)
    model.to("cpu")
    bases = [m.weight_nf4 for m in model.modules() if isinstance(m, NF4Linear)]
    assert len(bases) == 2 * 6 and [(b, "cpu") for b in bases] == moved
    model.to(dtype="float64")  # a cast alone moves nothing
    assert len(moved) == len(bases)


# ---- NF4Linear ----------------------------------------------------------------------------------------
def test_nf4_linear_computes_with_the_dequantized_weight_and_stays_frozen(rng):
    linear = Linear(37, 11)
    linear.bias.data[...] = rng.standard_normal(11)
    layer = NF4Linear(linear, block_size=32, double_quant=False)
    x = rng.standard_normal((2, 3, 37)).astype(np.float32)
    W_hat = nf4_quantize(linear.weight.data, 32).dequantize()
    np.testing.assert_array_equal(layer.weight.numpy(), W_hat)
    np.testing.assert_allclose(layer(minilora.tensor(x)).numpy(), x @ W_hat.T + linear.bias.numpy(), rtol=1e-5, atol=1e-6)
    assert [name for name, _ in layer.named_parameters()] == ["bias"] and not layer.bias.requires_grad
    assert layer.weight_nf4.nbytes == 37 * 11 // 2 + 1 + 4 * 13
    with pytest.raises(TypeError, match="Linear"):
        NF4Linear(layer)


# ---- LoRAConfig(base_quant="nf4") ------------------------------------------------------------------------
def small_gpt():
    minilora.manual_seed(3)
    return GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=32))


def idx(rng):
    return minilora.tensor(rng.integers(0, 17, size=(3, 8)))


def test_base_quant_stores_the_adapted_bases_in_nf4_and_starts_equal_to_the_quantized_base(rng):
    model, tokens = small_gpt(), idx(rng)
    config = LoRAConfig(r=4, base_quant="nf4", base_quant_block_size=32)
    adapted = apply_lora(copy.deepcopy(model), config)
    for name in ("h.0.attn.q_proj", "h.1.attn.v_proj"):
        layer = dict(adapted.named_modules())[name]
        assert isinstance(layer.base, NF4Linear) and layer.base.weight_nf4.double_quant
        assert layer.base.weight_nf4.block_size == 32
    assert isinstance(adapted.h[0].attn.k_proj, Linear)
    # the same model with W replaced by its NF4 round trip, computed with plain Linears
    expected = copy.deepcopy(model)
    for block in expected.h:
        for proj in (block.attn.q_proj, block.attn.v_proj):
            proj.weight.data = nf4_quantize(proj.weight.data, 32, True).dequantize()
    np.testing.assert_allclose(adapted(tokens)[0].numpy(), expected(tokens)[0].numpy(), rtol=1e-5, atol=1e-5)
    trainable = sorted(n for n, p in adapted.named_parameters() if p.requires_grad)
    assert all(n.endswith(("lora_A", "lora_B")) for n in trainable) and len(trainable) == 8


def test_all_linear_scope_quantizes_every_linear_but_the_head():
    adapted = apply_lora(small_gpt(), LoRAConfig(r=2, base_quant="nf4", base_quant_scope="all-linear"))
    kinds = {name: type(m).__name__ for name, m in adapted.named_modules()}
    assert kinds["h.0.attn.k_proj"] == "NF4Linear" and kinds["h.1.mlp.fc_out"] == "NF4Linear"
    assert kinds["h.0.attn.q_proj.base"] == "NF4Linear" and kinds["lm_head"] == "Linear"


def test_training_a_qlora_model_moves_only_the_adapter(rng):
    model = apply_lora(small_gpt(), LoRAConfig(r=4, base_quant="nf4", bias="lora_only"))
    packed = model.h[0].attn.q_proj.base.weight_nf4.packed.copy()
    opt = minilora.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tokens = idx(rng)
    losses = []
    for _ in range(5):
        loss = model(tokens, tokens)[1]
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0]
    np.testing.assert_array_equal(model.h[0].attn.q_proj.base.weight_nf4.packed, packed)
    assert model.h[0].attn.q_proj.base.bias.requires_grad


def test_merging_an_nf4_base_gives_a_float_layer_and_unmerge_gives_the_same_nf4_back(rng):
    layer = LoRALinear(NF4Linear(Linear(24, 10)), r=3, alpha=6)
    layer.lora_B.data[...] = rng.standard_normal((10, 3)).astype(np.float32)
    quantized = layer.base
    x = minilora.tensor(rng.standard_normal((4, 24)).astype(np.float32))
    with minilora.no_grad():
        before = layer(x).numpy()
        layer.merge()
        assert type(layer.base) is Linear
        expected = quantized.weight_nf4.dequantize().astype(np.float64) + layer.delta_weight()
        np.testing.assert_array_equal(layer.base.weight.numpy(), expected.astype(np.float32))
        np.testing.assert_allclose(layer(x).numpy(), before, rtol=1e-5, atol=1e-5)
        layer.unmerge()
    assert layer.base is quantized
    np.testing.assert_array_equal(layer(x).detach().numpy(), before)


def test_an_nf4_model_cast_to_float64_merges_in_float64(rng):
    """to(dtype=...) sets the dtype an NF4 base dequantizes to, so merging gives a float64 weight."""
    model = apply_lora(small_gpt(), LoRAConfig(r=2, base_quant="nf4")).to(dtype="float64").eval()
    layer = model.h[0].attn.q_proj
    layer.lora_B.data[...] = rng.standard_normal(layer.lora_B.shape)
    tokens = idx(rng)
    with minilora.no_grad():
        before = model(tokens)[0].numpy()
        merge_adapters(model)
        assert layer.base.weight.dtype == np.float64
        np.testing.assert_allclose(model(tokens)[0].numpy(), before, rtol=1e-12, atol=1e-12)
        unmerge_adapters(model)
    assert isinstance(layer.base, NF4Linear) and layer.base.dtype == np.float64


def test_merge_and_unload_dequantizes_the_nf4_layers_without_adapters(rng, tmp_path):
    """With base_quant_scope="all-linear", k_proj and the MLP are NF4 with no adapter: the plain model
    holds them as float Linears too, so it can be checkpointed."""
    adapted = apply_lora(small_gpt(), LoRAConfig(r=2, base_quant="nf4", base_quant_scope="all-linear")).eval()
    k_proj = adapted.h[0].attn.k_proj.weight_nf4.dequantize()
    tokens = idx(rng)
    expected = adapted(tokens)[0].numpy()
    plain = merge_and_unload(adapted)
    assert not any(isinstance(m, NF4Linear) for m in plain.modules())
    assert type(plain.h[0].attn.k_proj) is Linear
    np.testing.assert_array_equal(plain.h[0].attn.k_proj.weight.numpy(), k_proj)
    np.testing.assert_allclose(plain(tokens)[0].numpy(), expected, rtol=1e-5, atol=1e-5)
    save_checkpoint(plain, tmp_path / "plain")


def test_a_qlora_adapter_saves_loads_and_merges_into_a_plain_model(rng, tmp_path):
    model, tokens = small_gpt(), idx(rng)
    adapted = apply_lora(copy.deepcopy(model), LoRAConfig(r=4, base_quant="nf4"))
    for name, p in adapted.named_parameters():
        if name.endswith("lora_B"):
            p.data[...] = 0.1 * rng.standard_normal(p.shape)
    expected = adapted(tokens)[0].numpy()
    path = save_adapter(adapted, tmp_path / "qlora")
    loaded = load_adapter(copy.deepcopy(model), path)
    assert isinstance(loaded.h[1].attn.v_proj.base, NF4Linear)
    np.testing.assert_array_equal(loaded(tokens)[0].numpy(), expected)
    plain = merge_and_unload(loaded)
    assert type(plain.h[0].attn.q_proj) is Linear
    np.testing.assert_allclose(plain(tokens)[0].numpy(), expected, rtol=1e-4, atol=1e-5)


def test_merge_adapters_over_a_qlora_model_round_trips(rng):
    adapted = apply_lora(small_gpt(), LoRAConfig(r=2, base_quant="nf4")).eval()
    tokens = idx(rng)
    before = adapted(tokens)[0].numpy()
    merge_adapters(adapted)
    unmerge_adapters(adapted)
    assert isinstance(adapted.h[0].attn.q_proj.base, NF4Linear)
    np.testing.assert_array_equal(adapted(tokens)[0].numpy(), before)


@pytest.mark.parametrize("kwargs, words", [({"base_quant": "int4"}, "base_quant"),
                                           ({"base_quant_block_size": 1}, "base_quant_block_size"),
                                           ({"base_quant_double": "yes"}, "base_quant_double"),
                                           ({"base_quant_scope": "everything"}, "base_quant_scope")])
def test_bad_quantization_settings_are_named(kwargs, words):
    with pytest.raises((TypeError, ValueError), match=words):
        LoRAConfig(**kwargs)
