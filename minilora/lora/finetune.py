"""The fine-tuning experiment: LoRA against full fine-tuning on a task the base model cannot do.

    python -m minilora.lora.finetune            (also part of `minilora demo`)

1. Pretrain a small GPT on one synthetic task (two-digit addition) until it solves it.
2. Score it on a related task it has never seen (subtraction): it fails.
3. Fine-tune two copies on the new task for the same number of steps:
     full fine-tuning: every parameter trains (AdamW keeps two moments for each of them);
     LoRA: the base is frozen; A and B in q_proj and v_proj train (r = 8), and the token
           embeddings and output head train in full (modules_to_save), 2.5% of the model.
4. Report held-out exact match before and after, trainable parameters, AdamW memory, time, the
   adapter file next to a full checkpoint, and what each copy still knows of the first task: with
   the adapter switched off, the LoRA model *is* the pretrained model again.

Data path: minilora.data (tasks and batches) -> minilora.train.train (the loop, which optimises
exactly the parameters that require grad) -> minilora.lora (apply_lora, disable_adapters, merge).
"""

import argparse
import copy
import dataclasses
import tempfile
import time

from minilora import random
from minilora.data import TaskDataset, get_task
from minilora.lora.adapters import disable_adapters
from minilora.lora.config import LoRAConfig
from minilora.lora.count import adamw_state_bytes
from minilora.lora.files import adapter_and_checkpoint_sizes
from minilora.lora.inject import apply_lora
from minilora.lora.merge import merge_adapters, unmerge_adapters
from minilora.nn import GPT, GPTConfig
from minilora.train import TASK_MODEL, TASK_TRAINING, TrainConfig, train


@dataclasses.dataclass
class ExperimentConfig:
    """Everything the experiment does; the defaults are the measured run (see run_experiment)."""

    pretrain_task: str = "add"
    finetune_task: str = "sub"
    model: dict = dataclasses.field(default_factory=lambda: dict(TASK_MODEL))
    pretrain: TrainConfig = dataclasses.field(default_factory=lambda: TASK_TRAINING)
    # The same number of steps for both. LoRA takes a higher learning rate (3x here: measured
    # best of 1e-3, 3e-3, 1e-2, 3e-2); much higher makes the product B·A overshoot.
    full: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        steps=1000, batch_size=64, lr=1e-3, warmup_steps=100, eval_every=1000))
    lora_training: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        steps=1000, batch_size=64, lr=3e-3, warmup_steps=100, eval_every=1000))
    # q_proj and v_proj as in the paper, plus the two embedding tables trained in full: "-" never
    # occurs in the pretraining task, so its embedding (and its row of the output head) is untrained,
    # the case where one trains new tokens' embeddings next to LoRA. 14 x 128 numbers each.
    lora: LoRAConfig = dataclasses.field(default_factory=lambda: LoRAConfig(
        r=8, alpha=16, target_modules=("q_proj", "v_proj"), modules_to_save=("wte", "lm_head")))
    eval_examples: int = 500
    seed: int = 0


# A few steps of everything, for the smoke test: checks the plumbing, not the accuracy.
QUICK = ExperimentConfig(model=dict(n_layer=1, n_head=2, n_embd=32),
                         pretrain=TrainConfig(steps=20, batch_size=32, warmup_steps=5, eval_every=20),
                         full=TrainConfig(steps=10, batch_size=32, lr=1e-3, warmup_steps=2, eval_every=10),
                         lora_training=TrainConfig(steps=10, batch_size=32, lr=1e-2, warmup_steps=2, eval_every=10),
                         lora=LoRAConfig(r=4, alpha=8), eval_examples=50)


