"""The GPT: names, sizes and initialisation; forward against a NumPy re-implementation written here
from the state_dict arrays; gradients of every parameter; errors; sampling; a short overfit run."""

import math

import numpy as np
import pytest

import minilora
from minilora import nn, optim
from minilora.nn import sampling

TINY = dict(vocab_size=7, block_size=5, n_layer=2, n_head=2, n_embd=8)


# ---- a NumPy GPT, written from the formulas ----------------------------------------------------
def np_layer_norm(x, weight, bias, eps=1e-5):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + (0.0 if bias is None else bias)


def np_gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_linear(sd, name, x):
    return x @ sd[f"{name}.weight"].T + sd.get(f"{name}.bias", 0.0)


def np_attention(sd, prefix, x, n_head):
    """One head at a time, on column slices of q, k, v (the model reshapes instead)."""
    B, T, C = x.shape
    hd = C // n_head
    q, k, v = (np_linear(sd, f"{prefix}.{name}", x) for name in ("q_proj", "k_proj", "v_proj"))
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    out = np.zeros_like(x)
    for h in range(n_head):
        cols = slice(h * hd, (h + 1) * hd)
        scores = q[:, :, cols] @ k[:, :, cols].transpose(0, 2, 1) / math.sqrt(hd)  # (B, T, T)
        out[:, :, cols] = np_softmax(np.where(future, -np.inf, scores)) @ v[:, :, cols]
    return np_linear(sd, f"{prefix}.o_proj", out)


def np_gpt(sd, idx, config):
    T = idx.shape[1]
    x = sd["wte.weight"][idx] + sd["wpe.weight"][:T]
    for i in range(config.n_layer):
        p = f"h.{i}"
        x = x + np_attention(sd, f"{p}.attn", np_layer_norm(x, sd[f"{p}.ln_1.weight"], sd.get(f"{p}.ln_1.bias")),
                             config.n_head)
        hidden = np_layer_norm(x, sd[f"{p}.ln_2.weight"], sd.get(f"{p}.ln_2.bias"))
        x = x + np_linear(sd, f"{p}.mlp.fc_out", np_gelu(np_linear(sd, f"{p}.mlp.fc_in", hidden)))
    return np_linear(sd, "lm_head", np_layer_norm(x, sd["ln_f.weight"], sd.get("ln_f.bias")))


def np_loss(logits, targets):
    keep = targets != -1
    log_probs = np.log(np_softmax(logits))
    picked = np.take_along_axis(log_probs, np.where(keep, targets, 0)[..., None], axis=-1)[..., 0]
    return -(picked * keep).sum() / keep.sum()


def randomised(model, rng, scale=0.5):
    """Give every parameter (biases and LayerNorm weights included) random values, so that a
    parameter the forward forgets, or uses in the wrong place, changes the result."""
    state = {name: (rng.standard_normal(a.shape) * scale).astype(a.dtype) for name, a in model.state_dict().items()}
    model.load_state_dict(state)
    return model


def tokens(rng, *shape, vocab=TINY["vocab_size"], device="cpu"):
    return minilora.tensor(rng.integers(0, vocab, size=shape), device=device)


# ---- config, names, sizes, initialisation ---------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    (dict(n_head=3), "divisible by n_head"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(block_size=2.0), "block_size"),
    (dict(n_layer=True), "n_layer"),
    (dict(dropout=1.0), "dropout"),
])
def test_config_rejects_bad_values(change, message):
    with pytest.raises(ValueError, match=message):
        nn.GPTConfig(**{**TINY, **change})


def test_config_bias_must_be_bool():
    with pytest.raises(TypeError, match="bias"):
        nn.GPTConfig(**TINY, bias="yes")


