"""One base model, several ways to fine-tune it with LoRA, the same budget, a few seeds.

The comparison that tutorials 09 (a 4-bit base against the float32 base) and 10 (LoRA, DoRA,
LoRA-FA, LoRA+, PiSSA) print. Every run starts from a copy of the same pretrained model, trains on
the new task for the same steps with the same schedule, and is scored on held-out examples:

    runs = compare(base, [Variant("LoRA", LoRAConfig(r=8)), Variant("DoRA", LoRAConfig(r=8, use_dora=True))],
                   config, seeds=(0, 1, 2))
    print(format_table(runs))

A seed decides the adapter's random start (A) and the order of the batches; the base model and
the data split stay fixed, so the spread over seeds is the spread of the fine-tuning alone.

Data path: minilora.lora (apply_lora with the variant's config; LoRA+ groups) -> minilora.train
(the loop) -> minilora.data (batches, exact match). It sits above them, as minilora.demo does.
"""

import copy
import dataclasses
import time

import numpy as np

from minilora import random
from minilora.data import TaskDataset, get_task
from minilora.kernels import use_backend
from minilora.lora import LoRAConfig, apply_lora, disable_adapters, lora_plus_param_groups
from minilora.lora.inject import lora_layers
from minilora.optim import AdamW
from minilora.quant import NF4Linear
from minilora.train import train


@dataclasses.dataclass
class Variant:
    """A named way to fine-tune: a LoRAConfig, and for LoRA+ the ratio λ = lr_B / lr_A."""

    name: str
    lora: LoRAConfig
    lora_plus_ratio: float = None


def finetune_variant(base, variant, config, seed, backend="numpy", quiet=True):
    """Fine-tune a copy of `base` as `variant` says, with config.lora_training (an
    ExperimentConfig's), batches and A drawn from `seed`. Returns a dict: name, seed, new (held-out
    exact match on the new task), old (the first task with the adapter switched off: the base
    the adapter sits on), trainable, base_weight_bytes (the adapted layers' W), seconds."""
    new_task = TaskDataset(get_task(config.finetune_task), seed=config.seed)
    old_task = TaskDataset(get_task(config.pretrain_task), seed=config.seed)
    training = dataclasses.replace(config.lora_training, seed=seed)
    random.manual_seed(seed)
    model = apply_lora(copy.deepcopy(base), variant.lora)
    optimizer = None
    if variant.lora_plus_ratio is not None:
        groups = lora_plus_param_groups(model, training.lr, variant.lora_plus_ratio, training.weight_decay)
        optimizer = AdamW(groups, lr=training.lr)
    began = time.perf_counter()
    with use_backend(backend):
        train(model, lambda b, rng: new_task.get_batch("train", b, rng), training, optimizer=optimizer,
              quiet=quiet, desc=f"{variant.name}, seed {seed}")
        seconds = time.perf_counter() - began
        new = new_task.exact_match(model, "val", limit=config.eval_examples)
        with disable_adapters(model):
            old = old_task.exact_match(model, "val", limit=config.eval_examples)
    return {"name": variant.name, "seed": seed, "new": new, "old": old, "seconds": seconds,
            "trainable": model.num_parameters(trainable_only=True),
            "base_weight_bytes": base_weight_bytes(model)}


def base_weight_bytes(model):
    """Bytes that the frozen W of the model's LoRA layers take (NF4 storage, or the float array)."""
    total = 0
    for _, layer in lora_layers(model):
        base = layer.base
        total += base.weight_nf4.nbytes if isinstance(base, NF4Linear) else base.weight.data.nbytes
    return total


def with_steps(config, steps):
    """`config` (an ExperimentConfig) with its LoRA training cut to `steps` (warmup at most a tenth):
    one smaller budget for every variant."""
    training = config.lora_training
    return dataclasses.replace(config, lora_training=dataclasses.replace(
        training, steps=steps, warmup_steps=min(training.warmup_steps, steps // 10)))


def compare(base, variants, config, seeds, backend="numpy", quiet=True):
    """finetune_variant for every variant and seed: a list of their dicts."""
    return [finetune_variant(base, variant, config, seed, backend, quiet) for variant in variants
            for seed in seeds]


def summarize(runs):
    """{variant name: {"new": (mean, std), "old": (mean, std), "trainable", "base_weight_bytes",
    "seconds" (mean), "seeds"}} in the order the variants first appear (std over seeds, ddof=0)."""
    table = {}
    for run in runs:
        table.setdefault(run["name"], []).append(run)
    summary = {}
    for name, rows in table.items():
        stats = {key: (float(np.mean([r[key] for r in rows])), float(np.std([r[key] for r in rows])))
                 for key in ("new", "old")}
        summary[name] = dict(stats, trainable=rows[0]["trainable"], base_weight_bytes=rows[0]["base_weight_bytes"],
                             seconds=float(np.mean([r["seconds"] for r in rows])), seeds=[r["seed"] for r in rows])
    return summary


def format_table(runs, new_label="new task", old_label="old task, adapter off"):
    """The summary as a plain-text table: mean ± spread (std over seeds) and each seed's result."""
    lines = [f"{'variant':<12}{'trainable':>11}{'W bytes':>10}{new_label:>20}{old_label:>26}{'s/run':>7}  per seed"]
    for name, row in summarize(runs).items():
        per_seed = " ".join(f"{r['new']:.1%}" for r in runs if r["name"] == name)
        lines.append(f"{name:<12}{row['trainable']:>11,}{row['base_weight_bytes']:>10,}"
                     f"{row['new'][0]:>13.1%} ± {row['new'][1]:>4.1%}{row['old'][0]:>19.1%} ± {row['old'][1]:>4.1%}"
                     f"{row['seconds']:>7.0f}  {per_seed}")
    return "\n".join(lines)
