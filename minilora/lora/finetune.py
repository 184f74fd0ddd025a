"""The fine-tuning experiment: LoRA against full fine-tuning on a task the base model cannot do.

    minilora finetune                 (also part of `minilora demo`)
    minilora finetune --task sub      the same with subtraction as the new task

1. Pretrain a small GPT on one synthetic task (two-digit addition) until it solves it.
2. Score it on a related task it has never seen: the same sums with the operands written in a
   digit code (each digit d as 9 - d, minilora.data.tasks): it fails.
3. Fine-tune two copies on the new task (batches of 64):
     full fine-tuning: every parameter trains (AdamW keeps two moments for each of them);
     LoRA: the base is frozen; only A and B in q_proj and v_proj train (r = 8), 2.05% of the model.
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

from minilora import cli, random
from minilora.backend import cuda_available
from minilora.data import TASKS, TaskDataset, get_task
from minilora.kernels import BACKENDS, default_backend, use_backend
from minilora.kernels.dispatch import DEVICE_OF_BACKEND
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
    finetune_task: str = "coded"
    model: dict = dataclasses.field(default_factory=lambda: dict(TASK_MODEL))
    pretrain: TrainConfig = dataclasses.field(default_factory=lambda: TASK_TRAINING)
    # LoRA takes a higher learning rate and more steps than full fine-tuning: its update B·A starts
    # at zero and must grow through a product, while full fine-tuning moves every weight at once.
    # Measured on the coded task: lr 3e-3 -> 82%, 1e-2 -> 71% after 1000 steps; 5e-3 -> 93% after
    # 1500; full fine-tuning is at 100% by step 800.
    full: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        steps=1000, batch_size=64, lr=1e-3, warmup_steps=100, eval_every=100))
    lora_training: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        steps=2000, batch_size=64, lr=5e-3, warmup_steps=100, eval_every=100))
    # q_proj and v_proj as in the LoRA paper; every other weight stays as pretrained.
    lora: LoRAConfig = dataclasses.field(default_factory=lambda: LoRAConfig(
        r=8, alpha=16, target_modules=("q_proj", "v_proj")))
    eval_examples: int = 500
    seed: int = 0


# A few steps of everything, for the smoke test: checks the plumbing, not the accuracy.
QUICK = ExperimentConfig(model=dict(n_layer=1, n_head=2, n_embd=32),
                         pretrain=TrainConfig(steps=20, batch_size=32, warmup_steps=5, eval_every=20),
                         full=TrainConfig(steps=10, batch_size=32, lr=1e-3, warmup_steps=2, eval_every=10),
                         lora_training=TrainConfig(steps=10, batch_size=32, lr=1e-2, warmup_steps=2, eval_every=10),
                         lora=LoRAConfig(r=4, alpha=8), eval_examples=50)


def pretrain_base(config, device="cpu", quiet=False):
    """Steps 1-2's model: a new GPT trained on config.pretrain_task. Returns (model, history)."""
    old_task = TaskDataset(get_task(config.pretrain_task), seed=config.seed)
    random.manual_seed(config.seed)
    base = GPT(GPTConfig(vocab_size=old_task.tokenizer.vocab_size, block_size=old_task.task.length - 1,
                         **config.model)).to(device=device)
    history = train(base, lambda b, rng: old_task.get_batch("train", b, rng), config.pretrain, quiet=quiet,
                    desc="pretrain")
    return base, history


# The backend of the fused LoRA op (minilora.kernels) that the LoRA model trains with, per device:
# None, the dispatch default, on both. On a CPU that sends this model's small layers (576 rows of
# 128 features) to the NumPy reference by the measured size rule (kernels/dispatch.py) and runs the
# products, layer norms, softmax and GELU around them compiled (kernels/compiled.py); naming
# "numpy" here would run the whole model as NumPy code instead, which on 2 threads was several
# times slower (OpenBLAS's threads and OpenMP's taking the cores from each other).
TRAINING_BACKEND = {"cpu": None, "cuda": None}


