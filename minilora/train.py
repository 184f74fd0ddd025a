"""Training: the loop that turns batches into a better model, and the ready-made runs behind it.

The loop (`train`) is generic: any Module that returns (logits, loss) from model(idx, targets),
any source of batches, any evaluation. It optimises only the parameters with requires_grad, so
the same loop pretrains a whole GPT and fine-tunes just the LoRA matrices of a frozen one.

    history = train(model, get_batch, TrainConfig(steps=800), evaluate=evaluate)

One step: draw a batch -> forward -> loss -> backward -> clip the gradients -> AdamW -> next lr
(linear warm-up, then cosine decay). Every eval_every steps, and at the last, `evaluate(model)`
runs and a row is added to the history, a dict of lists that minilora.plot draws:

    step, train_loss (mean since the previous row), val_loss, accuracy, lr, time (seconds)

A loss that becomes NaN or inf, or a gradient that does (caught by the clipping), stops training
with TrainingDiverged naming the step. An evaluation may be NaN: it is kept in the history and
written as null in JSON (save_history, a checkpoint's extra), which has no NaN.

The runs (`python -m minilora.train --task add|coded|sub|text`, also `minilora train`):
    add, coded, sub   a 4-layer, 128-wide GPT learns two-digit addition (in plain or coded
               digits) or subtraction from scratch (minilora.data.tasks) and is scored by exact match of greedily generated answers on held-out operand pairs;
    text       a character model of the pydoc help texts, against the text's unigram entropy.
"""

import argparse
import contextlib
import dataclasses
import json
import math
import numbers
import os
import time
from typing import Optional

import numpy as np
from tqdm.auto import tqdm  # a widget in a notebook (one output, not one per update), text elsewhere

from minilora import backend, cli, random
from minilora.checkpoint import save_checkpoint
from minilora.checks import check_number
from minilora.data.tasks import TASKS
from minilora.io import atomic_write
from minilora.nn import GPT, GPTConfig
from minilora.nn.checks import positive_int
from minilora.optim import AdamW, CosineWithWarmup, clip_grad_norm
from minilora.optim.schedule import check_min_lr_ratio
from minilora.tensor import no_grad, tensor

HISTORY_KEYS = ("step", "train_loss", "val_loss", "accuracy", "lr", "time")
LOOP_KEYS = ("step", "train_loss", "lr", "time")  # the loop records these; evaluate may not


