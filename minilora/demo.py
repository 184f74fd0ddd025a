"""`minilora demo`: LoRA from start to finish on embedded data, in a few minutes on a laptop CPU.

    minilora demo                  everything below; plots and files in minilora_runs/demo
    minilora demo --quick          a few steps of each stage (checks that it all runs), in
                                   minilora_runs/demo_quick so the real base model stays

1. A base model: a small GPT pretrained on the pretraining task (minilora.lora.finetune). It is
   trained on the first run and kept in the output folder; later runs load it (a changed setting
   or a damaged file trains it again).
2. The base model on the fine-tuning task: a few of its answers (its accuracy is in step 3's table).
3. Fine-tuning, with progress bars: LoRA (q_proj and v_proj, the base frozen) and, next to it, full
   fine-tuning of a copy, for the same number of steps; the table of accuracies before and after,
   trainable parameters and AdamW memory.
4. Merging: B·A is added into W; the merged model's logits are compared with the unmerged ones.
5. Files: the adapter alone next to a full checkpoint of the fine-tuned model, with their sizes.
6. Plots: loss curves of both fine-tunings, and parameters / memory / file sizes side by side.

Every number printed is computed by this run. With a usable GPU (minilora info) it runs there.
"""

import copy
import dataclasses
import hashlib
import json
import os
import time

import numpy as np
from matplotlib.figure import Figure

import minilora
from minilora import cli, io
from minilora.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from minilora.data import TaskDataset, get_task
from minilora.lora.finetune import (QUICK, ExperimentConfig, add_experiment_arguments, format_bytes, format_report,
                                   pretrain_base, run_experiment)
from minilora.lora.finetune import check_arguments  # noqa: F401 (the demo shares finetune's options; minilora.cli calls it)
from minilora.lora.merge import merge_adapters, merge_and_unload, unmerge_adapters
from minilora.plot import save_png
from minilora.train import evaluating

DEFAULT_OUT = os.path.join("minilora_runs", "demo")
SHOWN_EXAMPLES = 6