def run_experiment(config=None, device="cpu", quiet=False, base=None, folder=None, backend=None):
    """Run the experiment (default: ExperimentConfig()); return a dict of results, which
    format_report prints. base: a model already pretrained by pretrain_base(config) (minilora demo
    keeps one on disk), so that step is skipped; it is not changed. folder: where to write the
    adapter and the full checkpoint that are compared (default: a temporary folder). backend: the
    fused LoRA op's backend for the LoRA model (default: TRAINING_BACKEND[device]).

    The dict also holds the three models under "models" ("base", "full", "lora") and the
    fine-tuning histories under "history" ("full", "lora"; train()'s dicts of lists).
    """
    config = ExperimentConfig() if config is None else config
    start = time.perf_counter()
    old_task = TaskDataset(get_task(config.pretrain_task), seed=config.seed)
    new_task = TaskDataset(get_task(config.finetune_task), seed=config.seed)

    def accuracy(model, dataset):
        return dataset.exact_match(model, "val", limit=config.eval_examples)

    def fine_tune(model, train_config, desc):
        began = time.perf_counter()
        history = train(model, lambda b, rng: new_task.get_batch("train", b, rng), train_config, quiet=quiet,
                        desc=desc)
        return history, time.perf_counter() - began

    # 1-2: a base model that knows the first task and fails the second
    began, pretrained_here = time.perf_counter(), base is None
    if pretrained_here:
        base, _ = pretrain_base(config, device, quiet)
    results = {"pretrain_seconds": time.perf_counter() - began if pretrained_here else None,
               "base": {"old": accuracy(base, old_task), "new": accuracy(base, new_task)},
               "total_params": base.num_parameters(), "config": config, "history": {}, "device": device}

    # 3a: full fine-tuning
    full = copy.deepcopy(base)
    results["history"]["full"], seconds = fine_tune(full, config.full, "full fine-tuning")
    trainable = full.num_parameters(trainable_only=True)
    results["full"] = {"new": accuracy(full, new_task), "old": accuracy(full, old_task), "seconds": seconds,
                       "trainable": trainable, "adamw_bytes": adamw_state_bytes(trainable)}

    # 3b: LoRA
    backend = backend or TRAINING_BACKEND[device]
    lora = apply_lora(copy.deepcopy(base), config.lora)
    with use_backend(backend):
        results["history"]["lora"], seconds = fine_tune(lora, config.lora_training, "LoRA")
        new_accuracy = accuracy(lora, new_task)
    trainable = lora.num_parameters(trainable_only=True)
    results["lora"] = {"new": new_accuracy, "seconds": seconds, "trainable": trainable, "backend": backend,
                       "adamw_bytes": adamw_state_bytes(trainable)}
    with disable_adapters(lora):
        results["lora"]["old"] = accuracy(lora, old_task)
    merge_adapters(lora)
    results["lora"]["merged_new"] = accuracy(lora, new_task)
    unmerge_adapters(lora)
    if folder is None:
        with tempfile.TemporaryDirectory() as temporary:
            results["files"] = adapter_and_checkpoint_sizes(lora, temporary)
    else:
        results["files"] = adapter_and_checkpoint_sizes(lora, folder)
    results["models"] = {"base": base, "full": full, "lora": lora}
    results["total_seconds"] = time.perf_counter() - start
    return results