@dataclasses.dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-3                  # the peak learning rate, reached after warm-up
    weight_decay: float = 0.01        # AdamW's decay, applied to matrices only (not biases, LayerNorms)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1         # the cosine ends at min_lr_ratio * lr
    grad_clip: Optional[float] = 1.0  # max global gradient norm; None: no clipping
    eval_every: int = 100
    seed: int = 0                     # the order of the batches

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every"):
            positive_int(name, getattr(self, name))
        for name, value in (("warmup_steps", self.warmup_steps), ("seed", self.seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps must be an int in [0, steps={self.steps}], got {self.warmup_steps!r}")
        check_number("lr", self.lr, low=0.0)
        check_number("weight_decay", self.weight_decay, low=0.0)
        check_min_lr_ratio(self.min_lr_ratio)
        if self.grad_clip is not None:  # inf: measure the norm (and catch inf/NaN gradients), never clip
            check_number("grad_clip", self.grad_clip, above=0.0, allow_inf=True)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf. `.history` holds the rows recorded before it happened."""

    def __init__(self, message, history):
        super().__init__(message)
        self.history = history


# ---- the loop ----------------------------------------------------------------------------------
def train(model, get_batch, config, evaluate=None, optimizer=None, checkpoint_path=None,
          checkpoint_every=None, checkpoint_extra=None, quiet=False, desc="train"):
    """Train `model` for config.steps steps; return the history (a dict of lists, see HISTORY_KEYS).

    get_batch(batch_size, rng) -> (idx, targets): integer arrays (B, T) (NumPy; they are moved to
        the model's device); rng is a numpy Generator seeded with config.seed.
    evaluate(model) -> {name: float}, e.g. {"val_loss": ..., "accuracy": ...}; names beyond
        HISTORY_KEYS get their own history lists; the LOOP_KEYS are the loop's own.
    optimizer: default AdamW over the parameters that require grad, matrices decayed.
    checkpoint_path: save there (minilora.checkpoint) every checkpoint_every steps and at the end,
        with extra = checkpoint_extra plus the step and the history.
    quiet: no progress bar, no printing.
    """
    device = _device_of(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"{type(model).__name__} has no parameter with requires_grad=True: nothing to train")
    optimizer = AdamW(parameter_groups(trainable, config.weight_decay), lr=config.lr) if optimizer is None else optimizer
    scheduler = CosineWithWarmup(optimizer, config.warmup_steps, config.steps, config.min_lr_ratio)
    rng = np.random.default_rng(config.seed)
    history = {key: [] for key in HISTORY_KEYS}
    losses, start = [], time.perf_counter()

    model.train()
    bar = tqdm(range(1, config.steps + 1), desc=desc, disable=quiet, dynamic_ncols=True)
    for step in bar:
        idx, targets = get_batch(config.batch_size, rng)
        _, loss = model(tensor(idx, device=device), tensor(targets, device=device))
        value = loss.item()
        lr = optimizer.param_groups[0]["lr"]
        if not math.isfinite(value):
            raise _diverged(bar, history, config, step, f"the loss is {value} (lr {lr:.3g}); lower the "
                            f"learning rate or clip the gradients (grad_clip={config.grad_clip})")
        optimizer.zero_grad()
        loss.backward()
        if config.grad_clip is not None:
            try:
                clip_grad_norm(trainable, config.grad_clip)
            except ValueError as exc:  # max_norm was checked with the config: the norm is not finite
                raise _diverged(bar, history, config, step,
                                f"{exc} (lr {lr:.3g}); lower the learning rate") from exc
        optimizer.step()
        scheduler.step()
        losses.append(value)
        bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}", refresh=False)

        if step % config.eval_every == 0 or step == config.steps:
            metrics = _check_metrics(evaluate(model)) if evaluate is not None else {}
            model.train()
            _record(history, step=step, train_loss=float(np.mean(losses)), lr=lr,
                    time=time.perf_counter() - start, **metrics)
            losses = []
            if not quiet:
                bar.write(_describe(history))
        if checkpoint_path is not None and (step == config.steps or (checkpoint_every and step % checkpoint_every == 0)):
            extra = {**(checkpoint_extra or {}), "step": step, "history": _json_ready(history)}
            save_checkpoint(model, checkpoint_path, extra=extra)
    bar.close()
    return history


def _diverged(bar, history, config, step, reason):
    """The TrainingDiverged to raise at `step`, after closing the progress bar."""
    bar.close()
    return TrainingDiverged(f"training stopped at step {step} of {config.steps}: {reason}", history)


def _check_metrics(metrics):
    """evaluate's result as {name: float}, or a clear error saying what was expected."""
    if not isinstance(metrics, dict):
        raise TypeError(f"evaluate(model) must return a dict {{name: number}}, got {type(metrics).__name__} "
                        f"{metrics!r:.100}")
    taken = [key for key in metrics if key in LOOP_KEYS]
    if taken:
        raise ValueError(f"evaluate(model) returned {taken}, which the loop records itself ({', '.join(LOOP_KEYS)}); "
                         "give the metric another name")
    for key, value in metrics.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"evaluate(model) must return a dict {{name (str): number}}, got {key!r}: {value!r}")
    return {key: float(value) for key, value in metrics.items()}


def _json_ready(history):
    """The history with NaN and inf as None, since JSON has no NaN (json.dump would write a bare
    NaN, which JSON readers refuse)."""
    return {key: [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]
            for key, values in history.items()}


def parameter_groups(params, weight_decay):
    """Two AdamW groups: matrices (ndim >= 2) decay towards zero; biases and LayerNorm gains,
    whose size is not a capacity to regularise, do not."""
    matrices = [p for p in params if p.ndim >= 2]
    vectors = [p for p in params if p.ndim < 2]
    groups = [{"params": matrices, "weight_decay": weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _record(history, **row):
    """Append one row; a metric seen for the first time gets a list padded with None."""
    n = len(history["step"])
    for key in row:
        history.setdefault(key, [None] * n)
    for key, values in history.items():
        values.append(row.get(key))


def _describe(history):
    row = {key: values[-1] for key, values in history.items() if values[-1] is not None}
    parts = [f"step {row.pop('step')}"]
    parts += [f"{key} {value:.1%}" if key.endswith("accuracy") else f"{key} {value:.4g}"
              for key, value in row.items()]
    return ", ".join(parts)


def _device_of(model):
    params = model.parameters()
    return params[0].device if params else "cpu"


@contextlib.contextmanager
def evaluating(model):
    """Evaluation mode (no dropout) and no graph inside the block; the previous mode after it."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            yield model
    finally:
        model.train(was_training)


def mean_loss(model, batches):
    """The mean loss over every target position (targets != -1) of `batches`, an iterable of
    (idx, targets) array pairs, computed without a graph."""
    device, total, count = _device_of(model), 0.0, 0
    with evaluating(model):
        for idx, targets in batches:
            n = int((np.asarray(targets) != -1).sum())
            _, loss = model(tensor(idx, device=device), tensor(targets, device=device))
            total, count = total + loss.item() * n, count + n
    if count == 0:
        raise ValueError("mean_loss got no target positions (every target is -1, or no batches)")
    return total / count


def save_history(history, path):
    """Write the history as JSON (atomically), NaN and inf as null; returns path."""
    with atomic_write(path, mode="w") as f:
        json.dump(_json_ready(history), f, indent=1, allow_nan=False)
    return path


# ---- the ready-made runs -----------------------------------------------------------------------
# Sizes and settings of the two runs. Measured on a shared 2-core CPU (one BLAS thread): addition
# reaches 100% held-out exact match (>= 99.6% by step 600) in about 75 s for seeds 0, 1 and 2;
# the text run gets to a validation loss of about 1.77 nats/char, against a unigram entropy of
# 3.25, in about 90 s.
TASK_MODEL = dict(n_layer=4, n_head=4, n_embd=128)
TASK_TRAINING = TrainConfig(steps=800, batch_size=64, lr=3e-3, warmup_steps=80, eval_every=100)
TEXT_MODEL = dict(n_layer=4, n_head=4, n_embd=128, block_size=64)
TEXT_TRAINING = TrainConfig(steps=300, batch_size=32, lr=3e-3, warmup_steps=30, eval_every=50)


def task_run(task_name, config=TASK_TRAINING, seed=0, device="cpu", quiet=False, eval_examples=500,
             checkpoint_path=None, model_config=None):
    """Train a new GPT on task `task_name` (a name in minilora.data.TASKS); return (model, history, dataset).
    The history's accuracy is exact match on the first eval_examples held-out examples."""
    from minilora.data import TaskDataset, get_task

    dataset = TaskDataset(get_task(task_name), seed=seed)
    model_config = model_config or GPTConfig(vocab_size=dataset.tokenizer.vocab_size,
                                             block_size=dataset.task.length - 1, **TASK_MODEL)
    random.manual_seed(seed)
    model = GPT(model_config).to(device=device)

    def evaluate(model):
        return {"val_loss": mean_loss(model, dataset.batches("val", 500)),
                "accuracy": dataset.exact_match(model, "val", limit=eval_examples)}

    history = train(model, lambda b, rng: dataset.get_batch("train", b, rng), config, evaluate=evaluate,
                    checkpoint_path=checkpoint_path, quiet=quiet, desc=task_name,
                    checkpoint_extra={"task": task_name, "chars": dataset.tokenizer.chars})
    return model, history, dataset


def text_run(config=TEXT_TRAINING, seed=0, device="cpu", quiet=False, val_batches=8, checkpoint_path=None,
             model_config=None):
    """Train a new character GPT on the pydoc corpus; return (model, history, corpus)."""
    from minilora.data import TextCorpus

    corpus = TextCorpus.from_pydoc()
    model_config = model_config or GPTConfig(vocab_size=corpus.vocab_size, **TEXT_MODEL)
    random.manual_seed(seed)
    model = GPT(model_config).to(device=device)
    # The same validation windows at every evaluation, so the numbers are comparable.
    val_rng = np.random.default_rng(seed + 1)
    val = [corpus.get_batch("val", config.batch_size, model_config.block_size, val_rng) for _ in range(val_batches)]
    history = train(model, lambda b, rng: corpus.get_batch("train", b, model_config.block_size, rng), config,
                    evaluate=lambda m: {"val_loss": mean_loss(m, val)}, checkpoint_path=checkpoint_path,
                    quiet=quiet, desc="text", checkpoint_extra={"task": "text", "chars": corpus.tokenizer.chars})
    return model, history, corpus


# ---- the command ---------------------------------------------------------------------------------
def add_arguments(parser):
    parser.add_argument("--task", choices=[*TASKS, "text"], default="add",
                        help="add / coded / sub: two-digit arithmetic scored by exact match; text: a character "
                             "model of Python's pydoc help texts (default: add)")
    parser.add_argument("--steps", type=cli.positive_int, help="training steps (default: the run's tuned value)")
    parser.add_argument("--lr", type=cli.positive_number, help="peak learning rate")
    parser.add_argument("--batch-size", type=cli.positive_int)
    parser.add_argument("--seed", type=cli.non_negative_int, default=0)
    parser.add_argument("--device", type=cli.device_name, choices=list(backend.DEVICES), default="cpu")
    parser.add_argument("--out", type=cli.output_folder, default=None,
                        help="folder for model.npz, history.json and history.png (default: minilora_runs/<task>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    defaults = TEXT_TRAINING if args.task == "text" else TASK_TRAINING
    changes = {k: v for k, v in (("steps", args.steps), ("lr", args.lr), ("batch_size", args.batch_size))
               if v is not None}
    if "steps" in changes:
        changes["warmup_steps"] = min(defaults.warmup_steps, changes["steps"])
    config = dataclasses.replace(defaults, seed=args.seed, **changes)
    out = args.out or os.path.join("minilora_runs", args.task)
    checkpoint = os.path.join(out, "model.npz")
    start = time.perf_counter()
    try:
        if args.task == "text":
            model, history, corpus = text_run(config, args.seed, args.device, args.quiet, checkpoint_path=checkpoint)
        else:
            model, history, dataset = task_run(args.task, config, args.seed, args.device, args.quiet,
                                               checkpoint_path=checkpoint)
    except TrainingDiverged as exc:
        print(f"error: {exc}")
        return 1
    seconds = time.perf_counter() - start
    save_history(history, os.path.join(out, "history.json"))
    title = f"minilora train --task {args.task}"
    if args.task == "text":
        _report_text(model, history, corpus, os.path.join(out, "history.png"), title, args.seed)
    else:
        _report_task(model, history, dataset, os.path.join(out, "history.png"), title)
    print(f"{config.steps} steps in {seconds:.0f} s; wrote {checkpoint}, history.json and history.png in {out}")
    return 0


def _report_text(model, history, corpus, plot_path, title, seed):
    from minilora.plot import plot_history

    entropy = corpus.unigram_entropy()
    plot_history(history, plot_path, title, reference=("unigram entropy", entropy))
    random.manual_seed(seed)
    prompt = corpus.tokenizer.encode("The ")[None, :]
    sample = corpus.tokenizer.decode(model.generate(prompt, 200, temperature=0.8).numpy()[0])
    print(f"validation loss {history['val_loss'][-1]:.3f} nats/char; unigram entropy of the text "
          f"{entropy:.3f} nats/char\nsample:\n{sample}")


def _report_task(model, history, dataset, plot_path, title):
    from minilora.plot import plot_history

    plot_history(history, plot_path, title)
    answers, correct = dataset.score(model, "val")
    for i in range(5):
        prompt = dataset.task.prompt(dataset.example_ids["val"][i])
        print(f"  {prompt}{answers[i]}  {'right' if correct[i] else 'wrong'}")
    print(f"held-out exact match: {correct.mean():.1%} of {len(correct)} examples")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minilora.train", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(cli.parse_arguments(parser, argv))


if __name__ == "__main__":
    raise SystemExit(main())
