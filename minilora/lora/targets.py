"""Which Linear layers a LoRAConfig adapts, checked against the layers the model really has.

apply_lora (on a live model) and count_lora_parameters (on a GPTConfig, with no weights at all)
both describe a model the same way, as {name: (in_features, out_features)} for every Linear, and
call `select_targets`, so a config adapts the same layers whether it is counted or applied.
"""

import re

from minilora.lora.config import ALL_LINEAR, matches_name

# "all-linear" leaves out the output head: it maps to the vocabulary, not between hidden states.
OUTPUT_HEADS = ("lm_head",)


def select_targets(linears, config, other_modules=None):
    """The names of the Linear layers that `config` adapts, in the model's order.

    linears: {name: (in_features, out_features)} for every Linear of the model.
    other_modules: {name: class name} for the model's other modules, only to explain a target that
        names, say, a LayerNorm.
    Raises ValueError for a target or exclude entry that matches nothing, a block index that does
    not exist, a rank/alpha pattern that matches no target, or r > min(in, out) for some layer.
    """
    other_modules = other_modules or {}
    names = list(linears)
    selected = _match("target_modules", config.target_modules, names, other_modules)
    if config.exclude_modules:
        excluded = set(_match("exclude_modules", config.exclude_modules, names, other_modules))
        selected = [n for n in selected if n not in excluded]
    if config.layers_to_transform is not None:
        selected = _filter_layers(selected, names, config.layers_to_transform)
    if not selected:
        raise ValueError(f"the LoRA config selects no layer: target_modules={config.target_modules!r}, "
                         f"exclude_modules={config.exclude_modules!r}, "
                         f"layers_to_transform={config.layers_to_transform!r}")
    for argname, pattern in (("rank_pattern", config.rank_pattern), ("alpha_pattern", config.alpha_pattern)):
        for key in pattern:
            if not any(matches_name(n, key) for n in selected):
                raise ValueError(f"{argname} key {key!r} matches none of the adapted layers "
                                 f"({_summarise(selected)})")
    for name in selected:
        in_features, out_features = linears[name]
        r = config.rank_for(name)
        if r > min(in_features, out_features):
            raise ValueError(f"r={r} is too large for {name}, a Linear with in_features={in_features} and "
                             f"out_features={out_features}: r must be <= min(in, out) = "
                             f"{min(in_features, out_features)}, or B·A would not be low-rank")
    return selected


def select_modules_to_save(module_names, config, lora_targets):
    """The module names that `config.modules_to_save` refers to (each entry must match one)."""
    chosen = []
    for entry in config.modules_to_save:
        hits = [n for n in module_names if matches_name(n, entry)]
        if not hits:
            raise ValueError(f"modules_to_save entry {entry!r} matches no module of the model")
        clash = [n for n in hits if n in lora_targets]
        if clash:
            raise ValueError(f"modules_to_save entry {entry!r} names {clash[0]}, which is also a LoRA "
                             "target: a layer is either adapted with LoRA or trained in full, not both")
        chosen.extend(n for n in hits if n not in chosen)
    return chosen


def block_index(name):
    """The block number in a name ("h.3.attn.q_proj" -> 3), or None outside the blocks."""
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return None


def _match(argname, spec, names, other_modules):
    if spec == ALL_LINEAR:
        return [n for n in names if n.split(".")[-1] not in OUTPUT_HEADS]
    if isinstance(spec, str):
        hits = [n for n in names if re.fullmatch(spec, n)]
        if not hits:
            raise ValueError(f"{argname}={spec!r} (a regular expression, matched against whole names) "
                             f"matches no Linear layer; the Linear layers are {_summarise(names)}")
        return hits
    hits = []
    for entry in spec:
        entry_hits = [n for n in names if matches_name(n, entry)]
        if not entry_hits:
            others = [n for n in other_modules if matches_name(n, entry)]
            if others:
                raise ValueError(f"{argname} entry {entry!r} names {others[0]}, a "
                                 f"{other_modules[others[0]]}, not a Linear; LoRA adapts Linear layers, "
                                 f"which are {_summarise(names)}")
            raise ValueError(f"{argname} entry {entry!r} matches no Linear layer; the Linear layers are "
                             f"{_summarise(names)}")
        hits.extend(n for n in entry_hits if n not in hits)
    return [n for n in names if n in hits]


def _filter_layers(selected, names, layers):
    existing = sorted({i for i in map(block_index, names) if i is not None})
    missing = [i for i in layers if i not in existing]
    if missing:
        raise ValueError(f"layers_to_transform asks for blocks {missing}, but the model's blocks are "
                         f"{existing[0]}..{existing[-1]}" if existing else
                         f"layers_to_transform={list(layers)}, but the model has no numbered blocks")
    return [n for n in selected if block_index(n) in layers]


def _summarise(names):
    """Names with block numbers folded into '*', e.g. 'h.*.attn.q_proj, lm_head' (short for big models)."""
    folded = []
    for name in names:
        pattern = ".".join("*" if part.isdigit() else part for part in name.split("."))
        if pattern not in folded:
            folded.append(pattern)
    return ", ".join(folded) + f" ({len(names)} in all)"
