# %% [markdown]
# # 09 · QLoRA: a 4-bit frozen base
#
# LoRA trains a few thin matrices, but the frozen base still has to sit in memory, in full.
# QLoRA (Dettmers et al., 2023) stores that base in 4 bits, with a number format made for
# weights that look normally distributed, and trains LoRA adapters on top in 16/32 bits:
# "finetuning a 65B parameter model on a single 48GB GPU".
#
# You will:
# - count the memory of a model's weights and optimizer state at 32, 16 and 4 bits, for the paper's
#   65B model and for GPT-3 175B;
# - build NF4, the 16 levels of "4-bit NormalFloat", and see them against a Gaussian;
# - quantize blockwise (one absmax per block of 64) and measure the error for each block size,
#   and what double quantization (the absmaxes themselves in 8 bits) saves;
# - fine-tune the demo's model on its new task with a 4-bit base and with the float32 base.
#
# **Time:** 15 minutes to read. The full run fine-tunes six times, 600 steps each (under a minute
# a run on a quiet 2-core CPU, several on a busy one: see "If training is slow" in the README; the
# run recorded in section 4 took 26 minutes on a crowded machine);
# `--fast` (or `MINILORA_FAST=1`) runs every cell in seconds with tiny settings, and then the
# fine-tuning accuracies (section 4) mean nothing: the model is barely trained.
# Sections 1 and 2 compute the same numbers in both modes; section 3 uses a smaller Gaussian
# matrix and fast mode's tiny model, so its figures are close to, but not, the full run's.
#
# **How to run it:** `python tutorials/09_qlora.py [--fast]`, or open it as a notebook (see
# `tutorials/README.md`). Figures go to `minilora_runs/figures/`.

# %%
import copy
import dataclasses
import statistics

import numpy as np
from matplotlib.figure import Figure

from minilora.demo import load_or_pretrain_base
from minilora.finetune_variants import Variant, compare, format_table, summarize, with_steps
from minilora.lora import apply_lora, count_lora_from_shapes, count_model_parameters
from minilora.lora.count import gpt3_config
from minilora.lora.finetune import QUICK, ExperimentConfig, format_bytes
from minilora.notebook import FAST, show
from minilora.quant import NF4_CODE, NF4Linear, nf4_quantize

print(f"fast mode: {FAST}")

# %% [markdown]
# ## 1. Where the memory goes
#
# Fine-tuning holds, for every parameter: the weight; for every *trained* parameter also its
# gradient and AdamW's two moments (kept in float32 even when the weights are 16-bit).
# Full fine-tuning in 16 bits therefore costs 2 + 2 + 8 = 12 bytes a parameter. LoRA freezes
# the base (2 bytes a weight in 16 bits) and trains only the adapters; QLoRA stores the frozen
# weights in NF4 with double quantization, about 4.127 bits (measured in section 3). Activations
# come on top and depend on the batch; they are left out here, as is the paged optimizer that
# QLoRA uses to survive memory spikes.
#
# The paper's largest model is LLaMA 65B: 80 blocks of width 8192 with an MLP of width 22016
# (three matrices: gate, up, down), and adapters of rank 64 on every linear layer.

# %%
NF4_BITS = nf4_quantize(np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32),
                        block_size=64, double_quant=True).bits_per_parameter
llama = {"blocks": 80, "d": 8192, "mlp": 22016, "vocab": 32000}
per_block = [(llama["d"], llama["d"])] * 4 + [(llama["mlp"], llama["d"])] * 2 + [(llama["d"], llama["mlp"])]
llama_params = llama["blocks"] * sum(a * b for a, b in per_block) + 2 * llama["vocab"] * llama["d"]
llama_lora = count_lora_from_shapes(per_block * llama["blocks"], 64)
gpt3_params = count_model_parameters(gpt3_config())
gpt3_shapes = [(12288, 12288)] * 4 + [(4 * 12288, 12288), (12288, 4 * 12288)]
gpt3_lora = count_lora_from_shapes(gpt3_shapes * 96, 64)
GB = 1e9


