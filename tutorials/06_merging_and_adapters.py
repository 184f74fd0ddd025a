# %% [markdown]
# # 06 · Merging, several adapters, and the rank of an update
#
# An adapter is two thin matrices next to a frozen weight: the layer computes
# `y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ`, with `s = alpha / r`. Because that is linear in x, the update can be
# folded into the weight, `W' = W + s·B·A`, and taken out again. This tutorial measures what that
# buys and what it costs:
#
# - **merge / unmerge**: the merged model computes the same outputs (to float32 rounding, which we
#   measure), and unmerging gives back W exactly, however often we do it;
# - **no added latency** once merged: we time a forward pass of the base model, the adapted model,
#   and the merged one;
# - **several adapters** on one frozen model: switching by name changes the outputs; switched off,
#   the model *is* the base model, bit for bit;
# - **composition**: the sum of two adapters is an adapter again, exactly by stacking their ranks,
#   or approximately at a lower rank by SVD, with an error we plot against the rank;
# - **the rank of an update**: the singular values of a learned ΔW = s·B·A next to those of the
#   update that full fine-tuning makes to the same layer.
#
# Time: about 2 minutes on a laptop CPU (less when `minilora demo` or tutorial 05 already saved the
# pretrained base model); a few seconds with `--fast` (a tiny model and a few training steps: every
# cell runs, the accuracies mean nothing).
#
# Run it as a script, `python tutorials/06_merging_and_adapters.py` (add `--fast` for the quick
# version), or open it as a notebook (VS Code and Jupyter with jupytext read the `# %%` cells; for
# Colab, `jupytext --to ipynb tutorials/06_merging_and_adapters.py`; in a notebook set
# `MINILORA_FAST=1` for the quick version). Figures are saved under `minilora_runs/figures`.

# %%
import contextlib
import copy
import dataclasses
import time

import numpy as np
from matplotlib.figure import Figure

from minilora import kernels
from minilora.data import TaskDataset, get_task
from minilora.lora import (LoRAConfig, LoRALinear, add_adapter, apply_lora, combine_adapters, delete_adapter,
                           disable_adapters, merge_adapters, merge_and_unload, set_adapter, trainable_summary,
                           unmerge_adapters)
from minilora.demo import load_or_pretrain_base
from minilora.lora.finetune import QUICK, ExperimentConfig
from minilora.notebook import FAST, fast_mode_note, show
from minilora.train import evaluating, train

print("fast mode" if FAST else "full mode")

# %% [markdown]
# ## 1. A base model, a LoRA fine-tune, and a full fine-tune
#
# We reuse minilora's fine-tuning experiment (`minilora.lora.finetune`, also tutorial 05): a small
# GPT is pretrained on one synthetic task, then taught a second task it fails, once with LoRA
# (adapter `"finetuned"`, the experiment's LoRAConfig) and once by full fine-tuning, from the same
# base. The task names, model size and LoRA settings come from `ExperimentConfig` (fast mode: its
# `QUICK` version). The pretrained base is loaded from `minilora_runs/demo` when `minilora demo` or
# tutorial 05 already trained one with the same settings.
#
# Two things differ from the experiment, on purpose:
#
# - both fine-tunings run for the same, smaller number of steps, to keep this tutorial short; the
#   accuracies are lower than the experiment's, and that does not matter here;
# - full fine-tuning runs **without weight decay**, so that W_after − W_before is the update the
#   gradients made, not that plus a shrinking of the whole matrix (section 6 looks at its rank).

# %%
config = QUICK if FAST else ExperimentConfig()
old_name, new_name = config.pretrain_task, config.finetune_task
old_task = TaskDataset(get_task(old_name), seed=config.seed)
new_task = TaskDataset(get_task(new_name), seed=config.seed)
rank = config.lora.r
steps = config.lora_training.steps if FAST else 600
lora_training = dataclasses.replace(config.lora_training, steps=steps, eval_every=steps,
                                    warmup_steps=min(config.lora_training.warmup_steps, steps))
