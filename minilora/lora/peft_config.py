"""PEFT's adapter_config.json for LoRA: its fields, and PEFT's rules for reading them.

minilora.lora.peft writes and reads PEFT's files; this file holds what it needs to know about the
config: which fields minilora can express, and how PEFT itself decides which modules an adapter
targets and what rank and alpha each one gets (ported from peft, so that a file means here what it
means there):

    target_modules   a list: a module is targeted when its name is an entry or ends in "." + entry;
                     a string: a regular expression matched against the whole name;
                     "all-linear": every Linear except the output head
    exclude_modules  the same forms, removed first
    layers_to_transform / layers_pattern
                     with a list of targets only: the module's block index (the first number after
                     layers_pattern, or after any module when it is empty) must be in the list
    rank_pattern / alpha_pattern
                     {regex: value}: the first key k for which re.match(rf"(.*\\.)?({k})$", name)
                     holds gives the value; r / lora_alpha otherwise

Names are the module names of the PyTorch model, without PEFT's "base_model.model." prefix.
"""

import re

from minilora.lora.config import check_alpha, check_rank
from minilora.lora.targets import OUTPUT_HEADS

# Fields that describe the file and do not change what the adapter computes.
INFORMATIONAL = ("base_model_name_or_path", "revision", "task_type", "inference_mode", "auto_mapping",
                 "peft_version", "megatron_core", "qalora_group_size")
# Fields that minilora reads.
READ = ("peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules", "modules_to_save",
        "use_rslora", "use_dora", "init_lora_weights", "bias", "fan_in_fan_out", "layers_to_transform",
        "layers_pattern", "rank_pattern", "alpha_pattern")
# init_lora_weights: PEFT's value -> minilora's LoRAConfig.init. Only how a fresh A is drawn differs
# between these (the file's A and B replace it); True is kaiming_uniform(a=sqrt(5)), the same
# U(-1/sqrt(in), 1/sqrt(in)) as minilora's "kaiming"; PEFT's "gaussian" is N(0, 1/r²) where minilora's is
# N(0, 1/in). False (A kaiming, B random too: a test setting) reads as "kaiming". Every other value
# (PiSSA, OLoRA, LoftQ, CorDA, EVA, ...) is an initialisation minilora does not have; some also change
# the base weights.
INITS = {True: "kaiming", False: "kaiming", "gaussian": "gaussian"}


def minilora_init(value, source):
    if isinstance(value, bool) or value == "gaussian":
        return INITS[value]
    raise ValueError(f"{source}: init_lora_weights={value!r} cannot be expressed: minilora draws A as "
                     "'kaiming' (PEFT's True) or 'gaussian', and PiSSA/OLoRA/LoftQ-style inits also change "
                     "the base weights, which minilora keeps as they are")


def check_expressible(config, source):
    """Raise ValueError naming the first field of `config` (adapter_config.json, a dict) that asks
    for something minilora's LoRA does not do. Unknown fields are accepted only when empty."""
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(config).__name__}")
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{source}: peft_type is {config.get('peft_type')!r}; minilora reads LoRA adapters "
                         "(peft_type 'LORA')")
    for key in ("r", "lora_alpha", "target_modules"):
        if key not in config:
            raise ValueError(f"{source}: the field {key!r} is missing")
    check_rank(f"{source}: r", config["r"])  # before anything compares it with the tensors' shapes
    check_alpha(f"{source}: lora_alpha", config["lora_alpha"])
    why = {"lora_bias": "a bias on lora_B",
           "layer_replication": "layers repeated from others", "use_qalora": "QA-LoRA",
           "target_parameters": "LoRA on nn.Parameters rather than modules",
           "trainable_token_indices": "trainable token embeddings", "megatron_config": "Megatron layers",
           "ensure_weight_tying": "modules_to_save kept tied to the embeddings"}
    for key, value in config.items():
        if key in READ or key in INFORMATIONAL or value in (None, False, {}, [], ""):
            continue
        what = why.get(key, "a setting this minilora does not know")
        raise ValueError(f"{source}: {key}={value!r} cannot be expressed in minilora ({what}); "
                         "it is never ignored, so the adapter is not loaded")
    if config.get("bias", "none") not in ("none", "all", "lora_only"):
        raise ValueError(f"{source}: bias={config['bias']!r}; expected 'none', 'all' or 'lora_only'")
    minilora_init(config.get("init_lora_weights", True), source)


# ---- PEFT's matching rules ---------------------------------------------------------------------------
def is_targeted(config, name):
    """True when PEFT puts a LoRA layer on the module called `name`, as
    peft.tuners.tuners_utils.check_target_module_exists decides it."""
    exclude = config.get("exclude_modules")
    if exclude and _listed_or_matched(exclude, name):
        return False
    if any(re.match(rf"(^|.*\.){m}($|\..*)", name) for m in config.get("modules_to_save") or ()):
        return False
    targets = config["target_modules"]
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    if name in targets:
        return True
    if not any(name.endswith(f".{t}") for t in targets):
        return False
    layers = config.get("layers_to_transform")
    if layers is None or layers == []:
        return True
    index = layer_index(name, config.get("layers_pattern"))
    if index is None:
        return False
    return index == layers if isinstance(layers, int) else index in layers


def layer_index(name, layers_pattern):
    """The block number PEFT reads from `name`: the first number after layers_pattern, or after any
    module when layers_pattern is empty ("transformer.h.3.attn.c_attn" -> 3)."""
    if not layers_pattern:
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", name)
    else:
        patterns = [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern
        match = None
        for pattern in patterns:
            match = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", name)
            if match is not None:
                break
    return int(match.group("idx")) if match else None


def expand_all_linear(config, linear_names):
    """PEFT replaces target_modules="all-linear" by the last name parts of every Linear but the output head."""
    if config["target_modules"] != "all-linear":
        return config
    leaves = sorted({n.rsplit(".", 1)[-1] for n in linear_names} - set(OUTPUT_HEADS))
    return {**config, "target_modules": leaves}


def pattern_value(pattern, name, default):
    """rank_pattern / alpha_pattern lookup, as peft.utils.other.get_pattern_key does it."""
    for key in pattern or {}:
        if re.match(rf"(.*\.)?({key})$", name):
            return pattern[key]
    return default


def _listed_or_matched(spec, name):
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return name in spec or any(name.endswith(f".{e}") for e in spec)


# ---- writing --------------------------------------------------------------------------------------------
def target_list(exported, linear_names):
    """target_modules for a file holding adapters on the modules `exported`: their last name parts
    ("q_proj", "v_proj") when those select exactly these modules among `linear_names`, else the full
    names (the adapter skips some blocks, say)."""
    leaves = sorted({n.rsplit(".", 1)[-1] for n in exported})
    chosen = {n for n in linear_names if any(n == leaf or n.endswith(f".{leaf}") for leaf in leaves)}
    return leaves if chosen == set(exported) else sorted(exported)


def exact_key(name):
    """A rank_pattern / alpha_pattern key that matches the module `name` and no other."""
    return re.escape(name)