def memory_rows(params, lora_params):
    """(setting, bytes of weights, bytes of gradients + AdamW state) for one model."""
    adam = lambda n, weight_bytes: n * (weight_bytes + 8)      # a gradient like the weight + two fp32 moments
    return [("full fine-tuning, 32-bit", params * 4, adam(params, 4)),
            ("full fine-tuning, 16-bit", params * 2, adam(params, 2)),
            ("LoRA r=64, 16-bit base", params * 2 + lora_params * 2, adam(lora_params, 2)),
            ("QLoRA r=64, NF4 base", params * NF4_BITS / 8 + lora_params * 2, adam(lora_params, 2))]


for name, params, lora_params in (("LLaMA 65B", llama_params, llama_lora), ("GPT-3 175B", gpt3_params, gpt3_lora)):
    print(f"\n{name}: {params / 1e9:.1f}B parameters; LoRA r=64 on every linear layer trains "
          f"{lora_params / 1e6:.0f}M ({100 * lora_params / params:.2f}%)")
    print(f"  {'':<26}{'weights':>10}{'grads + AdamW':>15}{'total':>10}")
    for setting, weights, state in memory_rows(params, lora_params):
        print(f"  {setting:<26}{weights / GB:>8.1f}GB{state / GB:>13.1f}GB{(weights + state) / GB:>8.1f}GB")

full16 = sum(memory_rows(llama_params, llama_lora)[1][1:])
qlora = sum(memory_rows(llama_params, llama_lora)[3][1:])
assert full16 > 780 * GB and qlora < 48 * GB   # the paper: "from >780GB ... to <48GB"
print(f"\nLLaMA 65B: {full16 / GB:.0f} GB for 16-bit full fine-tuning, {qlora / GB:.1f} GB for QLoRA "
      f"(plus activations): the paper's '>780GB' and '<48GB'")

# %% [markdown]
# ## 2. NF4: sixteen levels for a bell curve
#
# A 4-bit number has 16 values. Spread evenly over [-1, 1] (plain int4), most of them sit where a
# normally distributed weight rarely goes. NF4 puts them at quantiles of N(0, 1) instead, so each
# level is used about equally often: 8 quantiles on the positive side, 7 on the negative side and
# an exact 0, all divided by the largest so they span [-1, 1]. Below we rebuild them from the
# inverse normal CDF and compare with `NF4_CODE`, the table bitsandbytes ships.

# %%
inverse_cdf = statistics.NormalDist().inv_cdf
offset = 0.9677083                        # bitsandbytes' choice: where the outermost quantile sits
positive = [inverse_cdf(p) for p in np.linspace(offset, 0.5, 9)[:-1]]
negative = [-inverse_cdf(p) for p in np.linspace(offset, 0.5, 8)[:-1]]
rebuilt = np.sort(np.array(positive + [0.0] + negative))
rebuilt /= rebuilt.max()
print("NF4_CODE:", np.round(NF4_CODE, 4))
print(f"largest difference from the rebuilt quantiles: {np.abs(rebuilt - NF4_CODE).max():.1e}")
assert np.abs(rebuilt - NF4_CODE).max() < 3e-7

# How often is each level used by Gaussian weights, blocks of 64 scaled by their absmax?
blocks = np.random.default_rng(1).standard_normal((20000, 64))
normalized = (blocks / np.abs(blocks).max(axis=1, keepdims=True)).reshape(-1)
int4 = np.linspace(-1, 1, 16)
use_nf4 = np.bincount(np.abs(normalized[:, None] - NF4_CODE).argmin(axis=1), minlength=16) / normalized.size
use_int4 = np.bincount(np.abs(normalized[:, None] - int4).argmin(axis=1), minlength=16) / normalized.size
print(f"share of weights per level, NF4:  {np.round(use_nf4, 3)}")
print(f"share of weights per level, int4: {np.round(use_int4, 3)}")
err = {name: np.sqrt(np.mean((normalized - code[np.abs(normalized[:, None] - code).argmin(axis=1)]) ** 2))
       for name, code in (("NF4", NF4_CODE), ("int4", int4))}
