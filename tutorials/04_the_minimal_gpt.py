# %% [markdown]
# # 04 · The minimal GPT
#
# LoRA adapts a model that already exists, so before adapting one we build one. This tutorial
# takes minilora's GPT apart and trains it twice, on data that ships with minilora:
#
# - **what a GPT is made of**: the config, where every parameter lives (a table, and a formula that
#   predicts its total), what each block does to the residual stream, and the causal mask that stops
#   a position from reading the future;
# - **training a character model** of Python's own help texts with `minilora.train.train`, its loss
#   curve, and why the unigram entropy of the text is the line to beat;
# - **generating text**, and **learning two-digit addition** from scratch, then asking it a few sums.
#
# Time: about 3 minutes on a laptop CPU (well under 20 seconds with `--fast`, which trains a tiny
# model for a few steps: the plumbing is the same, the results are poor).
#
# Run it as a script, `python tutorials/04_the_minimal_gpt.py` (add `--fast` for the quick version),
# or open it as a notebook (VS Code and Jupyter with jupytext read the `# %%` cells; for Colab,
# `jupytext --to ipynb tutorials/04_the_minimal_gpt.py`; in a notebook, set `MINILORA_FAST=1` for the
# quick version). Figures are saved under `minilora_runs/figures`.

# %%
import math

import numpy as np
from matplotlib.figure import Figure

import minilora
from minilora import functional as F
from minilora.data import TaskDataset, TextCorpus, get_task
from minilora.nn import GPT, GPTConfig
from minilora.notebook import FAST, fast_mode_note, show
from minilora.train import TASK_MODEL, TASK_TRAINING, TEXT_MODEL, TEXT_TRAINING, TrainConfig, mean_loss, train

print("fast mode" if FAST else "full mode")

# %% [markdown]
# ## 1. The data: characters in, ids out
#
# The corpus is the text that `help("with")` prints in a Python shell: `pydoc_data.topics`, about
# half a million characters of English and code that every CPython carries. One token is one
# character, so the vocabulary is just the distinct characters of the text, and the first 90% of the
# text trains while the last 10% is held out for validation.

# %%
corpus = TextCorpus.from_pydoc()
tokenizer = corpus.tokenizer
V = corpus.vocab_size
print(f"{len(corpus.split_ids('train')):,} training and {len(corpus.split_ids('val')):,} validation characters")
print(f"vocabulary: {V} characters, e.g. {tokenizer.chars[30:60]!r}")

ids = tokenizer.encode("for x in y:")
print("encode('for x in y:') =", ids)
assert tokenizer.decode(ids) == "for x in y:"

# A training example is a window of text; the targets are the same window shifted by one.
rng = np.random.default_rng(0)
idx, targets = corpus.get_batch("train", batch_size=2, block_size=24, rng=rng)
print("\ninput :", repr(tokenizer.decode(idx[0])))
print("target:", repr(tokenizer.decode(targets[0])))
assert np.array_equal(idx[0, 1:], targets[0, :-1])

# %% [markdown]
# ## 2. The config and where the parameters live
#
# `GPTConfig` holds the five numbers that fix the shape: vocabulary size `V`, context length
# `block_size` (T), number of blocks `n_layer` (L), attention heads `n_head`, and the width of the
# residual stream `n_embd` (C). Full mode uses the sizes of minilora's ready-made text run
# (`minilora.train.TEXT_MODEL`); fast mode a tiny model.

# %%
if FAST:
    text_config = GPTConfig(vocab_size=V, block_size=32, n_layer=1, n_head=2, n_embd=32)
else:
    text_config = GPTConfig(vocab_size=V, **TEXT_MODEL)
print(text_config)

minilora.manual_seed(0)
model = GPT(text_config)
print(model.parameter_table())

# %% [markdown]
# Every count in that table follows from the config. Per block: two LayerNorms (a gain and a bias
# of C each), four C×C attention projections with biases, and an MLP C → 4C → C:
#
# $$2\cdot 2C + 4(C^2 + C) + (4C^2 + 4C) + (4C^2 + C) = 12C^2 + 13C.$$
#
# Around the blocks: the token table V×C, the position table T×C, a final LayerNorm (2C) and the
# output head C×V (no bias, and not tied to the token table). The formula must match the model:

# %%
C, L, T = text_config.n_embd, text_config.n_layer, text_config.block_size
per_block = 12 * C * C + 13 * C
formula = V * C + T * C + L * per_block + 2 * C + C * V
print(f"V·C + T·C + L·(12C² + 13C) + 2C + C·V = {formula:,}")
print(f"model.num_parameters()                = {model.num_parameters():,}")
assert formula == model.num_parameters()
print(f"the blocks hold {L * per_block / formula:.0%} of the parameters; "
      f"the two vocabulary-sized tables {2 * V * C / formula:.0%}")

# %% [markdown]
# ## 3. One forward pass, step by step
#
# `model(idx)` does exactly the following. We run it by hand, printing shapes, and check that the
# result is the model's own, bit for bit.
#
# - **embeddings**: each id looks up its row of `wte`, each position its row of `wpe`; their sum is
#   the residual stream `x`, shape (B, T, C).
# - **each block** reads the stream and *adds* to it (pre-LayerNorm): `x = x + attn(ln_1(x))` lets
#   every position gather information from earlier positions; `x = x + mlp(ln_2(x))` then
#   transforms each position on its own. The stream keeps its shape all the way.
# - **the head**: a final LayerNorm, then `lm_head` turns each position's C numbers into V logits,
#   one score for every possible next character.

# %%
prompt_text = "def f(x):\n    return"
idx = minilora.tensor(tokenizer.encode(prompt_text)[None, :])       # (1, T)
B, T_prompt = idx.shape

with minilora.no_grad():
    x = model.wte(idx) + model.wpe(minilora.arange(T_prompt))         # (B, T, C)
    print(f"embeddings        x {x.shape}")
    for i, block in enumerate(model.h):
        x = x + block.attn(block.ln_1(x))
        print(f"block {i} attention x {x.shape}")
        x = x + block.mlp(block.ln_2(x))
        print(f"block {i} MLP       x {x.shape}")
    logits = model.lm_head(model.ln_f(x))                               # (B, T, V)
    print(f"logits              {logits.shape}")
    model_logits, _ = model(idx)

assert np.array_equal(logits.numpy(), model_logits.numpy())
print("by hand == model(idx): exactly")

# %% [markdown]
# ## 4. The causal mask
#
# Attention scores every pair (query position, key position). A language model predicts the next
# character, so position t may only look at positions 0..t: the scores above the diagonal are set
# to −∞ before the softmax, which makes their weights exactly 0. Each attention layer keeps that
# mask as a buffer (True = hidden):

# %%
mask = model.h[0].attn.causal_mask.numpy()
print(f"causal_mask: {mask.shape} (block_size x block_size); the top-left 8 x 8, 1 = hidden:")
print("\n".join(" ".join(str(int(v)) for v in row) for row in mask[:8, :8]))

# %% [markdown]
# Here are the attention weights of the first block's heads on the prompt, computed the way
# `CausalSelfAttention.forward` computes them. The model is untrained, so each query spreads its
# attention almost evenly over the positions it may see; the zeros above the diagonal are exact.

# %%
def attention_weights(model, idx):
    """The attention weights of block 0 on idx (1, T) -> array (n_head, T, T)."""
    attn, T = model.h[0].attn, idx.shape[1]
    nh, hd = attn.n_head, attn.head_dim
    with minilora.no_grad():
        h = model.h[0].ln_1(model.wte(idx) + model.wpe(minilora.arange(T)))      # block 0's input, normalised
        q = attn.q_proj(h).reshape(1, T, nh, hd).transpose(0, 2, 1, 3)          # (1, nh, T, hd)
        k = attn.k_proj(h).reshape(1, T, nh, hd).transpose(0, 2, 1, 3)
        scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(hd))          # (1, nh, T, T)
        weights = F.softmax(scores.masked_fill(attn.causal_mask[:T, :T], float("-inf")), axis=-1)
    return weights.numpy()[0]


