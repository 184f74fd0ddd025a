# %% [markdown]
# # 08 · From minilora to PEFT
#
# Everything in minilora has a counterpart in Hugging Face's PEFT, the library most people use for
# LoRA in PyTorch. This tutorial crosses the bridge both ways:
#
# - **the names, side by side**: `LoRAConfig` ↔ `LoraConfig`, `apply_lora` ↔ `get_peft_model`, ...,
#   and the two defaults that differ (the scaling, and what "gaussian" means);
# - **train an adapter here**, on the coded-addition task of tutorial 05;
# - **export it** as PEFT saves adapters: `adapter_config.json` + `adapter_model.safetensors`; we
#   read both files and look at every name and shape;
# - **load it in PEFT** on a PyTorch model with the same module names and compare the outputs
#   (where torch and peft are installed; elsewhere the cell says what would happen);
# - **and back**: an adapter that PEFT saved, loaded into minilora;
# - **GPT-2**: `GPT.from_pretrained` reads a Hugging Face GPT-2 checkpoint, and for such a model the
#   q, k and v adapters are written onto GPT-2's fused `c_attn` layer, exactly.
#
# minilora never needs torch, peft or transformers; with them installed
# (`pip install torch peft transformers`) sections 4 and 5 run in PEFT itself.
#
# Time: a few minutes on a laptop CPU the first time, as tutorial 05 (the base model is pretrained
# once and kept in `minilora_runs/demo`, where `minilora demo` also leaves it), then about a minute;
# a few seconds with `--fast` (a tiny model and a few training steps: every cell runs, the
# accuracies mean nothing).
#
# Run it as a script, `python tutorials/08_from_minilora_to_peft.py` (add `--fast` for the quick
# version), or open it as a notebook (VS Code and Jupyter with jupytext read the `# %%` cells; for
# Colab, `jupytext --to ipynb tutorials/08_from_minilora_to_peft.py`; in a notebook set
# `MINILORA_FAST=1` for the quick version). Files are written under `minilora_runs/`.

# %%
import copy
import importlib.util
import json
import math
import os

import numpy as np
from matplotlib.figure import Figure
from safetensors import safe_open

from minilora import random
from minilora.data import TaskDataset, get_task
from minilora.demo import load_or_pretrain_base
from minilora.kernels import use_backend
from minilora.lora import LoRAConfig, apply_lora, load_peft_adapter, save_peft_adapter, trainable_summary
from minilora.lora.finetune import QUICK, TRAINING_BACKEND, ExperimentConfig
from minilora.lora.layer import new_adapter
from minilora.notebook import FAST, show
from minilora.train import evaluating, train

MISSING = [m for m in ("torch", "peft") if importlib.util.find_spec(m) is None]
HAVE_PEFT = not MISSING
config = QUICK if FAST else ExperimentConfig()
print(f"fast mode: {FAST}; torch and peft: {'installed' if HAVE_PEFT else 'missing (' + ', '.join(MISSING) + ')'}")

# %% [markdown]
# ## 1. The names, side by side
#
# | minilora | PEFT | note |
# |---|---|---|
# | `LoRAConfig(r=8, alpha=16, dropout=0.0, target_modules=("q_proj", "v_proj"), init="gaussian")` | `LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, target_modules=None, init_lora_weights=True)` | the defaults of each; PEFT picks target modules per model type |
# | `alpha` | `lora_alpha` | scaling = alpha / r (or alpha / √r with `use_rslora=True`, in both) |
# | `dropout` | `lora_dropout` | on the path through A only |
# | `init="kaiming"` | `init_lora_weights=True` | A ~ U(−1/√in, 1/√in) in both (kaiming_uniform with a = √5) |
# | `init="gaussian"` | `init_lora_weights="gaussian"` | **not the same**: std 1/√in here, std 1/r in PEFT |
# | `rank_pattern`, `alpha_pattern` | `rank_pattern`, `alpha_pattern` | keys: names or suffixes here; regular expressions in PEFT |
# | `bias="none" / "all" / "lora_only"`, `modules_to_save`, `layers_to_transform` | the same names | |
# | `apply_lora(model, config)` | `get_peft_model(model, config)` | minilora changes the model in place |
# | `trainable_summary(model)` | `model.print_trainable_parameters()` | |
# | `merge_and_unload(model)` | `model.merge_and_unload()` | |
# | `save_adapter` / `load_adapter` (.npz) | `model.save_pretrained(dir)` / `PeftModel.from_pretrained(model, dir)` | |
# | `save_peft_adapter` / `load_peft_adapter` | the same files as `save_pretrained` / `from_pretrained` | this tutorial |
# | `layer.lora_A` (r, in), `layer.lora_B` (out, r) | `layer.lora_A["default"].weight`, `layer.lora_B["default"].weight` | the same shapes |
#
# Two defaults differ, and they change what a "default" adapter is. The cell computes both sides:
# minilora's from its own code, PEFT's from PEFT where it is installed (the values written in the
# fallback are those of peft 0.21's source: `LoraConfig.r = 8`, `lora_alpha = 8`, and
# `nn.init.normal_(lora_A, std=1 / r)` for "gaussian").