full_training = dataclasses.replace(config.full, steps=steps, eval_every=steps, weight_decay=0.0,
                                    warmup_steps=min(config.full.warmup_steps, steps))
eval_examples = config.eval_examples


def accuracy(model, dataset):
    """Held-out exact match on the first eval_examples prompts."""
    return dataset.exact_match(model, "val", limit=eval_examples)


def batches_of(dataset):
    return lambda batch_size, rng: dataset.get_batch("train", batch_size, rng)


print(f"pretraining on '{old_name}', fine-tuning on '{new_name}'; model {config.model}")
base = load_or_pretrain_base(config, "minilora_runs/demo_quick" if FAST else "minilora_runs/demo", quiet=True)
print(f"base model: {accuracy(base, old_task):.1%} on '{old_name}', {accuracy(base, new_task):.1%} on '{new_name}'")

# %%
# LoRA: a copy of the base with adapter "finetuned", trained on the new task. Only A and B train.
model = apply_lora(copy.deepcopy(base), config.lora, adapter_name="finetuned")
trainable_summary(model)
train(model, batches_of(new_task), lora_training, desc="LoRA")

# Full fine-tuning: another copy, every parameter trains.
full = copy.deepcopy(base)
train(full, batches_of(new_task), full_training, desc="full fine-tuning")
print(f"\non '{new_name}': LoRA {accuracy(model, new_task):.1%}, full fine-tuning {accuracy(full, new_task):.1%} "
      f"after {steps} steps each")
fast_mode_note(f"{steps} steps train neither model: the accuracies here and in the tables below are not meaningful")

# %% [markdown]
# ## 2. Merge and unmerge
#
# `merge_adapters(model)` adds s·B·A into W in every adapted layer (computed in float64 and rounded
# to float32 once); `unmerge_adapters(model)` puts back the original array, which the layer kept.
# Three things to check:
#
# 1. the merged weight is W + s·B·A rounded once: at most half a unit in the last place (ulp);
# 2. the merged model's outputs equal the unmerged model's, to float32 tolerance (the sums are now
#    done in a different order, so not necessarily bit for bit);
# 3. after unmerging, W is back *exactly*, even after many rounds.

# %%
probe = new_task.inputs["val"][:64]                    # (64, T): held-out examples of the new task
layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
name0, layer0 = layers[0]
original = layer0.weight.data                          # the very array W holds now
exact = original.astype(np.float64) + layer0.delta_weight()   # W + s·B·A in float64

with evaluating(model):                                # eval mode, no graph: a merged layer cannot train
    unmerged_logits = model(probe)[0].numpy()
    merge_adapters(model)
    merged_weight = layer0.weight.data.copy()
    merged_logits = model(probe)[0].numpy()
    unmerge_adapters(model)

ulp = np.spacing(np.abs(merged_weight))                # float32 spacing at each merged value
rounding = np.abs(merged_weight.astype(np.float64) - exact)
print(f"{name0}: |W' − (W + s·B·A)| is at most {(rounding / ulp).max():.3f} ulp "
      f"(max {rounding.max():.2e}, while s·B·A itself reaches {np.abs(layer0.delta_weight()).max():.2e})")
assert (rounding <= 0.5 * ulp).all()

relative = np.linalg.norm(merged_logits - unmerged_logits) / np.linalg.norm(unmerged_logits)
print(f"logits, merged against unmerged: max |difference| {np.abs(merged_logits - unmerged_logits).max():.2e}, "
      f"relative {relative:.2e}")
assert relative <= 1e-5

assert layer0.weight.data is original
for _ in range(10):
    merge_adapters(model)
    unmerge_adapters(model)
assert layer0.weight.data is original
print("after unmerging (and 10 more rounds of merge + unmerge) W is the original array, bit for bit")

# %% [markdown]
# Why keep the original W instead of subtracting s·B·A again? Because float32 addition does not
# undo exactly: (W + Δ) − Δ differs from W in the last bits. Here is how far it would drift:

# %%
drifted = original.copy()
delta32 = layer0.delta_weight(dtype="float32")
for _ in range(10):
    drifted = (drifted + delta32) - delta32
changed = np.mean(drifted != original)
print(f"after 10 rounds of W + Δ − Δ in float32, {changed:.1%} of the entries of W differ from the original "
      f"(max {np.abs(drifted - original).max():.2e})")

# %% [markdown]
# `merge_and_unload` goes one step further: it returns a plain model, every LoRALinear replaced by a
# Linear holding W'. It has exactly the base model's parameters, no trace of A and B, and the
# adapted model's outputs.

# %%
plain = merge_and_unload(copy.deepcopy(model))
with evaluating(plain):
    plain_logits = plain(probe)[0].numpy()
print(f"merge_and_unload: {plain.num_parameters():,} parameters (base model: {base.num_parameters():,}); "
      f"LoRA layers left: {sum(isinstance(m, LoRALinear) for m in plain.modules())}")
assert plain.num_parameters() == base.num_parameters()
assert np.linalg.norm(plain_logits - unmerged_logits) / np.linalg.norm(unmerged_logits) <= 1e-5

# %% [markdown]
# ## 3. Zero added latency after merging
#
# Unmerged, every adapted layer computes x·Wᵀ plus the two thin products (x·Aᵀ)·Bᵀ. Merged, it is a
# plain Linear again: the same work as the base model. We time a forward pass of each, taking turns
# so that a change in the machine's load hits them all alike, and print the median. Timings depend
# on the machine and its load, so they are printed, never asserted.
#
# The unmerged layers run minilora's fused LoRA op on its default backend here (the C++ op when the
# extension is built, NumPy's matrix products otherwise); the row "NumPy reference op" runs the same
# layers as three BLAS products instead. Which of the two unmerged rows is faster depends on the
# sizes and the machine. Merged, the question disappears: the merged model does the base model's
# work. (On a machine shared with other work, `OPENBLAS_NUM_THREADS=1` gives steadier numbers.)

# %%
timing_batch = new_task.inputs["val"][:128 if FAST else 256]
reps = 5 if FAST else 10
merged = merge_adapters(copy.deepcopy(model))
candidates = [
    ("base model (plain Linears)", base, contextlib.nullcontext),
    (f"LoRA unmerged, {kernels.default_backend('cpu')} op ({len(layers)} layers, r={rank})", model,
     contextlib.nullcontext),
    ("LoRA unmerged, NumPy reference op", model, lambda: kernels.use_backend("numpy")),
    ("LoRA merged", merged, contextlib.nullcontext),
    ("merge_and_unload (plain model)", plain, contextlib.nullcontext),
]
times = {label: [] for label, _, _ in candidates}
for rep in range(reps + 1):
    for label, net, backend_choice in candidates:
        with evaluating(net), backend_choice():
            start = time.perf_counter()
            net(timing_batch)
            if rep > 0:                                    # the first round is a warm-up
                times[label].append(time.perf_counter() - start)

base_ms = 1000 * np.median(times[candidates[0][0]])
print(f"forward pass of {timing_batch.shape[0]} sequences of {timing_batch.shape[1]} tokens, median of {reps}")
print(f"{'model':<52}{'ms':>8}{'vs base':>9}")
for label, _, _ in candidates:
    ms = 1000 * np.median(times[label])
    print(f"{label:<52}{ms:>8.2f}{ms / base_ms:>8.2f}x")
fast_mode_note(f"a batch of {timing_batch.shape[0]} and {reps} repeats are too small to time: these ratios are "
               "noise (an unmerged LoRA can even look faster than the base model)")

# %% [markdown]
# ## 4. Several adapters on one frozen model
#
# One base model can carry many adapters and switch between them by name, the way a server keeps
# one copy of a big model and a small adapter per customer. We add a second adapter, `"random"`,
# with rank 4 on v_proj and o_proj (so it shares v_proj with `"finetuned"` and adds o_proj, which
# `"finetuned"` leaves alone). It is **not trained**: its B is filled with random numbers (a fresh
# adapter has B = 0 and would change nothing), scaled so that its ΔW has, in every layer, the mean
# Frobenius norm of the trained adapter's ΔW. So `"finetuned"` is trained on the new task, and
# `"random"` is a random update of the same size.
#
# `add_adapter` adds it without activating it; `set_adapter` picks the one forward uses (and the
# only one that trains); `disable_adapters` switches them all off inside a `with` block.