def attention_figure(weights, text, title):
    """One heat map per head on one colour scale (0 to 1); the axes are labelled with the characters
    of `text`, a space shown as ␣ so that its tick is not blank."""
    labels = ["␣" if c == " " else repr(c)[1:-1] for c in text]
    fig = Figure(figsize=(4 * len(weights) + 1, 4.4), layout="constrained")
    axes = fig.subplots(1, len(weights), squeeze=False)[0]
    for head, ax in enumerate(axes):
        image = ax.imshow(weights[head], cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set(xlabel="key (attended to)", ylabel="query (attending)", title=f"{title}, head {head}")
    fig.colorbar(image, ax=list(axes), label="attention weight", shrink=0.8)
    return fig


def row_entropy(weights):
    """Mean entropy (nats) of the attention rows: ln(t + 1) for row t when spread evenly."""
    return float(-(weights * np.log(np.where(weights > 0, weights, 1.0))).sum(axis=-1).mean())


weights = attention_weights(model, idx)
future = np.triu(np.ones((T_prompt, T_prompt), dtype=bool), k=1)
assert (weights[:, future] == 0).all()                        # nothing flows from the future
assert np.allclose(weights.sum(axis=-1), 1.0, atol=1e-6)     # each row is a distribution
print(f"largest weight above the diagonal: {weights[:, future].max()}; every row sums to 1")
uniform_entropy = float(np.mean(np.log(np.arange(1, T_prompt + 1))))
untrained_entropy = row_entropy(weights)
print(f"mean entropy of a row: {untrained_entropy:.3f} nats (evenly spread: {uniform_entropy:.3f})")
show(attention_figure(weights, prompt_text, "untrained, block 0"), "04_attention_untrained")

# %% [markdown]
# The mask is a promise we can test from outside: change the *last* character of the input, and the
# logits at every earlier position must not move at all.

# %%
changed = idx.numpy().copy()
changed[0, -1] = (changed[0, -1] + 1) % V
with minilora.no_grad():
    before, _ = model(idx)
    after, _ = model(minilora.tensor(changed))
earlier_change = np.abs(after.numpy()[0, :-1] - before.numpy()[0, :-1]).max()
last_change = np.abs(after.numpy()[0, -1] - before.numpy()[0, -1]).max()
print(f"largest change of the logits at earlier positions: {earlier_change}")
print(f"largest change of the logits at the last position: {last_change:.3g}")
assert earlier_change == 0.0 and last_change > 0

# %% [markdown]
# ## 5. The loss before training, and the line to beat
#
# The loss is the cross-entropy of the next character, in nats. The weights start small (std
# 0.02), so the logits start near zero and every character gets about the same probability 1/V:
# the first loss is close to ln V.
#
# The **unigram entropy** is the loss of a model that knows how often each character occurs but
# ignores the context ("e" is common, "~" is rare). A model that reads the context must get below
# it; how far below is what it learned about the text.

# %%
val_rng = np.random.default_rng(1)
val_batches = [corpus.get_batch("val", 16 if FAST else 32, text_config.block_size, val_rng)
               for _ in range(2 if FAST else 8)]
initial_loss = mean_loss(model, val_batches)
unigram = corpus.unigram_entropy()
print(f"loss of the untrained model: {initial_loss:.3f} nats/char   (ln V = {math.log(V):.3f})")
print(f"unigram entropy of the text: {unigram:.3f} nats/char")
assert abs(initial_loss - math.log(V)) < 0.1

# %% [markdown]
# ## 6. Training the character model
#
# `minilora.train.train` is the whole loop: draw a batch, compute the loss, backpropagate, clip the
# gradient norm, take an AdamW step, follow a warm-up-then-cosine learning rate, and every
# `eval_every` steps call our `evaluate` and record a row of the history. Full mode uses the tuned
# settings of minilora's text run (`TEXT_TRAINING`).

# %%
text_training = TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=10) if FAST else TEXT_TRAINING
print(text_training)


def text_batch(batch_size, rng):
    return corpus.get_batch("train", batch_size, text_config.block_size, rng)