# %%
ours = LoRAConfig()
our_scaling = ours.scaling_for("q_proj")
in_features, r = 768, 8
random.manual_seed(0)
our_A = new_adapter(in_features, in_features, r, ours.alpha, init="gaussian").lora_A.numpy()

if HAVE_PEFT:
    import torch
    from peft import LoraConfig, get_peft_model

    peft_default = LoraConfig()
    peft_scaling = peft_default.lora_alpha / peft_default.r
    torch.manual_seed(0)
    probe = get_peft_model(torch.nn.Sequential(torch.nn.Linear(in_features, in_features)),
                           LoraConfig(r=r, target_modules=["0"], init_lora_weights="gaussian"))
    peft_A = probe.base_model.model[0].lora_A["default"].weight.detach().numpy()
    peft_std, source = float(peft_A.std()), "measured in PEFT"
else:
    peft_scaling, peft_std, source = 8 / 8, 1 / r, "from peft 0.21's source; peft is not installed here"

print(f"default scaling: minilora alpha/r = {ours.alpha}/{ours.r} = {our_scaling}; PEFT {peft_scaling} ({source})")
print(f"'gaussian' A for in={in_features}, r={r}: minilora std {our_A.std():.4f} (1/sqrt(in) = "
      f"{1 / math.sqrt(in_features):.4f}); PEFT std {peft_std:.4f} (1/r = {1 / r:.4f}; {source})")
assert our_scaling == 2.0 and peft_scaling == 1.0
assert abs(our_A.std() * math.sqrt(in_features) - 1) < 0.05 and abs(peft_std * r - 1) < 0.05

# %% [markdown]
# So an adapter trained with both libraries' defaults has its update B·A scaled by 2 here and by 1
# in PEFT. The files carry `lora_alpha` and `r`, so a saved adapter means the same thing on both
# sides: the defaults only matter when you write a config by hand and expect the same training.
#
# ## 2. Train an adapter here
#
# The model and task of tutorial 05: a small GPT pretrained on addition, then taught coded
# addition (digits written as 9 − d) with LoRA on q and v.

# %%
old_task = TaskDataset(get_task(config.pretrain_task), seed=config.seed)
new_task = TaskDataset(get_task(config.finetune_task), seed=config.seed)
base = load_or_pretrain_base(config, "minilora_runs/demo_quick" if FAST else "minilora_runs/demo", quiet=True)
lora_model = apply_lora(copy.deepcopy(base), config.lora)
trainable_summary(lora_model)
with use_backend(TRAINING_BACKEND["cpu"]):
    train(lora_model, lambda b, rng: new_task.get_batch("train", b, rng), config.lora_training, quiet=True)
accuracy = new_task.exact_match(lora_model, "val", limit=config.eval_examples)
print(f"coded addition after LoRA: {accuracy:.1%} (the base model: "
      f"{new_task.exact_match(base, 'val', limit=config.eval_examples):.1%})")

# %% [markdown]
# ## 3. Export it as PEFT does
#
# `save_peft_adapter` writes the two files that PEFT's `save_pretrained` writes. The tensors are
# named `base_model.model.<module>.lora_A.weight` and `.lora_B.weight`: PEFT wraps the model twice
# (`PeftModel.base_model` is a `LoraModel`, whose `.model` is yours), and leaves the adapter's name
# out of the file.

# %%
out = os.path.join("minilora_runs", "peft_adapter_08")
save_peft_adapter(lora_model, out)
with open(os.path.join(out, "adapter_config.json")) as f:
    file_config = json.load(f)