print(f"RMS rounding error (in units of absmax): NF4 {err['NF4']:.4f}, evenly spaced int4 {err['int4']:.4f}")
assert err["NF4"] < err["int4"]

fig = Figure(figsize=(9, 3.8))
ax = fig.subplots()
ax.hist(normalized, bins=200, density=True, color="0.75", label="Gaussian weights / block absmax (blocks of 64)")
for i, level in enumerate(NF4_CODE):
    ax.axvline(level, color="tab:blue", lw=1.2, label="NF4 levels" if i == 0 else None)
for i, level in enumerate(int4):
    ax.axvline(level, color="tab:red", lw=0.8, ls=":", label="evenly spaced 4-bit levels" if i == 0 else None)
ax.set(xlabel="w / absmax", ylabel="density", title="NF4 puts its 16 levels where the weights are")
ax.legend(loc="upper right", fontsize=8)
fig.tight_layout()
show(fig, "09_nf4_levels")

# %% [markdown]
# ## 3. Blocks, and the error they leave
#
# `nf4_quantize(W, block_size=64)` flattens W, cuts it into blocks, and stores per block one
# float32 absmax and per number a 4-bit index (two per byte). A smaller block follows the local
# scale better (less error) but pays more for its absmaxes: 32/64 = 0.5 extra bits a weight at 64.
# Double quantization stores the absmaxes in 8 bits (minus their mean, one float32 scale per 256
# blocks): 8/64 + 32/(64·256) = 0.127 extra bits instead of 0.5.
#
# We measure on a Gaussian matrix the size of a GPT-2 MLP weight (std 0.02) and on the real
# weights of the demo's pretrained model (section 4 loads it).

# %%
config = QUICK if FAST else ExperimentConfig()
base = load_or_pretrain_base(config, "minilora_runs/demo_quick" if FAST else "minilora_runs/demo", quiet=True)
shape = (256, 768) if FAST else (768, 3072)
gaussian = (0.02 * np.random.default_rng(2).standard_normal(shape)).astype(np.float32)
real = np.concatenate([p.numpy().reshape(-1) for name, p in base.named_parameters()
                       if p.ndim == 2 and ("attn" in name or "mlp" in name)])

block_sizes = [16, 32, 64, 128, 256, 1024]
results = {}
print(f"{'block':>6}{'bits/weight':>13}{'with DQ':>9}{'rel. error, Gaussian':>22}{'rel. error, demo model':>24}")
for size in block_sizes:
    row = {}
    for name, array in (("gaussian", gaussian), ("real", real)):
        q = nf4_quantize(array, size)
        row[name] = float(np.linalg.norm(q.dequantize() - array) / np.linalg.norm(array))
        dq = nf4_quantize(array, size, double_quant=True)
        row[name + "_dq"] = float(np.linalg.norm(dq.dequantize() - array) / np.linalg.norm(array))
    row["bits"] = nf4_quantize(gaussian, size).bits_per_parameter
    row["bits_dq"] = nf4_quantize(gaussian, size, double_quant=True).bits_per_parameter
    results[size] = row
    print(f"{size:>6}{row['bits']:>13.3f}{row['bits_dq']:>9.3f}{row['gaussian']:>22.4f}{row['real']:>24.4f}")
whole = nf4_quantize(gaussian, gaussian.size)
print(f"one absmax for the whole matrix: {whole.bits_per_parameter:.3f} bits, relative error "
      f"{np.linalg.norm(whole.dequantize() - gaussian) / np.linalg.norm(gaussian):.4f}")
print(f"double quantization changes the error by at most "
      f"{max(abs(r['gaussian_dq'] - r['gaussian']) for r in results.values()):.1e} (Gaussian)")
assert abs(results[64]["bits_dq"] - 4.127) < 0.002 and results[64]["bits"] == 4.5
assert results[16]["gaussian"] < results[64]["gaussian"] < results[1024]["gaussian"]