# %%
add_adapter(model, "random", LoRAConfig(r=4, alpha=8, target_modules=("v_proj", "o_proj")))
layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]   # now with o_proj
trained_norm = np.mean([np.linalg.norm(m.delta_weight("finetuned")) for _, m in layers if "finetuned" in m.adapters])
set_adapter(model, "random")
rng = np.random.default_rng(0)
for name, layer in layers:
    if "random" in layer.adapters:
        layer.lora_B.data = rng.standard_normal(layer.lora_B.shape).astype(np.float32)
        layer.lora_B.data *= np.float32(trained_norm / np.linalg.norm(layer.delta_weight("random")))
print("adapters:", list(model.lora_configs), "| active:", model.active_adapter)

with evaluating(base):
    base_logits = base(probe)[0].numpy()
outputs, table = {}, []
for adapter in ("finetuned", "random"):
    set_adapter(model, adapter)
    with evaluating(model):
        outputs[adapter] = model(probe)[0].numpy()
    table.append((adapter, accuracy(model, old_task), accuracy(model, new_task)))
with disable_adapters(model), evaluating(model):
    outputs["disabled"] = model(probe)[0].numpy()
    table.append(("disabled", accuracy(model, old_task), accuracy(model, new_task)))
set_adapter(model, "finetuned")

print(f"\n{'adapter':<11}{old_name + ' acc':>12}{new_name + ' acc':>12}{'max |logits − base logits|':>29}")
for adapter, old_acc, new_acc in table:
    print(f"{adapter:<11}{old_acc:>12.1%}{new_acc:>12.1%}{np.abs(outputs[adapter] - base_logits).max():>29.3g}")
assert not np.allclose(outputs["finetuned"], outputs["random"])    # switching changes the outputs
assert np.array_equal(outputs["disabled"], base_logits)            # switched off: the base model exactly
print("\nwith the adapters disabled the logits equal the base model's bit for bit")

# %% [markdown]
# ## 5. Composition: adding adapters
#
# The sum of two updates s₁B₁A₁ + s₂B₂A₂ is again a product B·A: stack the factors,
# A = [A₁; A₂] and B = [s₁B₁, s₂B₂]. `combine_adapters(method="cat")` does that, in every layer
# that either adapter adapts. It is exact, and the ranks add up: r + 4 in v_proj, where both sit.

# %%
combine_adapters(model, {"finetuned": 1.0, "random": 1.0}, "both")
worst = 0.0
for name, layer in layers:
    expected = sum(layer.delta_weight(a) for a in ("finetuned", "random") if a in layer.adapters)
    got = layer.delta_weight("both")
    worst = max(worst, np.linalg.norm(got - expected) / np.linalg.norm(expected))
ranks = {name.split(".")[-1]: layer.adapters["both"].r for name, layer in layers}
print(f"rank of 'both' in each kind of layer: {ranks}")
print(f"largest relative difference from the sum of the two ΔW: {worst:.1e}")
assert ranks["v_proj"] == rank + 4
assert worst <= 1e-6

# %% [markdown]
# Stacking grows the rank. To keep it at k, `method="svd"` takes the best rank-k approximation of
# the summed ΔW (Eckart–Young: keep the k largest singular values) and reports, per layer, the
# relative error ‖ΔW − B·A‖ / ‖ΔW‖ it leaves. We check the reported number by measuring the
# truncated adapter's ΔW ourselves, and plot the error against k for the three kinds of layer of
# the first block: q_proj (only `"finetuned"`), v_proj (both), o_proj (only `"random"`).