for key in ("peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "rank_pattern", "use_rslora",
            "bias", "init_lora_weights"):
    print(f"  {key:18} {file_config[key]!r}")
with safe_open(os.path.join(out, "adapter_model.safetensors"), framework="np") as f:
    shapes = {key: f.get_tensor(key).shape for key in f.keys()}
for key, shape in list(shapes.items())[:4]:
    print(f"  {key:52} {shape}")
print(f"  ... {len(shapes)} tensors in all, {os.path.getsize(os.path.join(out, 'adapter_model.safetensors'))} bytes")
assert file_config["r"] == config.lora.r and file_config["lora_alpha"] == config.lora.alpha
assert shapes["base_model.model.h.0.attn.q_proj.lora_A.weight"] == (config.lora.r, base.config.n_embd)

# %% [markdown]
# ## 4. Load it in PEFT
#
# PEFT needs a PyTorch model whose modules have the names in the file. `minilora.nn.torch_twin`
# builds one: minilora's GPT written with `torch.nn`, module for module, holding the base model's
# weights. `PeftModel.from_pretrained` puts the adapter on it, and the two libraries should then
# compute the same logits, up to float32 rounding.

# %%
idx = new_task.inputs["val"][:64]
with evaluating(lora_model):
    our_logits = lora_model(idx)[0].numpy()

if HAVE_PEFT:
    from peft import PeftModel

    from minilora.nn.torch_twin import torch_twin

    peft_model = PeftModel.from_pretrained(torch_twin(base), out, is_trainable=True).eval()
    peft_model.print_trainable_parameters()   # trainable_summary's first line, in PEFT
    assert peft_model.get_nb_trainable_parameters()[0] == lora_model.num_parameters(trainable_only=True)
    with torch.no_grad():
        peft_logits = peft_model(torch.from_numpy(idx)).numpy()
    difference = np.abs(our_logits - peft_logits).max()
    print(f"minilora vs PEFT, the same adapter: largest logit difference {difference:.1e} "
          f"(logits up to {np.abs(peft_logits).max():.1f})")
    assert difference <= 1e-4 * np.abs(peft_logits).max()
else:
    print(f"{', '.join(MISSING)} not installed. With them, PeftModel.from_pretrained(torch_twin(base), "
          f"{out!r}) would load these files onto a PyTorch copy of the base model, and its logits would "
          "match minilora's to float32 rounding (tests/test_peft_interop.py measures about 1e-7).")

# %% [markdown]
# ## 5. And back
#
# `load_peft_adapter` reads the same two files, whoever wrote them, into a plain minilora model.
# Anything in a PEFT file that minilora cannot express (a bias on lora_B, PiSSA-style
# initialisation, a tensor name that fits no module) is an error that names it, never a warning.
# DoRA adapters (tutorial 10) travel both ways, their magnitude under PEFT's name
# `lora_magnitude_vector`.

# %%
back = load_peft_adapter(copy.deepcopy(base), out)
with evaluating(back):
    assert np.array_equal(back(idx)[0].numpy(), our_logits)
print("minilora -> PEFT files -> minilora: the same logits, bit for bit")

if HAVE_PEFT:
    peft_trained = get_peft_model(torch_twin(base), LoraConfig(r=2, lora_alpha=4, target_modules=["k_proj", "fc_in"],
                                                               rank_pattern={r"h\.0\..*fc_in": 3}))
    with torch.no_grad():  # stands in for training in PEFT: B is no longer zero
        for name, p in peft_trained.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    peft_trained.save_pretrained(os.path.join("minilora_runs", "peft_trained_08"))
    ours_from_peft = load_peft_adapter(copy.deepcopy(base), os.path.join("minilora_runs", "peft_trained_08"))
    with evaluating(ours_from_peft), torch.no_grad():
        peft_logits = peft_trained.eval()(torch.from_numpy(idx)).numpy()
        difference = np.abs(ours_from_peft(idx)[0].numpy() - peft_logits).max()
    print(f"an adapter PEFT saved, loaded here: largest logit difference {difference:.1e}; "
          f"h.0.mlp.fc_in has rank {ours_from_peft.h[0].mlp.fc_in.r} (PEFT's regex rank_pattern)")
    assert ours_from_peft.h[0].mlp.fc_in.r == 3 and difference <= 1e-4 * np.abs(peft_logits).max()
