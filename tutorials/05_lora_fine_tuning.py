# %% [markdown]
# # 05 · LoRA fine-tuning
#
# Tutorial 04 trained a small GPT from scratch. Here we take such a model, pretrained on two-digit
# addition, and teach it something it cannot do yet, twice: once by full fine-tuning (every weight
# trains) and once with LoRA (every weight frozen; two thin matrices per adapted layer train).
#
# You will:
# - watch the pretrained model fail the new task;
# - inject LoRA into `q_proj` and `v_proj` with `apply_lora`, and check that a fresh adapter
#   changes nothing (B starts at zero);
# - fine-tune with LoRA and with full fine-tuning, and compare accuracy, trainable parameters,
#   optimizer memory and what each model still knows of addition;
# - sweep the rank r and see how few parameters the task needs.
#
# **Time:** 15 minutes to read. The full run trains for a few minutes on a laptop CPU;
# `--fast` (or `MINILORA_FAST=1`) runs every cell in seconds with tiny settings, whose
# accuracies mean nothing.
#
# **How to run it:** `python tutorials/05_lora_fine_tuning.py [--fast]`, or open it as a notebook
# (see `tutorials/README.md`). Figures go to `minilora_runs/figures/`.

# %%
import copy
import dataclasses

from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

import minilora
from minilora.data import TaskDataset, get_task
from minilora.demo import load_or_pretrain_base
from minilora.lora import LoRALinear, adamw_state_bytes, apply_lora, disable_adapters, trainable_summary
from minilora.kernels import use_backend
from minilora.lora.finetune import QUICK, TRAINING_BACKEND, ExperimentConfig, format_bytes
from minilora.notebook import FAST, fast_mode_note, show
from minilora.train import evaluating, train

config = QUICK if FAST else ExperimentConfig()
print(f"fast mode: {FAST}; pretrain on '{config.pretrain_task}', fine-tune on '{config.finetune_task}'")

# %% [markdown]
# ## 1. The tasks
#
# Both tasks are strings of characters. The pretraining task is plain addition; the new task asks
# for the same sums, but the question is written in a code: every digit d of the operands
# appears as 9 − d. The model knows how to add; it has never read this notation.

# %%
old_task = TaskDataset(get_task(config.pretrain_task), seed=config.seed)
new_task = TaskDataset(get_task(config.finetune_task), seed=config.seed)
for i in (3725, 5008, 9999):
    print(f"{old_task.task.example(i):>12}   {new_task.task.example(i):>12}")

# %% [markdown]
# ## 2. The pretrained model
#
# `load_or_pretrain_base` pretrains the GPT on addition (under a minute on a CPU), or loads the
# one `minilora demo` already trained and saved in `minilora_runs/demo` with the same settings.
# (Fast mode keeps its tiny model in `minilora_runs/demo_quick`, out of the demo's way.)

# %%
base = load_or_pretrain_base(config, "minilora_runs/demo_quick" if FAST else "minilora_runs/demo", quiet=True)


def accuracy(model, dataset):
    """Held-out exact match: the whole answer, generated greedily, must be right."""
    return dataset.exact_match(model, "val", limit=config.eval_examples)


def show_answers(model, dataset, count=5):
    answers, correct = dataset.score(model, "val", limit=count)
    for i, answer, ok in zip(dataset.example_ids["val"], answers, correct):
        print(f"  {dataset.task.prompt(i)}{answer}   ({'right' if ok else 'wrong'}; expected "
              f"{dataset.task.answer(*dataset.task.operands(i))})")


before = {"old": accuracy(base, old_task), "new": accuracy(base, new_task)}
print(f"addition: {before['old']:.1%}   coded addition: {before['new']:.1%}")
show_answers(base, new_task)

# %% [markdown]
# The model reads "62+74=" as 62 + 74 and adds those. It is good at the skill and wrong about the
# question.
#
# ## 3. Injecting LoRA
#
# `apply_lora` replaces every `Linear` whose name matches `target_modules` by a `LoRALinear` that
# holds the frozen original (`.base`) and an adapter: A (r × in) drawn at random and B (out × r)
# set to zero. Everything else in the model is frozen.