def format_report(results):
    """The results as a table, with the numbers a reader checks first."""
    config, total = results["config"], results["total_params"]
    old, new = config.pretrain_task, config.finetune_task
    base, full, lora = results["base"], results["full"], results["lora"]
    seconds = results["pretrain_seconds"]
    how = "before this experiment" if seconds is None else f"{seconds:.0f} s"
    lines = [f"pretrained on '{old}' ({how}): held-out exact match "
             f"{base['old']:.1%} on '{old}', {base['new']:.1%} on '{new}'",
             "",
             f"{'':<18}{'trainable':>12}{'% of model':>12}{'AdamW state':>13}{new + ' acc':>10}"
             f"{old + ' acc':>10}{'time':>8}",
             f"{'before':<18}{'':>12}{'':>12}{'':>13}{base['new']:>10.1%}{base['old']:>10.1%}{'':>8}"]
    for name, row in (("full fine-tuning", full), ("LoRA", lora)):
        lines.append(f"{name:<18}{row['trainable']:>12,}{100 * row['trainable'] / total:>11.2f}%"
                     f"{format_bytes(row['adamw_bytes']):>13}{row['new']:>10.1%}{row['old']:>10.1%}"
                     f"{row['seconds']:>7.0f}s")
    r, targets = config.lora.r, ", ".join(config.lora.target_modules)
    backend = lora["backend"] or default_backend(results["device"])
    lines += ["",
              f"LoRA: r={r}, alpha={config.lora.alpha:g} on {targets}; lr {config.lora_training.lr:g}, "
              f"{config.lora_training.steps} steps. Full fine-tuning: lr {config.full.lr:g}, {config.full.steps} steps",
              f"the LoRA layers ran on the '{backend}' backend of the fused op (minilora info lists them)",
              f"LoRA's '{old}' accuracy is the model's with the adapter switched off (the base is untouched)",
              f"LoRA merged into W: {lora['merged_new']:.1%} on '{new}' (unmerged: {lora['new']:.1%})",
              f"adapter file {format_bytes(results['files']['adapter_bytes'])} against a full checkpoint of "
              f"{format_bytes(results['files']['checkpoint_bytes'])}",
              f"LoRA minus full fine-tuning on '{new}': {100 * (lora['new'] - full['new']):+.1f} points",
              f"whole experiment: {results['total_seconds']:.0f} s"]
    return "\n".join(lines)


def format_bytes(n):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true", help="a few steps only (checks that everything runs)")
    add_experiment_arguments(parser)
    parser.add_argument("--device", type=cli.device_name, choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def check_arguments(args):
    """The usage problem of --backend and --device together, or None: a GPU backend needs
    --device cuda, a CPU backend --device cpu (for `minilora finetune` and `minilora demo`)."""
    if args.backend is None:
        return None
    device = args.device
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    needed = DEVICE_OF_BACKEND[args.backend]
    if needed != device:
        where = "on the GPU" if needed == "cuda" else "on the CPU"
        return f"--backend {args.backend} runs {where}, so it needs --device {needed} (the device is {device})"
    return None


def add_experiment_arguments(parser):
    """The options `minilora finetune` and `minilora demo` share: --task, --backend, --seed."""
    parser.add_argument("--task", choices=sorted(set(TASKS) - {ExperimentConfig.pretrain_task}),
                        default=ExperimentConfig.finetune_task,
                        help=f"the new task (default: {ExperimentConfig.finetune_task}; sub asks for a new skill, "
                             "which LoRA on q and v learns only in part)")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="the fused LoRA op's backend for training the LoRA model (default: chosen by "
                             "size on a CPU, see minilora/kernels/dispatch.py; the fused kernels on a GPU; "
                             "numpy runs the whole model as NumPy code)")
    parser.add_argument("--seed", type=cli.non_negative_int, default=0,
                        help="seed of the model, the data split and the batches")


def run(args):
    """What the command does (also the hook for the `minilora` command line)."""
    config = dataclasses.replace(QUICK if args.quick else ExperimentConfig(), seed=args.seed,
                                 finetune_task=args.task)
    print(format_report(run_experiment(config, args.device, args.quiet, backend=args.backend)))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minilora.lora.finetune", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(cli.parse_arguments(parser, argv, check_arguments))


if __name__ == "__main__":
    raise SystemExit(main())