else:
    print("With torch and peft, this cell would also save an adapter trained in PEFT and load it here.")

# %% [markdown]
# ## 6. GPT-2: one layer for q, k and v
#
# minilora's GPT is GPT-2's architecture, so `GPT.from_pretrained(folder)` reads a Hugging Face
# GPT-2 checkpoint (`config.json` + `model.safetensors`; `minilora fetch-gpt2` downloads the real
# one where `huggingface_hub` and the network exist). GPT-2 stores its attention and MLP weights
# transposed ("Conv1D", y = x·W + b) and computes q, k and v in one layer, `c_attn`, of output
# 3·C. For such a model, `save_peft_adapter` writes GPT-2's names, and the adapters of q and v
# become one adapter on `c_attn`: the A's stacked (r_q + r_v rows) and the B's placed
# block-diagonally, so that B·A holds q's update in q's rows, zeros in k's, v's update in v's.
# That is exact. `layout="gpt2"` asks for these names for any minilora GPT, as here:

# %%
fused = os.path.join("minilora_runs", "peft_adapter_08_gpt2")
save_peft_adapter(lora_model, fused, layout="gpt2")
C, r = base.config.n_embd, config.lora.r
with safe_open(os.path.join(fused, "adapter_model.safetensors"), framework="np") as f:
    A = f.get_tensor("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight")
    B = f.get_tensor("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight")
print(f"c_attn: lora_A {A.shape} (q's {r} rows, then v's {r}), lora_B {B.shape} (rows q | k | v)")
attn = lora_model.h[0].attn
update = B.astype(np.float64) @ A * (config.lora.alpha / r)
np.testing.assert_allclose(update[:C], attn.q_proj.delta_weight(), rtol=1e-6, atol=1e-9)
np.testing.assert_allclose(update[2 * C:], attn.v_proj.delta_weight(), rtol=1e-6, atol=1e-9)
assert not update[C:2 * C].any()
print("c_attn's update = [q's update; 0; v's update]: checked")

# The update PEFT will add to GPT-2's c_attn, drawn: q's and v's updates, and k's rows all zero.
fig = Figure(figsize=(9, 3.2))
ax = fig.add_subplot()
limit = np.abs(update).max() or 1.0
image = ax.imshow(update.T, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
for edge in (C - 0.5, 2 * C - 0.5):
    ax.axvline(edge, color="black", linewidth=1)
ax.set_xticks([C / 2, 3 * C / 2, 5 * C / 2], ["q's rows", "k's rows (zero)", "v's rows"])
ax.set_ylabel("input feature")
ax.set_title("c_attn's update s·B·A in block h.0 (transposed: one column per output row)")
fig.colorbar(image, ax=ax)
show(fig, "08_c_attn_update")

gpt2_folder = os.path.join("minilora_runs", "gpt2")
if not FAST and os.path.isfile(os.path.join(gpt2_folder, "model.safetensors")):
    from minilora.data import GPT2Tokenizer
    from minilora.nn import GPT

    gpt2 = GPT.from_pretrained(gpt2_folder)
    tok = GPT2Tokenizer.from_files(os.path.join(gpt2_folder, "vocab.json"), os.path.join(gpt2_folder, "merges.txt"))
    prompt = tok.encode("LoRA adapts a frozen model by")
    print(tok.decode(gpt2.generate([prompt], 12, temperature=0).numpy()[0].tolist()))  # greedy: no sampling
else:
    print(f"(GPT-2 itself is not in {gpt2_folder}; `minilora fetch-gpt2` puts it there, and the full run of this "
          "tutorial then lets it complete a sentence)")

# %% [markdown]
# ## 7. Why minilora's own files stay .npz
#
# The PEFT files are safetensors because PEFT, transformers and the Hub read safetensors. minilora's
# own adapter and checkpoint files (`save_adapter`, `save_checkpoint`) stay `.npz`: they carry a
# sha256 over every name, dtype, shape and byte, and the shapes of the base-model layers an adapter
# sits on, all checked before anything is loaded; safetensors checks its header's offsets but has
# no checksum of the bytes, so the same checks would have to live in its metadata anyway. What
# safetensors adds (memory-mapped, zero-copy loading of large files) buys nothing for files of
# kilobytes to megabytes, and keeping one format means every `.npz` written so far still loads
# without a second reader. The bridge is the PEFT format above, written on request.