# %%
by_name = dict(layers)
block0 = [f"h.0.attn.{proj}" for proj in ("q_proj", "v_proj", "o_proj")]
ks = list(range(1, max(by_name[name].adapters["both"].r for name in block0) + 1))
reported = {name: [] for name in block0}
for k in ks:
    errors = combine_adapters(model, {"finetuned": 1.0, "random": 1.0}, f"svd_{k}", method="svd", rank=k)
    for name, curve in reported.items():
        layer = by_name[name]
        target = layer.delta_weight("both")
        measured = np.linalg.norm(layer.delta_weight(f"svd_{k}") - target) / np.linalg.norm(target)
        assert abs(measured - errors[name]) <= 1e-5, (name, k, measured, errors[name])
        curve.append(errors[name])
    delete_adapter(model, f"svd_{k}")

print(f"{'k':>3}" + "".join(f"{name:>18}" for name in reported))
for i, k in enumerate(ks):
    print(f"{k:>3}" + "".join(f"{reported[name][i]:>18.4f}" for name in reported))
for name, curve in reported.items():   # at the stacked rank nothing is cut
    assert curve[by_name[name].adapters["both"].r - 1] < 1e-6

fig = Figure(figsize=(7, 4))
ax = fig.subplots()
for name, errors in reported.items():
    ax.plot(ks, errors, marker="o", label=f"{name} (stacked rank {by_name[name].adapters['both'].r})")
ax.set(xlabel="rank k of the SVD-truncated sum", ylabel="relative error ‖ΔW − B·A‖ / ‖ΔW‖",
       title="'finetuned' + 'random', truncated by SVD")
ax.grid(alpha=0.3)
ax.legend()
show(fig, "06_svd_truncation_error")

# %% [markdown]
# The same tool answers a question about the trained adapter alone: how many of its r directions
# does the task need? We truncate `"finetuned"` to rank k and score each truncation on the new task.