# %%
lora_model = apply_lora(copy.deepcopy(base), config.lora)
summary = trainable_summary(lora_model)

layer = lora_model.h[0].attn.q_proj
assert isinstance(layer, LoRALinear)
print(f"\nh.0.attn.q_proj: W {layer.base.weight.shape} frozen, lora_A {layer.lora_A.shape}, "
      f"lora_B {layer.lora_B.shape}, scaling = alpha / r = {layer.scaling}")

# %% [markdown]
# Because B = 0, the product B·A is zero and the LoRA model computes what the base model
# computes: training starts from the pretrained model, not from a perturbed one. With the NumPy
# reference backend (both models then run as NumPy code) the logits are the very same bits. The
# default backend (the C++ ops, when they are built) adds up x·Wᵀ in its own order, so the last
# bits of float32 may differ.

# %%
idx = minilora.tensor(new_task.inputs["val"][:64])
with evaluating(base), evaluating(lora_model):
    with minilora.kernels.use_backend("numpy"):
        expected = base(idx)[0].numpy()
        same = (lora_model(idx)[0].numpy() == expected).all()
    largest = abs(lora_model(idx)[0].numpy() - expected).max()
print(f"fresh adapter, NumPy backend: logits identical to the base model's: {same}")
print(f"fresh adapter, default backend ({minilora.kernels.default_backend('cpu')}): largest difference {largest:.1e}")
assert same and largest <= 1e-5 * abs(expected).max()

# %% [markdown]
# ## 4. Fine-tuning, both ways
#
# `train` optimises exactly the parameters with `requires_grad=True`: all of them for the copy we
# fine-tune fully, only the `lora_A` and `lora_B` matrices for the LoRA model. LoRA gets a higher
# learning rate and more steps: its update B·A starts at zero and grows through a product.
#
# The LoRA layers call the fused op `F.lora_linear`; we train with its default backend, chosen by
# the layer's size (`TRAINING_BACKEND`, and tutorial 07 on backends).

# %%
def fine_tune(model, training, desc):
    with use_backend(TRAINING_BACKEND["cpu"]):
        return train(model, lambda b, rng: new_task.get_batch("train", b, rng), training, desc=desc,
                     quiet=FAST)


full_model = copy.deepcopy(base)
full_history = fine_tune(full_model, config.full, "full fine-tuning")
lora_history = fine_tune(lora_model, config.lora_training, "LoRA")

# %%
fig = Figure(figsize=(7, 4))
ax = fig.subplots()
ax.plot(full_history["step"], full_history["train_loss"], marker="o", markersize=3, label="full fine-tuning")
ax.plot(lora_history["step"], lora_history["train_loss"], marker="o", markersize=3, label="LoRA (q, v)")
ax.set(xlabel="step", ylabel="training loss", yscale="log", title="fine-tuning on coded addition")
ax.grid(alpha=0.3)
ax.legend()
show(fig, "05_loss_curves")

# %% [markdown]
# ## 5. Before and after
#
# For the LoRA model, "still knows addition" is measured with the adapter switched off
# (`disable_adapters`): the base weights were never touched, so it is the pretrained model again.
# The fully fine-tuned model has only one set of weights, and they have moved.

# %%
rows = {"before": before}
rows["full fine-tuning"] = {"old": accuracy(full_model, old_task), "new": accuracy(full_model, new_task),
                            "trainable": full_model.num_parameters(trainable_only=True)}
rows["LoRA"] = {"new": accuracy(lora_model, new_task), "trainable": lora_model.num_parameters(trainable_only=True)}
with disable_adapters(lora_model):
    rows["LoRA"]["old"] = accuracy(lora_model, old_task)