def add_arguments(parser):
    parser.add_argument("--out", type=cli.output_folder, help=f"folder for the base model, the adapter, the checkpoint and the plots "
                        f"(default: {DEFAULT_OUT}, with --quick {DEFAULT_OUT}_quick)")
    parser.add_argument("--device", type=cli.device_name, choices=["auto", "cpu", "cuda"], default="auto",
                        help="where to train (default: the GPU when one is usable, else the CPU)")
    parser.add_argument("--quick", action="store_true",
                        help="a few steps of every stage: checks that everything runs (accuracies mean nothing)")
    parser.add_argument("--retrain-base", action="store_true",
                        help="pretrain the base model again even if the output folder has one")
    add_experiment_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args):
    """What `minilora demo` does; see the module docstring."""
    start = time.perf_counter()
    config = dataclasses.replace(QUICK if args.quick else ExperimentConfig(), seed=args.seed,
                                 finetune_task=args.task)
    out = args.out or (DEFAULT_OUT + "_quick" if args.quick else DEFAULT_OUT)
    device = ("cuda" if minilora.cuda_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not minilora.cuda_available():
        raise SystemExit("minilora demo: --device cuda, but no GPU is usable here (see `minilora info`)")
    print(f"minilora demo on {device}: pretrain on '{config.pretrain_task}', fine-tune on "
          f"'{config.finetune_task}'; files go to {out}\n")

    _section(1, "the base model")
    base = load_or_pretrain_base(config, out, device, args.retrain_base, args.quiet)

    _section(2, f"the base model on '{config.finetune_task}', a task it was never trained on")
    new_task = TaskDataset(get_task(config.finetune_task), seed=config.seed)
    print(_examples(base, new_task))

    _section(3, "LoRA and full fine-tuning, each on its own copy of the base model")
    results = run_experiment(config, device, args.quiet, base=base, folder=out, backend=args.backend)
    print(format_report(results))
    print("\nthe LoRA model after fine-tuning:")
    print(_examples(results["models"]["lora"], new_task))

    _section(4, "merging B·A into W")
    print(merge_report(results["models"]["lora"], new_task, config.eval_examples))

    _section(5, "the files")
    files = results["files"]
    print(f"adapter (LoRA weights and config only): {files['adapter_path']}, {format_bytes(files['adapter_bytes'])}\n"
          f"full checkpoint of the same fine-tuned model: {files['checkpoint_path']}, "
          f"{format_bytes(files['checkpoint_bytes'])}\n"
          f"the adapter is {files['checkpoint_bytes'] / files['adapter_bytes']:.0f}x smaller: one base model "
          f"serves many tasks, each a small file")

    _section(6, "plots")
    for path in (plot_losses(results, os.path.join(out, "loss_curves.png")),
                 plot_sizes(results, os.path.join(out, "parameters.png"))):
        print(f"wrote {path}")
    print(f"\ndemo done in {time.perf_counter() - start:.0f} s")
    return 0


# ---- 1: the base model, kept between runs -----------------------------------------------------------
def load_or_pretrain_base(config, folder, device="cpu", retrain=False, quiet=False):
    """The base model of `config`: loaded from <folder>/base_model.npz when that file was trained with
    the same settings, else pretrained (pretrain_base) and saved there."""
    path = os.path.join(folder, "base_model.npz")
    key = base_key(config)
    if not retrain and os.path.exists(path):
        try:
            settings = read_checkpoint(path).extra.get("settings")
        except io.ArrayFileError as error:
            print(f"{path} cannot be used ({error}); pretraining again")
        else:
            if settings == key:
                print(f"loaded the base model from {path} (pretrained on '{config.pretrain_task}' by an "
                      f"earlier run; --retrain-base trains it again)")
                return load_checkpoint(path, device=device)
            print(f"{path} was pretrained with other settings; pretraining again")
    began = time.perf_counter()
    model, history = pretrain_base(config, device, quiet)
    save_checkpoint(model, path, extra={"settings": key, "history": history})
    print(f"pretrained the base model in {time.perf_counter() - began:.0f} s and saved it to {path}")
    return model


def base_key(config):
    """A fingerprint of everything that decides the pretrained weights."""
    settings = {"task": config.pretrain_task, "model": config.model, "seed": config.seed,
                "training": dataclasses.asdict(config.pretrain)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


# ---- 2-4: what the models answer, and merging ------------------------------------------------------
def _section(number, title):
    print(f"\n== {number}. {title} " + "=" * max(0, 70 - len(title)))


def _examples(model, dataset, count=SHOWN_EXAMPLES):
    """A few held-out prompts, each with the generated and the expected answer."""
    answers, correct = dataset.score(model, "val", limit=count)
    task, lines = dataset.task, []
    for i, answer, ok in zip(dataset.example_ids["val"], answers, correct):
        prompt, expected = task.prompt(i), task.answer(*task.operands(i))
        lines.append(f"  {prompt}{answer:<8} expected {prompt}{expected:<8} {'right' if ok else 'wrong'}")
    return "\n".join(lines)


def merge_report(model, dataset, count, tolerance=1e-5):
    """Compare `model`'s logits (B, T, V) on `count` held-out examples before and after merging its
    adapters into W, and its greedy answers; then unmerge. Returns the lines to print."""
    idx = minilora.tensor(dataset.inputs["val"][:count], device=model.parameters()[0].device)
    with evaluating(model):
        unmerged = model(idx)[0].numpy().astype(np.float64)
        answers_unmerged = dataset.score(model, "val", limit=count)[0]
        merge_adapters(model)
        try:
            merged = model(idx)[0].numpy().astype(np.float64)
            answers_merged = dataset.score(model, "val", limit=count)[0]
        finally:
            unmerge_adapters(model)
    plain = merge_and_unload(copy.deepcopy(model))
    relative = float(np.linalg.norm(merged - unmerged) / np.linalg.norm(unmerged))
    same = sum(a == b for a, b in zip(answers_merged, answers_unmerged))
    verdict = (f"agree: float32 rounding, through every layer, within the {tolerance:g} this check allows"
               if relative <= tolerance else f"DO NOT agree: more than the {tolerance:g} that float32 rounding explains")
    return "\n".join([
        f"logits on {count} held-out examples, merged against unmerged: max |difference| "
        f"{np.abs(merged - unmerged).max():.2e}, relative error {relative:.2e} (the outputs {verdict})",
        f"greedy answers identical on {same} of {count} examples",
        f"merge_and_unload gives a plain GPT of {plain.num_parameters():,} parameters, as many as the base "
        f"model: the adapter costs nothing at inference"])


# ---- 6: plots -----------------------------------------------------------------------------------------
def plot_losses(results, path):
    """Training loss of full fine-tuning and of LoRA against the step (log scale) -> PNG at path."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for name, label in (("full", "full fine-tuning"), ("lora", "LoRA")):
        history = results["history"][name]
        trainable = results[name]["trainable"]
        ax.plot(history["step"], history["train_loss"], marker="o", markersize=3,
                label=f"{label} ({trainable:,} trainable)")
    config = results["config"]
    ax.set(xlabel="step", ylabel="training loss (nats per answer character)", yscale="log",
           title=f"fine-tuning on '{config.finetune_task}' from a model pretrained on '{config.pretrain_task}'")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)


def plot_sizes(results, path):
    """Trainable parameters, AdamW state and file size, full fine-tuning against LoRA -> PNG at path."""
    full, lora, files = results["full"], results["lora"], results["files"]
    panels = (("trainable parameters", full["trainable"], lora["trainable"]),
              ("AdamW state (bytes)", full["adamw_bytes"], lora["adamw_bytes"]),
              ("file on disk (bytes)", files["checkpoint_bytes"], files["adapter_bytes"]))
    fig = Figure(figsize=(11, 3.6))
    for ax, (title, full_value, lora_value) in zip(fig.subplots(1, 3), panels):
        bars = ax.bar(["full fine-tuning", "LoRA"], [full_value, lora_value], color=["tab:gray", "tab:orange"])
        ax.bar_label(bars, labels=[f"{full_value:,}", f"{lora_value:,}\n({lora_value / full_value:.1%})"])
        ax.set(yscale="log", title=title)
        ax.margins(y=0.3)
    fig.tight_layout()
    return save_png(fig, path)