# %%
print(f"{'k':>3}{new_name + ' acc':>12}{'mean relative error':>22}")
for k in sorted({1, 2, rank // 2, rank}):
    errors = combine_adapters(model, {"finetuned": 1.0}, f"top_{k}", method="svd", rank=k)
    set_adapter(model, f"top_{k}")
    print(f"{k:>3}{accuracy(model, new_task):>12.1%}{np.mean(list(errors.values())):>22.4f}")
    set_adapter(model, "finetuned")
    delete_adapter(model, f"top_{k}")

# %% [markdown]
# ## 6. The rank of a learned update, and of a full fine-tuning update
#
# LoRA's update in a layer is ΔW = s·B·A, a product through r dimensions, so its rank is at most r
# *by construction*: beyond the r-th, its singular values are zero (up to float64 rounding). Full
# fine-tuning may change W in any direction. The LoRA paper's hypothesis is that it does not need
# to: the useful update has a low "intrinsic rank". We compare, layer by layer:
#
# - the numerical rank of ΔW_LoRA (singular values above 1e-10 of the largest);
# - the share of ΔW_full's energy (Σσ², the squared Frobenius norm) in its top r directions, and
#   what a matrix with a flat spectrum would put there (r / min(d, k), the least possible);
# - how well the two updates' top-r output directions agree: ‖U_LoRAᵀ·U_full‖² / r, 1 when they
#   span the same subspace, about r / d for unrelated ones.

# %%
base_weights = dict(base.named_parameters())
full_weights = dict(full.named_parameters())


def spectrum(matrix):
    """Left singular vectors and singular values (descending) of a float64 matrix."""
    U, S, _ = np.linalg.svd(matrix, full_matrices=False)
    return U, S


print(f"{'layer':<20}{'‖ΔW_LoRA‖':>11}{'‖ΔW_full‖':>11}{'rank LoRA':>11}"
      f"{'full energy in top r':>22}{'flat':>7}{'overlap':>9}{'chance':>8}")
spectra, energies = {}, []
finetuned_layers = [(name, layer) for name, layer in layers if "finetuned" in layer.adapters]
for name, layer in finetuned_layers:
    delta_lora = layer.delta_weight("finetuned")                                     # (d, k) float64
    delta_full = (full_weights[name + ".weight"].numpy().astype(np.float64)
                  - base_weights[name + ".weight"].numpy().astype(np.float64))
    U_lora, S_lora = spectrum(delta_lora)
    U_full, S_full = spectrum(delta_full)
    spectra[name] = (S_lora, S_full)
    lora_rank = int((S_lora > 1e-10 * S_lora[0]).sum())
    assert lora_rank <= rank
    energy = float((S_full[:rank] ** 2).sum() / (S_full ** 2).sum())
    energies.append(energy)
    overlap = float(np.linalg.norm(U_lora[:, :rank].T @ U_full[:, :rank]) ** 2 / rank)
    d = delta_full.shape[0]
    print(f"{name:<20}{np.linalg.norm(delta_lora):>11.3f}"
          f"{np.linalg.norm(delta_full):>11.3f}{lora_rank:>11}{energy:>22.1%}"
          f"{rank / min(delta_full.shape):>7.1%}{overlap:>9.2f}{rank / d:>8.2f}")

print(f"\nfull fine-tuning's top {rank} directions hold {min(energies):.0%} to {max(energies):.0%} of its update's "
      f"energy (mean {np.mean(energies):.0%}), in layers where a flat spectrum would give "
      f"{max(rank / min(layer.in_features, layer.out_features) for _, layer in finetuned_layers):.1%} at most")
if not FAST:
    assert min(energies) > 0.5, "the full update should be dominated by a few directions"

# %% [markdown]
# The spectra of one layer side by side. LoRA's falls off a cliff after index r (what remains, near
# 1e-16 of the largest, is float64 rounding: zero). Full fine-tuning's decays without a cliff; the
# right panel shows how much of its energy the first k directions hold.

# %%
shown = "h.0.attn.v_proj"
S_lora, S_full = spectra[shown]
index = np.arange(1, len(S_full) + 1)
floor = 1e-18
fig = Figure(figsize=(11, 4))
sv_ax, energy_ax = fig.subplots(1, 2)
sv_ax.semilogy(index, np.maximum(S_full / S_full[0], floor), marker=".", label="full fine-tuning ΔW")
sv_ax.semilogy(index, np.maximum(S_lora / S_lora[0], floor), marker=".", label="LoRA ΔW = s·B·A")
sv_ax.axvline(rank, color="gray", linestyle=":", label=f"r = {rank}")
sv_ax.set(xlabel="index i", ylabel="σᵢ / σ₁", title=f"singular values of the update, {shown}")
sv_ax.legend()
cumulative = np.cumsum(S_full ** 2) / np.sum(S_full ** 2)
energy_ax.plot(index, 100 * cumulative, marker=".", label="full fine-tuning ΔW")
energy_ax.plot(index, 100 * index / len(index), color="gray", linestyle="--", label="flat spectrum")
energy_ax.axvline(rank, color="gray", linestyle=":", label=f"r = {rank}: {cumulative[rank - 1]:.0%}")
energy_ax.set(xlabel="top k directions", ylabel="% of ‖ΔW‖² (energy)", ylim=(0, 100),
              title="energy of the full update in its top k directions")
energy_ax.legend()
for ax in (sv_ax, energy_ax):
    ax.grid(alpha=0.3)
fig.tight_layout()
show(fig, "06_update_spectra")

# %% [markdown]
# ## What we saw
#
# - Merging folds s·B·A into W with a single rounding, the merged model computes the same outputs
#   to float32 tolerance, and unmerging restores W exactly because the original array is kept.
# - Merged, an adapted model is a plain model: its forward pass costs what the base model's costs.
#   Unmerged, it pays for the thin products, and in exchange can switch adapters by name.
# - Switched off, the adapters leave the base model exactly as it was; adapters add exactly by
#   stacking, and compress by SVD with a known, measurable error.
# - A LoRA update has rank at most r by construction. The update full fine-tuning finds on the
#   same task is full rank on paper, but puts a large share of its energy in a few directions:
#   the low-rank structure that LoRA bets on.