def run_experiment(config=None, device="cpu", quiet=False):
    """Run the experiment (default: ExperimentConfig()); return a dict of results, which
    format_report prints."""
    config = ExperimentConfig() if config is None else config
    start = time.perf_counter()
    old_task = TaskDataset(get_task(config.pretrain_task), seed=config.seed)
    new_task = TaskDataset(get_task(config.finetune_task), seed=config.seed)

    def accuracy(model, dataset):
        return dataset.exact_match(model, "val", limit=config.eval_examples)

    def fine_tune(model, train_config, desc):
        began = time.perf_counter()
        train(model, lambda b, rng: new_task.get_batch("train", b, rng), train_config, quiet=quiet, desc=desc)
        return time.perf_counter() - began

    # 1-2: a base model that knows the first task and fails the second
    random.manual_seed(config.seed)
    base = GPT(GPTConfig(vocab_size=old_task.tokenizer.vocab_size, block_size=old_task.task.length - 1,
                         **config.model)).to(device=device)
    began = time.perf_counter()
    train(base, lambda b, rng: old_task.get_batch("train", b, rng), config.pretrain, quiet=quiet, desc="pretrain")
    results = {"pretrain_seconds": time.perf_counter() - began,
               "base": {"old": accuracy(base, old_task), "new": accuracy(base, new_task)},
               "total_params": base.num_parameters(), "config": config}

    # 3a: full fine-tuning
    full = copy.deepcopy(base)
    seconds = fine_tune(full, config.full, "full fine-tuning")
    trainable = full.num_parameters(trainable_only=True)
    results["full"] = {"new": accuracy(full, new_task), "old": accuracy(full, old_task), "seconds": seconds,
                       "trainable": trainable, "adamw_bytes": adamw_state_bytes(trainable)}

    # 3b: LoRA
    lora = apply_lora(copy.deepcopy(base), config.lora)
    seconds = fine_tune(lora, config.lora_training, "LoRA")
    trainable = lora.num_parameters(trainable_only=True)
    results["lora"] = {"new": accuracy(lora, new_task), "seconds": seconds, "trainable": trainable,
                       "adamw_bytes": adamw_state_bytes(trainable)}
    with disable_adapters(lora):
        results["lora"]["old"] = accuracy(lora, old_task)
    merge_adapters(lora)
    results["lora"]["merged_new"] = accuracy(lora, new_task)
    unmerge_adapters(lora)
    with tempfile.TemporaryDirectory() as folder:
        sizes = adapter_and_checkpoint_sizes(lora, folder)
    results["adapter_bytes"], results["checkpoint_bytes"] = sizes["adapter_bytes"], sizes["checkpoint_bytes"]
    results["total_seconds"] = time.perf_counter() - start
    return results


def format_report(results):
    """The results as a table, with the numbers a reader checks first."""
    config, total = results["config"], results["total_params"]
    old, new = config.pretrain_task, config.finetune_task
    base, full, lora = results["base"], results["full"], results["lora"]
    lines = [f"pretrained on '{old}' ({results['pretrain_seconds']:.0f} s): held-out exact match "
             f"{base['old']:.1%} on '{old}', {base['new']:.1%} on '{new}'",
             "",
             f"{'':<18}{'trainable':>12}{'% of model':>12}{'AdamW state':>13}{new + ' acc':>10}"
             f"{old + ' acc':>10}{'time':>8}",
             f"{'before':<18}{'':>12}{'':>12}{'':>13}{base['new']:>10.1%}{base['old']:>10.1%}{'':>8}"]
    for name, row in (("full fine-tuning", full), ("LoRA", lora)):
        lines.append(f"{name:<18}{row['trainable']:>12,}{100 * row['trainable'] / total:>11.2f}%"
                     f"{_bytes(row['adamw_bytes']):>13}{row['new']:>10.1%}{row['old']:>10.1%}"
                     f"{row['seconds']:>7.0f}s")
    r, targets = config.lora.r, ", ".join(config.lora.target_modules)
    lines += ["",
              f"LoRA: r={r}, alpha={config.lora.alpha:g} on {targets}; lr {config.lora_training.lr:g} "
              f"(full fine-tuning: lr {config.full.lr:g}), {config.lora_training.steps} steps each",
              f"LoRA's '{old}' accuracy is the model's with the adapter switched off (the base is untouched)",
              f"LoRA merged into W: {lora['merged_new']:.1%} on '{new}' (unmerged: {lora['new']:.1%})",
              f"adapter file {_bytes(results['adapter_bytes'])} against a full checkpoint of "
              f"{_bytes(results['checkpoint_bytes'])}",
              f"LoRA minus full fine-tuning on '{new}': {100 * (lora['new'] - full['new']):+.1f} points",
              f"whole experiment: {results['total_seconds']:.0f} s"]
    return "\n".join(lines)


def _bytes(n):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true", help="a few steps only (checks that everything runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args):
    """What the command does (also the hook for the `minilora` command line)."""
    config = dataclasses.replace(QUICK if args.quick else ExperimentConfig(), seed=args.seed)
    print(format_report(run_experiment(config, args.device, args.quiet)))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minilora.lora.finetune", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
