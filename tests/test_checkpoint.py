"""Checkpoints: a bit-exact round trip, a model rebuilt from the saved config, and a message that
lists every name, shape and dtype that does not fit."""

from pathlib import Path

import numpy as np
import pytest

import minilora
from minilora import io
from minilora.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from minilora.nn import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


def gpt(config=CONFIG, seed=0):
    minilora.random.manual_seed(seed)
    return GPT(config)


def perturbed(model, rng):
    """Change every parameter, so that a round trip cannot pass by matching the initialisation."""
    for p in model.parameters():
        p.data[...] += rng.standard_normal(p.shape).astype(p.dtype)
    return model


def test_round_trip_is_bit_exact_and_rebuilds_the_model(rng, tmp_path):
    model = perturbed(gpt(), rng)
    path = save_checkpoint(model, tmp_path / "model", extra={"step": 12, "chars": "abc"})
    assert path == str(tmp_path / "model.npz")
    loaded = load_checkpoint(path)
    assert isinstance(loaded, GPT) and loaded.config == CONFIG
    expected = model.state_dict()
    got = loaded.state_dict()
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype
        assert got[name].tobytes() == expected[name].tobytes(), name
    idx = rng.integers(0, CONFIG.vocab_size, size=(2, 8))
    np.testing.assert_array_equal(model(idx)[0].numpy(), loaded(idx)[0].numpy())


def test_read_checkpoint_returns_state_config_and_extra(rng, tmp_path):
    model = perturbed(gpt(), rng)
    path = save_checkpoint(model, tmp_path / "m.npz", extra={"step": 3})
    state, config, extra = read_checkpoint(path)
    assert config == {"vocab_size": 11, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 16,
                      "dropout": 0.0, "bias": True}
    assert extra == {"step": 3}
    assert set(state) == {name for name, _ in model.named_parameters()}


def test_loading_into_a_given_model_changes_it_in_place(rng, tmp_path):
    path = save_checkpoint(perturbed(gpt(seed=1), rng), tmp_path / "m")
    target = gpt(seed=2)
    params_before = target.parameters()
    assert load_checkpoint(path, model=target) is target
    assert all(a is b for a, b in zip(target.parameters(), params_before))
    np.testing.assert_array_equal(target.wte.weight.numpy(), read_checkpoint(path).state["wte.weight"])


def test_float64_checkpoint_rebuilds_a_float64_model(rng, tmp_path):
    model = perturbed(gpt().to(dtype="float64"), rng)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "m64"))
    assert loaded.wte.weight.dtype == np.float64
    assert loaded.state_dict()["lm_head.weight"].tobytes() == model.state_dict()["lm_head.weight"].tobytes()


def test_mismatches_are_listed_and_the_model_is_unchanged(rng, tmp_path):
    path = save_checkpoint(perturbed(gpt(), rng), tmp_path / "m")
    other = gpt(GPTConfig(vocab_size=12, block_size=8, n_layer=3, n_head=2, n_embd=16))
    before = other.state_dict()
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, model=other)
    message = str(info.value)
    assert "m.npz does not fit the model" in message
    assert "wte.weight: the model has shape (12, 16) float32, the state_dict has (11, 16) float32" in message
    assert "lm_head.weight: the model has shape (12, 16)" in message
    assert "missing (in the model, not in the state_dict): h.2.attn.q_proj.weight" in message
    after = other.state_dict()
    assert all(np.array_equal(before[n], after[n]) for n in before)


def test_a_dtype_mismatch_is_named(rng, tmp_path):
    path = save_checkpoint(gpt(), tmp_path / "m")
    with pytest.raises(ValueError, match=r"h.0.ln_1.weight: the model has shape \(16,\) float64, "
                                         r"the state_dict has \(16,\) float32"):
        load_checkpoint(path, model=gpt().to(dtype="float64"))


def test_unexpected_names_are_listed(rng, tmp_path):
    path = save_checkpoint(gpt(GPTConfig(vocab_size=11, block_size=8, n_layer=3, n_head=2, n_embd=16)),
                           tmp_path / "m")
    with pytest.raises(ValueError, match=r"unexpected \(in the state_dict, not in the model\): h.2.mlp.fc_in.bias"):
        load_checkpoint(path, model=gpt())


def test_an_array_file_that_is_not_a_checkpoint(tmp_path):
    path = io.save_arrays(tmp_path / "other", {"x": np.zeros(2)}, {"format": "minilora-adapter"})
    with pytest.raises(io.ArrayFileError, match="not a minilora checkpoint"):
        load_checkpoint(path)


def test_a_damaged_checkpoint_raises_before_touching_the_model(rng, tmp_path):
    path = save_checkpoint(perturbed(gpt(), rng), tmp_path / "m")
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 3] ^= 0x01
    Path(path).write_bytes(bytes(data))
    target = gpt(seed=5)
    before = target.state_dict()
    with pytest.raises(io.ArrayFileError, match="m.npz"):
        load_checkpoint(path, model=target)
    assert all(np.array_equal(before[n], v) for n, v in target.state_dict().items())


def test_a_model_with_an_nf4_base_is_refused_not_saved_without_its_weights(tmp_path):
    from minilora.lora import LoRAConfig, apply_lora
    model = gpt()
    apply_lora(model, LoRAConfig(r=2, alpha=4, base_quant="nf4"))
    with pytest.raises(ValueError, match=r"NF4 .*h\.0\.attn\.q_proj\.base.*save_adapter"):
        save_checkpoint(model, tmp_path / "qlora")
    assert not list(tmp_path.iterdir())


def test_without_config_a_model_must_be_given(tmp_path):
    class Plain(minilora.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = minilora.nn.Linear(3, 2)

    path = save_checkpoint(Plain(), tmp_path / "plain")
    with pytest.raises(ValueError, match="has no saved config"):
        load_checkpoint(path)
    assert isinstance(load_checkpoint(path, model=Plain()), Plain)


@pytest.mark.gpu
def test_a_cuda_model_is_saved_from_and_loaded_to_the_gpu(rng, tmp_path, cuda_device):
    model = perturbed(gpt(), rng)
    expected = model.state_dict()
    path = save_checkpoint(model.to(device=cuda_device), tmp_path / "gpu")
    loaded = load_checkpoint(path, device=cuda_device)
    assert loaded.wte.weight.device == "cuda"
    for name, array in loaded.state_dict().items():
        assert array.tobytes() == expected[name].tobytes()