def test_parameter_names_are_exactly_the_documented_ones():
    model = nn.GPT(nn.GPTConfig(**{**TINY, "n_layer": 1}))
    block = ["ln_1.weight", "ln_1.bias"]
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        block += [f"attn.{proj}.weight", f"attn.{proj}.bias"]
    block += ["ln_2.weight", "ln_2.bias", "mlp.fc_in.weight", "mlp.fc_in.bias", "mlp.fc_out.weight", "mlp.fc_out.bias"]
    expected = (["wte.weight", "wpe.weight"] + [f"h.0.{n}" for n in block]
                + ["ln_f.weight", "ln_f.bias", "lm_head.weight"])
    assert [n for n, _ in model.named_parameters()] == expected
    shapes = dict((n, p.shape) for n, p in model.named_parameters())
    assert shapes["wte.weight"] == (7, 8) and shapes["wpe.weight"] == (5, 8) and shapes["lm_head.weight"] == (7, 8)
    assert shapes["h.0.mlp.fc_in.weight"] == (32, 8) and shapes["h.0.mlp.fc_out.weight"] == (8, 32)


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_matches_the_closed_form(bias):
    V, T, L, H, C = 50, 16, 3, 4, 24
    model = nn.GPT(nn.GPTConfig(V, T, L, H, C, bias=bias))
    b = 1 if bias else 0
    per_block = 2 * (C + C * b) + 4 * (C * C + C * b) + (C * 4 * C + 4 * C * b) + (4 * C * C + C * b)
    expected = V * C + T * C + L * per_block + (C + C * b) + C * V
    assert model.num_parameters() == expected
    table = model.parameter_table()
    assert table.total == expected
    assert ("h.2.attn.q_proj", "Linear", C * C + C * b, C * C + C * b) in table.rows


def test_gpt2_initialisation():
    minilora.manual_seed(0)
    config = nn.GPTConfig(vocab_size=64, block_size=64, n_layer=8, n_head=4, n_embd=64)
    model = nn.GPT(config)
    residual_std = 0.02 / math.sqrt(2 * 8)
    for name, p in model.named_parameters():
        w = p.numpy()
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
            assert np.all(w == 1.0), name
        elif name.endswith(".bias"):
            assert not w.any(), name
        elif name.endswith("o_proj.weight") or name.endswith("fc_out.weight"):
            assert abs(w.std() - residual_std) < 0.1 * residual_std, name
        else:
            assert abs(w.std() - 0.02) < 0.002, name
    minilora.manual_seed(0)
    again = nn.GPT(config).state_dict()
    assert all(np.array_equal(a, again[n]) for n, a in model.state_dict().items())


# ---- forward against NumPy ----------------------------------------------------------------------
def test_attention_matches_numpy_causal_attention(rng):
    config = nn.GPTConfig(vocab_size=5, block_size=6, n_layer=1, n_head=3, n_embd=12)
    attn = randomised(nn.CausalSelfAttention(config).to(dtype="float64"), rng)
    x = minilora.tensor(rng.standard_normal((2, 4, 12)))  # T = 4 < block_size: the mask is cropped
    sd = {f"attn.{k}": v for k, v in attn.state_dict().items()}
    np.testing.assert_allclose(attn(x).numpy(), np_attention(sd, "attn", x.numpy(), 3), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_gpt_logits_and_loss_match_numpy_float64(bias, rng, device):
    config = nn.GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8, bias=bias)
    model = randomised(nn.GPT(config).to(dtype="float64"), rng).to(device=device)
    idx, targets = tokens(rng, 3, 6, vocab=11, device=device), tokens(rng, 3, 6, vocab=11, device=device)
    targets.data[0, :3] = -1  # a masked prompt
    logits, loss = model(idx, targets)
    expected = np_gpt(model.state_dict(), idx.numpy(), config)
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert loss.shape == () and math.isclose(loss.item(), np_loss(expected, targets.numpy()), rel_tol=1e-10)
    assert model(idx)[1] is None


def test_gpt_float32_is_close_to_the_float64_reference(rng):
    config = nn.GPTConfig(**TINY)
    model = randomised(nn.GPT(config), rng)
    idx = tokens(rng, 2, 5)
    logits, _ = model(idx)
    assert logits.dtype == np.float32
    reference = np_gpt({k: v.astype(np.float64) for k, v in model.state_dict().items()}, idx.numpy(), config)
    assert np.linalg.norm(logits.numpy() - reference) / np.linalg.norm(reference) < 1e-5