text_history = train(model, text_batch, text_training,
                     evaluate=lambda m: {"val_loss": mean_loss(m, val_batches)}, desc="text")

# %%
fig = Figure(figsize=(7, 4))
ax = fig.subplots()
ax.plot(text_history["step"], text_history["train_loss"], marker="o", label="train loss (mean since last row)")
ax.plot([0] + text_history["step"], [initial_loss] + text_history["val_loss"], marker="o", label="validation loss")
ax.axhline(math.log(V), color="gray", linestyle=":", label=f"uniform guess, ln V = {math.log(V):.2f}")
ax.axhline(unigram, color="gray", linestyle="--", label=f"unigram entropy = {unigram:.2f}")
ax.set(xlabel="step", ylabel="nats per character", title="character GPT on the pydoc texts")
ax.grid(alpha=0.3)
ax.legend()
show(fig, "04_text_loss")

final_val = text_history["val_loss"][-1]
print(f"validation loss after {text_training.steps} steps: {final_val:.3f} nats/char")
print(f"unigram entropy: {unigram:.3f}; the model is {abs(final_val - unigram):.3f} nats/char "
      f"{'below' if final_val < unigram else 'above'} it (perplexity {math.exp(final_val):.1f} characters, "
      f"against {math.exp(unigram):.1f} for the unigram model)")
assert final_val < initial_loss
if not FAST:
    assert final_val < unigram, "the trained model should beat the context-free unigram model"
fast_mode_note(f"{text_training.steps} steps of a tiny model: this loss is not comparable with the unigram entropy")

# %% [markdown]
# The same attention maps after training. Each head now puts its weight on chosen positions instead
# of spreading it evenly, so the rows' entropy falls; and still nothing above the diagonal.

# %%
weights = attention_weights(model, idx)
assert (weights[:, future] == 0).all()
print(f"mean entropy of a row: {row_entropy(weights):.3f} nats after training, {untrained_entropy:.3f} before "
      f"(evenly spread: {uniform_entropy:.3f})")
if not FAST:
    assert row_entropy(weights) < untrained_entropy
fast_mode_note("a few steps barely change the attention: these maps and the entropy against the untrained "
               "ones are not meaningful")
show(attention_figure(weights, prompt_text, "trained, block 0"), "04_attention_trained")

# %% [markdown]
# ## 7. Generating text
#
# `model.generate` feeds the model its own output: it reads the context (at most `block_size`
# characters), turns the last position's logits into a character, appends it and repeats.
# Temperature 0 always takes the most likely character, which tends to loop; a temperature below 1
# samples but sharpens the distribution. `minilora.manual_seed` makes the sample reproducible.

# %%
prompt = tokenizer.encode("The ")[None, :]
for temperature in (0, 0.8):
    minilora.manual_seed(0)
    out = model.generate(prompt, max_new_tokens=60 if FAST else 200, temperature=temperature)
    print(f"--- temperature {temperature} ---")
    print(tokenizer.decode(out.numpy()[0]))

# %% [markdown]
# ## 8. A task with exact answers: two-digit addition
#
# Text has no right answer to check; arithmetic does. Each example is a fixed-length string
# `"37+25=062."` over a small alphabet of digits and signs. The targets of the prompt positions are
# −1, which the loss ignores: the model is graded only on the answer. The held-out pairs of operands
# are never trained on, so the accuracy there measures whether the model learned to add rather than
# memorised.

# %%
dataset = TaskDataset(get_task("add"), seed=0)
task = dataset.task
print(f"{task!r}: {len(dataset.example_ids['train']):,} training and {len(dataset.example_ids['val']):,} "
      f"held-out examples, each {task.length} characters over the alphabet {dataset.tokenizer.chars!r}")
for i in dataset.example_ids["train"][:3]:
    print("  ", task.example(i))
print("inputs[0] :", dataset.inputs["train"][0], repr(dataset.tokenizer.decode(dataset.inputs["train"][0])))
print("targets[0]:", dataset.targets["train"][0])
assert (dataset.targets["train"][:, :task.prompt_length - 1] == -1).all()