fig = Figure(figsize=(7, 4))
ax = fig.subplots()
for key, label, marker in (("", "absmax in float32", "o"), ("_dq", "double quantization", "s")):
    ax.plot([results[s]["bits" + key] for s in block_sizes], [results[s]["gaussian" + key] for s in block_sizes],
            marker=marker, label=f"Gaussian, {label}")
for s in block_sizes:
    ax.annotate(str(s), (results[s]["bits"], results[s]["gaussian"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
ax.plot([results[s]["bits"] for s in block_sizes], [results[s]["real"] for s in block_sizes], marker="^",
        label="demo model's weights, float32 absmax")
ax.set(xlabel="bits per weight", ylabel="relative error ‖W − Ŵ‖ / ‖W‖",
       title="NF4: smaller blocks, less error, more bits (labels: block size)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
show(fig, "09_error_per_block_size")

# %% [markdown]
# ## 4. Fine-tuning on a 4-bit base
#
# The demo's model (pretrained on addition) now learns coded addition with LoRA on q and v, r = 8,
# the demo's settings, twice: once over its float32 weights, once with those weights stored in
# NF4 (`LoRAConfig(base_quant="nf4")`: block 64, double quantization). Same steps (600, under a
# third of the demo's 2000, so that six runs finish in minutes: the adapters are not done
# learning, and the table compares the two bases at the same point), learning rate, batches and
# starting A; three seeds each. The "old task" column is the first task with
# the adapter switched off, i.e. the base each adapter sits on: it shows what 4 bits cost the
# pretrained model itself, before any fine-tuning.
#
# The fused LoRA op gets the NF4 weight and dequantizes it inside each call (section 6 says where).

# %%
seeds = (0,) if FAST else (0, 1, 2)
steps = config.lora_training.steps if FAST else 600
qlora_config = dataclasses.replace(config.lora, base_quant="nf4")
runs = compare(base, [Variant("float32", config.lora), Variant("NF4 base", qlora_config)], with_steps(config, steps),
               seeds)
print(format_table(runs, new_label=f"'{config.finetune_task}' acc", old_label=f"'{config.pretrain_task}', no adapter"))
summary = summarize(runs)
drop = summary["float32"]["new"][0] - summary["NF4 base"]["new"][0]
print(f"\nbase weights of the adapted layers: {format_bytes(summary['float32']['base_weight_bytes'])} in float32, "
      f"{format_bytes(summary['NF4 base']['base_weight_bytes'])} in NF4")
print(f"4-bit base minus float32 base on '{config.finetune_task}': {-100 * drop:+.1f} points (mean of {len(seeds)} seeds)")
print(f"{steps} steps each, lr {config.lora_training.lr:g}, batches of {config.lora_training.batch_size}")
if FAST:
    print("(fast mode: a tiny model trained for a few steps; these accuracies mean nothing)")

# %% [markdown]
# **One full run, recorded here** (this text is not computed: the cell above prints your run). On
# 2 December 2026, on a 2-core development VM shared with other work (1-minute load average 4 to
# 8.5, the tutorial under `nice -n 10`; 26 minutes for the whole tutorial),
# `python tutorials/09_qlora.py` printed:
#
# | base | W bytes (adapted layers) | coded addition, mean ± std | seeds 0, 1, 2 | 'add', adapter off |
# |---|---|---|---|---|
# | float32 | 524,288 | 67.0% ± 10.6% | 53.2%, 68.8%, 79.0% | 100.0% |
# | NF4, block 64, double quantization | 67,648 | 58.3% ± 13.6% | 63.4%, 39.6%, 71.8% | 100.0% |
#
# The 4-bit base holds the adapted layers' W in 7.8 times fewer bytes, and the pretrained model
# on it still adds perfectly (100% with the adapter off): 4 bits cost the base itself nothing
# that this task can see. On the new task the NF4 runs average 8.7 points lower, but seed by seed
# the difference is +10.2, -29.2 and -7.2 points, and each base's spread over seeds (11 to 14
# points) is larger than the gap: three seeds of 600 steps do not tell the two bases apart. The
# QLoRA paper's finding, that LoRA on a 4-bit NF4 base matches 16-bit LoRA, was measured on far
# larger models and runs; this one neither confirms nor refutes it. The seconds per run (283
# and 227) measured the machine's load.

# %% [markdown]
# ## 5. The whole model in 4 bits
#
# QLoRA quantizes every linear layer of the base, not only the adapted ones:
# `base_quant_scope="all-linear"` does that (the output head stays float). What does the
# pretrained model weigh then?

# %%
all_linear = dataclasses.replace(config.lora, base_quant="nf4", base_quant_scope="all-linear")
quantized = [m.weight_nf4 for _, m in apply_lora(copy.deepcopy(base), all_linear).named_modules()
             if isinstance(m, NF4Linear)]
linear_bytes = sum(q.nbytes for q in quantized)
linear_count = sum(q.size for q in quantized)
total = count_model_parameters(base.config)
print(f"{linear_count:,} of the model's {total:,} parameters are in linear layers (not the head): "
      f"{format_bytes(4 * linear_count)} in float32, {format_bytes(linear_bytes)} in NF4 "
      f"({8 * linear_bytes / linear_count:.3f} bits a weight; a small model has many partly filled "
      f"groups of 256 blocks, so it pays a little more than 4.127)")

# %% [markdown]
# ## 6. Where the 4-bit W is dequantized
#
# Storing W in 4 bits saves memory only if no float copy of it is ever made whole. The NumPy
# reference does make one, for the length of each call: `W.dequantize()`, then the products. The
# fast paths never do. The C++ op's GEMM packs panels of W into its own order before multiplying
# (tutorial 07); with an NF4 W, packing is where each 4-bit index is looked up among the 16 levels
# and multiplied by its block's absmax (`csrc/cpu/gemm_pack_nf4.h`), so the only float W is one
# packed column block, at most 8 MiB whatever the layer's size. The CUDA kernels' `"nf4"` rung is
# the tiled rung with a tile loader that does the same into shared memory, 16 × 16 values at a time
# (`csrc/cuda/lora_nf4.cu`; checked on the CPU emulator, not yet timed on a GPU). Both must give
# what the reference gives on the dequantized W; on the C++ op that is even the same bits, since its
# panels then hold the very same numbers. The C++ op is the default for NumPy arrays from 128
# features up: at 1 × 4096 × 4096 it took a fifth of the reference's time on a (loaded) 2-core VM,
# as the reference spends most of its time dequantizing (`python benchmarks/bench_cpu_op.py --nf4`).

# %%
from minilora import kernels  # noqa: E402
from minilora.kernels import backend_status  # noqa: E402

rng = np.random.default_rng(0)
W = nf4_quantize(rng.standard_normal((192, 256)).astype(np.float32), 64, double_quant=True)
x, A, B = (rng.standard_normal(shape).astype(np.float32) for shape in ((8, 256), (4, 256), (192, 4)))
y_reference, _ = kernels.lora_forward(x, W, A, B, 2.0, backend="numpy")
if backend_status("cpp")[0]:
    y_cpp, _ = kernels.lora_forward(x, W, A, B, 2.0, backend="cpp")
    y_dense, _ = kernels.lora_forward(x, W.dequantize(), A, B, 2.0, backend="cpp")
    relative = np.abs(y_cpp - y_reference).max() / np.abs(y_reference).max()
    print(f"C++ op on the NF4 W against the reference: largest difference {relative:.1e} of the largest |y| "
          "(float32 sums in another order)")
    print(f"C++ op on the NF4 W against itself on the dequantized W: identical bits? {np.array_equal(y_cpp, y_dense)}")
else:
    print(f"the C++ op is not available here: {backend_status('cpp')[1]}")
print(f"W: {W.nbytes:,} bytes in NF4 against {4 * W.size:,} in float32 ({W.bits_per_parameter:.3f} bits a weight)")