def test_earlier_positions_do_not_see_later_tokens(rng):
    model = randomised(nn.GPT(nn.GPTConfig(**TINY)).to(dtype="float64"), rng)
    idx = tokens(rng, 1, 5)
    changed = idx.numpy().copy()
    changed[0, 3] = (changed[0, 3] + 1) % 7
    a, _ = model(idx)
    b, _ = model(changed)
    np.testing.assert_array_equal(a.numpy()[:, :3], b.numpy()[:, :3])
    assert not np.allclose(a.numpy()[:, 3:], b.numpy()[:, 3:])


def test_replacing_a_projection_in_place_is_used_by_the_forward(rng):
    config = nn.GPTConfig(**TINY)
    model = randomised(nn.GPT(config).to(dtype="float64"), rng)
    names = [n for n, _ in model.named_parameters()]
    replacement = nn.Linear(8, 8).to(dtype="float64")
    replacement.bias.data[...] = rng.standard_normal(8)
    model.h[1].attn.q_proj = replacement  # what minilora.lora does (with setattr, by name)
    assert [n for n, _ in model.named_parameters()] == names
    assert np.array_equal(model.state_dict()["h.1.attn.q_proj.bias"], replacement.bias.numpy())
    idx = tokens(rng, 2, 5)
    expected = np_gpt(model.state_dict(), idx.numpy(), config)
    np.testing.assert_allclose(model(idx)[0].numpy(), expected, rtol=1e-10, atol=1e-10)


def test_the_causal_mask_is_a_buffer_not_a_parameter():
    model = nn.GPT(nn.GPTConfig(**TINY)).to(dtype="float64")
    buffers = dict(model.named_buffers())
    assert list(buffers) == ["h.0.attn.causal_mask", "h.1.attn.causal_mask"]
    mask = buffers["h.0.attn.causal_mask"].numpy()
    assert mask.dtype == np.bool_ and np.array_equal(mask, np.triu(np.ones((5, 5), dtype=bool), k=1))
    assert not any("mask" in name for name in model.state_dict())


# ---- gradients ----------------------------------------------------------------------------------
def test_every_gpt_parameter_passes_gradcheck_with_dropout_and_ignored_targets(rng):
    config = nn.GPTConfig(**TINY, dropout=0.1)
    model = randomised(nn.GPT(config).to(dtype="float64"), rng)
    idx, targets = tokens(rng, 2, 5), tokens(rng, 2, 5)
    targets.data[1, :2] = -1
    weights = minilora.tensor(rng.standard_normal((2, 5, 7)))
    names, params = zip(*model.named_parameters())

    def loss_fn(*_params):
        minilora.manual_seed(11)  # the same dropout masks at every evaluation
        logits, loss = model(idx, targets)
        return loss + (logits * weights).sum()  # the loss plus a random projection of every logit

    result = minilora.gradcheck(loss_fn, list(params), names=list(names))
    assert result.ok, result.report()
    assert all(p.grad is None for p in params)  # gradcheck leaves .grad as it found it


# ---- errors ---------------------------------------------------------------------------------------
def test_forward_rejects_bad_token_ids(rng):
    model = nn.GPT(nn.GPTConfig(**TINY))
    with pytest.raises(ValueError, match="block_size is 5"):
        model(tokens(rng, 1, 6))
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        model(minilora.tensor([[1, 7]]))
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        model(minilora.tensor([[1, -1]]))
    with pytest.raises(ValueError, match="batch, time"):
        model(minilora.tensor([1, 2]))
    with pytest.raises(TypeError, match="integer"):
        model(minilora.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="shape of idx"):
        model(tokens(rng, 2, 3), tokens(rng, 2, 4))
    with pytest.raises(ValueError, match="out of range"):
        model(tokens(rng, 1, 3), minilora.tensor([[0, 1, 9]]))
    with pytest.raises(TypeError, match="GPTConfig"):
        nn.GPT(TINY)