# %% [markdown]
# A fresh GPT with a context of exactly one example (`block_size = task.length − 1`), trained with
# the same loop. `evaluate` reports the validation loss and the exact-match accuracy: the share of
# held-out prompts whose whole answer the model generates correctly, greedily.

# %%
if FAST:
    add_config = GPTConfig(vocab_size=dataset.tokenizer.vocab_size, block_size=task.length - 1,
                           n_layer=1, n_head=2, n_embd=32)
    add_training = TrainConfig(steps=60, batch_size=32, lr=3e-3, warmup_steps=6, eval_every=20)
else:
    add_config = GPTConfig(vocab_size=dataset.tokenizer.vocab_size, block_size=task.length - 1, **TASK_MODEL)
    add_training = TASK_TRAINING
eval_examples = 100 if FAST else 500

minilora.manual_seed(0)
adder = GPT(add_config)
print(f"{add_config}\n{adder.num_parameters():,} parameters")
add_history = train(adder, lambda b, rng: dataset.get_batch("train", b, rng), add_training,
                    evaluate=lambda m: {"val_loss": mean_loss(m, dataset.batches("val", 500)),
                                        "accuracy": dataset.exact_match(m, "val", limit=eval_examples)},
                    desc="add")

# %%
fig = Figure(figsize=(10, 4))
loss_ax, acc_ax = fig.subplots(1, 2)
loss_ax.plot(add_history["step"], add_history["train_loss"], marker="o", label="train loss")
loss_ax.plot(add_history["step"], add_history["val_loss"], marker="o", label="validation loss")
loss_ax.set(xlabel="step", ylabel="nats per answer character", yscale="log", title="loss")
loss_ax.legend()
acc_ax.plot(add_history["step"], [100 * a for a in add_history["accuracy"]], marker="o")
acc_ax.set(xlabel="step", ylabel="held-out exact match (%)", ylim=(0, 100), title="accuracy")
for ax in (loss_ax, acc_ax):
    ax.grid(alpha=0.3)
fig.tight_layout()
show(fig, "04_addition")

accuracy = dataset.exact_match(adder, "val")
print(f"held-out exact match on all {len(dataset.example_ids['val'])} held-out sums: {accuracy:.1%}")
if not FAST:
    assert accuracy > 0.9, "the full run should have learned to add"
fast_mode_note(f"{add_training.steps} steps of a 1-layer model cannot learn to add: this accuracy and the "
               "sums below are not meaningful")

# %% [markdown]
# Our own sums. The prompt is encoded, the model writes `task.answer_length` characters greedily,
# and we compare with Python's arithmetic. Example number `100·a + b` holds the pair (a, b) (two
# digits each), so we can also say whether the model ever saw that exact sum in training.

# %%
held_out = set(dataset.example_ids["val"].tolist())
sums = [(12, 34), (99, 99), (7, 5), (58, 47), (80, 20)]
prompts = np.stack([dataset.tokenizer.encode(f"{a:02d}+{b:02d}=") for a, b in sums])   # (5, prompt_length)
generated = adder.generate(prompts, max_new_tokens=task.answer_length, temperature=0).numpy()
right = 0
for (a, b), row in zip(sums, generated):
    text = dataset.tokenizer.decode(row)
    expected = task.example(100 * a + b)
    right += text == expected
    seen = "held out" if 100 * a + b in held_out else "trained on"
    print(f"  {text}   {'right' if text == expected else 'wrong, expected ' + expected:<22} ({seen})")
print(f"{right} of {len(sums)} right")

# %% [markdown]
# ## What we saw
#
# - A GPT is embeddings, a stack of identical blocks that add to a residual stream, and a head; its
#   parameter count is a formula of the config, and most of it sits in the blocks' weight matrices,
#   the matrices that LoRA will adapt.
# - The causal mask makes a position blind to the future, exactly: the earlier logits did not move
#   by a single bit when the last character changed.
# - Trained (in full mode), the character model falls from ln V through the unigram entropy: below
#   that line it uses the context. The same loop teaches a fresh model to add.
#
# Next: the adder knows addition and nothing else. The LoRA tutorials teach such a model a new task
# with an adapter that trains a small fraction of its parameters.
