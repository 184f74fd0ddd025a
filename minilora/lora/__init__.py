"""minilora.lora: Low-Rank Adaptation of a frozen model.

    config.py          LoRAConfig: rank, alpha, targets, init, bias, per-layer ranks
    targets.py         which Linear layers a config selects (shared by apply_lora and counting)
    layer.py           LoRALinear: y = x·Wᵀ + b + scaling·(x·Aᵀ)·Bᵀ through F.lora_linear; merge/unmerge
    modules_to_save.py ModulesToSave: modules trained in full, one copy per adapter
    inject.py          apply_lora: swap layers in place, freeze the rest
    adapters.py        add / set / disable / delete adapters; combine them (exact or SVD-truncated)
    merge.py           merge_adapters, unmerge_adapters, merge_and_unload
    files.py           save_adapter / load_adapter (only the adapter, checked against the base model)
    peft.py            save_peft_adapter / load_peft_adapter: PEFT's adapter files (peft_config.py: its rules)
    count.py           parameter counts from a GPTConfig alone; optimizer memory; the paper's tables
    summary.py         trainable_summary: d·k versus r·(d+k), layer by layer
    dora.py            DoRA: a trainable magnitude per output row (LoRAConfig(use_dora=True))
    pissa.py           PiSSA: A and B from W's top-r singular vectors (LoRAConfig(init="pissa"))
    lora_plus.py       LoRA+: optimizer groups with B's learning rate λ times A's
    variants.py        what PiSSA, an NF4 base (QLoRA) and DoRA do to a layer in apply_lora
    finetune.py        the experiment: pretrain, fail, LoRA fine-tune, compare with full fine-tuning
"""

from minilora.lora.adapters import add_adapter, combine_adapters, delete_adapter, disable_adapters, set_adapter
from minilora.lora.config import LoRAConfig
from minilora.lora.count import (adamw_state_bytes, count_lora_from_shapes, count_lora_parameters,
                                 count_model_parameters, count_trainable_parameters, finetune_memory,
                                 paper_table)
from minilora.lora.files import adapter_and_checkpoint_sizes, load_adapter, save_adapter
from minilora.lora.inject import apply_lora
from minilora.lora.layer import LoRAAdapter, LoRALinear
from minilora.lora.lora_plus import lora_plus_param_groups
from minilora.lora.merge import merge_adapters, merge_and_unload, unmerge_adapters
from minilora.lora.modules_to_save import ModulesToSave
from minilora.lora.peft import load_peft_adapter, save_peft_adapter
from minilora.lora.summary import trainable_summary

__all__ = ["LoRAAdapter", "LoRAConfig", "LoRALinear", "ModulesToSave", "adamw_state_bytes", "add_adapter",
           "adapter_and_checkpoint_sizes", "apply_lora", "combine_adapters", "count_lora_from_shapes", "count_lora_parameters",
           "count_model_parameters", "count_trainable_parameters", "delete_adapter", "disable_adapters",
           "finetune_memory", "load_adapter", "load_peft_adapter", "lora_plus_param_groups", "merge_adapters",
           "merge_and_unload", "paper_table", "save_adapter", "save_peft_adapter", "set_adapter", "trainable_summary",
           "unmerge_adapters"]