# ---- generation -------------------------------------------------------------------------------------
def test_greedy_generation_follows_the_numpy_argmax_and_crops_the_context(rng, device):
    config = nn.GPTConfig(**TINY)
    model = randomised(nn.GPT(config).to(dtype="float64"), rng, scale=1.0).to(device=device)
    model.train()
    prompt = tokens(rng, 2, 3, device=device)
    out = model.generate(prompt, max_new_tokens=6, temperature=0)
    assert out.shape == (2, 9) and out.dtype.kind == "i" and model.training
    np.testing.assert_array_equal(out.numpy()[:, :3], prompt.numpy())
    sd, seq = model.state_dict(), prompt.numpy()
    for _ in range(6):  # past 5 tokens only the last block_size are read
        nxt = np_gpt(sd, seq[:, -config.block_size:], config)[:, -1].argmax(-1)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    np.testing.assert_array_equal(out.numpy(), seq)
    np.testing.assert_array_equal(model.generate(prompt, 6, temperature=0.7, top_k=1).numpy(), seq)


def test_sampling_is_reproducible_with_manual_seed(rng):
    model = randomised(nn.GPT(nn.GPTConfig(**TINY)), rng)
    prompt = [[0, 1]]
    minilora.manual_seed(5)
    first = model.generate(prompt, 8).numpy()
    minilora.manual_seed(5)
    assert np.array_equal(model.generate(prompt, 8).numpy(), first)
    assert model.generate(prompt, 0).shape == (1, 2)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 3, temperature=-1)
    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"temperature \(0 means greedy\) must be a finite number"):
            model.generate(prompt, 3, temperature=value)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 3, top_k=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(prompt, -1)
    with pytest.raises(ValueError, match=r"generate needs at least one token to continue, got idx of shape \(1, 0\)"):
        model.generate(np.zeros((1, 0), dtype=np.int64), 3)


def test_next_token_samples_the_softmax_and_respects_top_k():
    minilora.manual_seed(0)
    logits = np.array([1.0, 2.0, 0.5, -1.0, 2.0])
    rows = np.tile(logits, (20000, 1))
    counts = np.bincount(sampling.next_token(rows, temperature=1.0)[:, 0], minlength=5) / 20000
    # 20,000 draws: each frequency is within about 4 standard deviations (<= 0.014) of its probability.
    np.testing.assert_allclose(counts, np_softmax(logits), atol=0.015)
    hot = np.bincount(sampling.next_token(rows, temperature=0.5)[:, 0], minlength=5) / 20000
    np.testing.assert_allclose(hot, np_softmax(logits / 0.5), atol=0.015)
    top = np.bincount(sampling.next_token(rows, temperature=1.0, top_k=2)[:, 0], minlength=5) / 20000
    np.testing.assert_allclose(top, [0, 0.5, 0, 0, 0.5], atol=0.015)
    assert sampling.next_token(rows[:3], temperature=1.0, top_k=99).shape == (3, 1)


# ---- training ---------------------------------------------------------------------------------------
def test_a_tiny_gpt_overfits_one_batch_with_adamw(rng):
    minilora.manual_seed(0)
    model = nn.GPT(nn.GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16))
    idx, targets = tokens(rng, 4, 8, vocab=11), tokens(rng, 4, 8, vocab=11)
    optimizer = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(30):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert math.isclose(losses[0], math.log(11), rel_tol=0.05)  # a fresh model guesses uniformly
    assert losses[-1] < 0.35 * losses[0]


@pytest.mark.gpu
def test_gpt_moved_to_cuda_matches_cpu(rng, cuda_device):
    config = nn.GPTConfig(**TINY)
    model = randomised(nn.GPT(config), rng)
    idx, targets = tokens(rng, 2, 5), tokens(rng, 2, 5)
    cpu_logits, cpu_loss = model(idx, targets)
    model.to(device=cuda_device)
    assert model.device == "cuda" and model.h[0].attn.causal_mask.device == "cuda"
    logits, loss = model(idx.to(cuda_device), targets.to(cuda_device))
    loss.backward()
    assert model.wte.weight.grad is not None
    np.testing.assert_allclose(logits.numpy(), cpu_logits.numpy(), rtol=1e-4, atol=1e-5)
    assert math.isclose(loss.item(), cpu_loss.item(), rel_tol=1e-5)
    minilora.manual_seed(0)
    assert model.generate(idx.to(cuda_device)[:, :2], 3, top_k=3).device == "cuda"