# "share": trainable / all parameters of that model (the LoRA model's include its adapters), the
# same share trainable_summary printed above.
rows["full fine-tuning"]["total"] = full_model.num_parameters()
rows["LoRA"]["total"] = lora_model.num_parameters()
print(f"{'':<18}{'trainable':>12}{'share':>9}{'AdamW state':>13}{'coded':>9}{'addition':>10}")
for name, row in rows.items():
    trainable = row.get("trainable")
    sizes = (f"{trainable:>12,}{trainable / row['total']:>9.2%}{format_bytes(adamw_state_bytes(trainable)):>13}"
             if trainable else " " * 34)
    print(f"{name:<18}{sizes}{row['new']:>9.1%}{row['old']:>10.1%}")
assert rows["LoRA"]["old"] == before["old"]   # the adapter switched off is the base model exactly

full, lora = rows["full fine-tuning"], rows["LoRA"]
print(f"\nLoRA trains {full['trainable'] / lora['trainable']:.0f}x fewer parameters than full fine-tuning, so "
      f"AdamW keeps {full['trainable'] / lora['trainable']:.0f}x less state, and ends "
      f"{100 * (lora['new'] - full['new']):+.1f} points from full fine-tuning on the new task.")
fast_mode_note("the base model and both fine-tunes trained for a few steps only, so every accuracy here "
               "(and in the rank sweep below) is near 0 and says nothing about LoRA")
print("\nthe LoRA model's answers now:")
show_answers(lora_model, new_task)

# %% [markdown]
# In the full run LoRA gets close to full fine-tuning on this task while training about 2% of the
# parameters. What it has to learn is a change in how the question is read, which the attention
# projections can make. (`minilora finetune --task sub` runs the same
# comparison on subtraction, a new skill rather than a new notation: there LoRA on q and v
# falls well behind full fine-tuning. Try it.)
#
# ## 6. How small can the rank be?
#
# The number of trainable parameters grows linearly with r. Train a fresh adapter for several
# ranks and see where accuracy stops improving. To keep this cell to a few minutes each rank gets
# half the steps of section 4 (alpha = 2r keeps the scaling alpha/r at 2 for all of them), so
# compare the ranks with each other rather than with the table above.

# %%
ranks = (1, 2) if FAST else (1, 2, 4, 8)
short = dataclasses.replace(config.lora_training, steps=config.lora_training.steps // 2,
                            warmup_steps=config.lora_training.warmup_steps // 2)
sweep = []
for r in ranks:
    model = apply_lora(copy.deepcopy(base), dataclasses.replace(config.lora, r=r, alpha=2 * r))
    fine_tune(model, short, f"LoRA r={r}")
    sweep.append((r, model.num_parameters(trainable_only=True), accuracy(model, new_task)))
    print(f"r = {r}: {sweep[-1][1]:,} trainable parameters, coded accuracy {sweep[-1][2]:.1%}")

# %%
fig = Figure(figsize=(7, 4))
ax = fig.subplots()
ax.plot([s[0] for s in sweep], [100 * s[2] for s in sweep], marker="o", label="LoRA (q, v)")
ax.axhline(100 * rows["full fine-tuning"]["new"], color="gray", linestyle="--", label="full fine-tuning")
ax.set_xscale("log", base=2)
ax.xaxis.set_minor_locator(NullLocator())   # no ticks (and no "3×10⁰" labels) between the ranks
ax.set(xticks=ranks, xticklabels=[str(r) for r in ranks], xlabel="rank r",
       ylabel="held-out exact match (%)", ylim=(0, 105), title="accuracy against rank (one run per rank)")
ax.grid(alpha=0.3)
ax.legend()
show(fig, "05_rank_sweep")

# %% [markdown]
# The trainable-parameter count doubles with each step of r. The accuracy need not rise with it
# in this sweep, and in a full run it may well not: each rank is **one** short run, from its own
# random A, so its accuracy carries the luck of that run as much as the effect of r, and a rank
# that scores below a smaller one says more about the run than about the rank. One run per rank
# can show a trend across the whole range, not the order of two neighbouring ranks. To see how
# large the luck is,
# repeat the cell with other seeds (`minilora.manual_seed(seed)` before `apply_lora`, and
# `dataclasses.replace(short, seed=seed)` for the batch order) and compare each rank's spread.
#
# Tutorial 06 looks inside the learned update ΔW = B·A: merging it into W, switching adapters,
# and its singular values.
