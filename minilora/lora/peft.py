"""PEFT-format adapters: a minilora adapter as Hugging Face PEFT saves one, and back.

    save_peft_adapter(model, "runs/peft_adapter")    # adapter_config.json + adapter_model.safetensors
    load_peft_adapter(model, "runs/peft_adapter")    # the same files, or files PEFT wrote

PeftModel.from_pretrained(torch_model, "runs/peft_adapter") loads what save_peft_adapter writes, on
a PyTorch model that has the same module names, and computes the same outputs. The tensors are
named as PEFT names them:

    base_model.model.<module>.lora_A.weight      (r, in)     minilora's lora_A
    base_model.model.<module>.lora_B.weight      (out, r)    minilora's lora_B
    base_model.model.<module>.lora_magnitude_vector  (out,)  DoRA's magnitude, minilora's lora_magnitude
    base_model.model.<module>.base_layer.bias    (out,)      a trained bias of an adapted layer
    base_model.model.<module>.bias               (out,)      a trained bias elsewhere (bias="all")
    base_model.model.<module>.<param>            a module trained in full (modules_to_save)

and adapter_config.json carries r, lora_alpha, lora_dropout, target_modules, rank_pattern,
alpha_pattern, use_rslora, use_dora, bias, modules_to_save, init_lora_weights and fan_in_fan_out.

Module names come in two layouts:
    "minilora"  minilora's own (h.0.attn.q_proj): for a PyTorch twin of minilora's GPT;
    "gpt2"      transformers' GPT2LMHeadModel (transformer.h.0.attn.c_attn), the default for a model
                from GPT.from_pretrained. GPT-2 computes q, k and v in one layer, c_attn, so the
                adapters of q_proj, k_proj and v_proj become one adapter on c_attn: their A's stacked
                (r_q + r_k + r_v rows) and their B's placed block-diagonally, each block in the rows
                of its own output. Then B·A has each part's B_p·A_p in its rows and nothing else:
                exact. (Different scalings per part are folded into the B blocks.) The safetensors
                header records the parts, so load_peft_adapter gives back the three adapters with
                their own ranks; a c_attn adapter without that record (trained in PEFT) becomes
                three adapters of c_attn's full rank, A shared and B cut in three: exact too.
                DoRA carries over just as exactly: its norm is taken per output row, and every row
                of c_attn's W + s·B·A is a row of q's, k's or v's own. The magnitudes are
                concatenated; a part without an adapter (k) gets ‖W_k‖ per row, the magnitude
                that leaves its rows as they are.

Three things are stricter here than in PEFT: a tensor whose name fits no module is an error, not a
warning; the weights' header records the config fields minilora reads, and a config that differs
from that record (the files of two saves in one folder) is an error; and a trained bias of an adapted layer is written under the name PEFT loads
(`...base_layer.bias`), since under any other name PEFT would leave the base bias in place and its
outputs would be silently off. Anything in a PEFT file that minilora cannot express (a lora_B
bias, another init, ...) is an error naming the field. A PiSSA adapter is refused on saving: PiSSA
changed the frozen W into a residual, and PEFT's file holds no base weights, so PEFT would put the
adapter on the original W.

These files are for PEFT; minilora's own adapter files stay .npz (minilora.lora.files, with the
checksum and the base-model shapes that PEFT's format has no place for).
"""

import json
import math
import os
import re

import numpy as np

from minilora import io
from minilora.lora import dora, peft_config
from minilora.lora.adapter_dict import check_adapter_name
from minilora.lora.config import LoRAConfig, scaling as lora_scaling
from minilora.lora.inject import (activate, base_parameter_names, get_module, inject_adapter, lora_configs,
                                  lora_layers, saved_modules, visible_modules)
from minilora.lora.layer import LoRALinear
from minilora.lora.modules_to_save import ModulesToSave
from minilora.nn import Linear
from minilora.nn.pretrained import LAYOUT as GPT2_LAYOUT, gpt2_module, minilora_modules, read_safetensors

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
LAYOUTS = ("minilora", GPT2_LAYOUT)
# Tensors of PEFT LoRA variants that minilora's LoRA does not have.
UNSUPPORTED = {"lora_embedding_": "LoRA on an Embedding cannot be expressed (minilora adapts Linear layers)",
               "lora_B.bias": "a bias on lora_B (lora_bias=True) cannot be expressed"}
MAGNITUDE = "lora_magnitude_vector"  # DoRA's m, as PEFT's get_peft_model_state_dict names it
PARTS_KEY = "minilora.fused_parts"  # in the safetensors header: {c_attn name: [[part, r, alpha], ...]}
# Also in the header: the fields of adapter_config.json that minilora reads, as saved with the
# weights, so that a folder holding the weights of one save and the config of another (a save that
# stopped between its two files) is refused rather than loaded with the wrong r or alpha.
CONFIG_KEY = "minilora.adapter_config"


# ---- names ------------------------------------------------------------------------------------------
def _layout(model, layout):
    if layout is None:
        return GPT2_LAYOUT if getattr(model, "pretrained_layout", None) == GPT2_LAYOUT else "minilora"
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} or None, got {layout!r}")
    return layout


def _where(name, layout):
    """(PyTorch module name, part of a fused output or None, weight stored (in, out)?) of minilora module `name`."""
    if layout == "minilora":
        return name, None, False
    return gpt2_module(name)


def _linear_names(model, layout):
    """{PyTorch module name: [minilora module names]} of every Linear of the plain model."""
    names = {}
    for name, module in visible_modules(model):
        plain = module.original if isinstance(module, ModulesToSave) else module
        if isinstance(plain, (Linear, LoRALinear)):
            names.setdefault(_where(name, layout)[0], []).append(name)
    return names


# ---- saving -----------------------------------------------------------------------------------------
def save_peft_adapter(model, directory, adapter_name="default", layout=None):
    """Write adapter `adapter_name` of `model` as PEFT's adapter_config.json and
    adapter_model.safetensors into `directory` (made if missing; each file written atomically).
    layout: "minilora", "gpt2", or None (see the module docstring). Returns the directory."""
    configs = lora_configs(model)
    if adapter_name not in configs:
        raise ValueError(f"save_peft_adapter: no adapter named {adapter_name!r}; the model's adapters are "
                         f"{list(configs)} (apply_lora first)")
    config, layout = configs[adapter_name], _layout(model, layout)
    if config.init == "pissa":
        raise ValueError(f"save_peft_adapter: adapter {adapter_name!r} was started with PiSSA, which replaced the "
                         "frozen W by its residual; PEFT's files hold no base weights, so PEFT would apply the "
                         "adapter to the original W. Save it with save_adapter, or merge_and_unload the model")
    groups = {}  # PyTorch module -> [(part, minilora name, LoRAAdapter)]
    for name, layer in lora_layers(model):
        if adapter_name in layer.adapters:
            torch_name, part, _ = _where(name, layout)
            groups.setdefault(torch_name, []).append((part, name, layer.adapters[adapter_name]))
    tensors, ranks, alphas, fused = {}, {}, {}, {}
    for torch_name, parts in groups.items():
        if parts[0][0] is None:
            (_, name, adapter), = parts
            A, B, ranks[torch_name], alphas[torch_name] = (adapter.lora_A.numpy(), adapter.lora_B.numpy(),
                                                           adapter.r, config.alpha_for(name))
            magnitude = None if adapter.lora_magnitude is None else adapter.lora_magnitude.numpy()
        else:
            A, B, ranks[torch_name], alphas[torch_name] = _fuse(parts, config)
            fused[torch_name] = [[p, a.r, config.alpha_for(n)] for p, n, a in parts]
            magnitude = _fused_magnitude(model, torch_name, parts) if config.use_dora else None
        tensors[f"{PREFIX}{torch_name}.lora_A.weight"] = A
        tensors[f"{PREFIX}{torch_name}.lora_B.weight"] = B
        if magnitude is not None:
            tensors[f"{PREFIX}{torch_name}.{MAGNITUDE}"] = magnitude
    tensors.update(_bias_tensors(model, config, groups, layout))
    saved = _saved_tensors(model, adapter_name, layout)
    tensors.update(saved)

    r = max(set(ranks.values()), key=list(ranks.values()).count)   # the most common rank and alpha
    alpha = max(set(alphas.values()), key=list(alphas.values()).count)
    linear_names = _linear_names(model, layout)
    saved_modules_list = sorted({k[len(PREFIX):].rsplit(".", 1)[0] for k in saved})
    file_config = {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": None, "inference_mode": True,
        "r": r, "lora_alpha": alpha, "lora_dropout": config.dropout,
        "target_modules": peft_config.target_list(list(groups), linear_names),
        "exclude_modules": None, "layers_to_transform": None, "layers_pattern": None,
        "rank_pattern": {peft_config.exact_key(n): v for n, v in ranks.items() if v != r},
        "alpha_pattern": {peft_config.exact_key(n): v for n, v in alphas.items() if v != alpha},
        "use_rslora": config.use_rslora, "bias": config.bias,
        "modules_to_save": saved_modules_list or None,
        "init_lora_weights": "gaussian" if config.init == "gaussian" else True,
        # GPT-2's Conv1D layers store W as (in, out); PEFT needs this to merge into them.
        "fan_in_fan_out": any(_where(n, layout)[2] for parts in groups.values() for _, n, _ in parts),
        "use_dora": config.use_dora, "lora_bias": False,
    }
    header = {"format": "pt", CONFIG_KEY: json.dumps({k: file_config[k] for k in peft_config.READ}, sort_keys=True)}
    if fused:
        header[PARTS_KEY] = json.dumps(fused)
    _write(directory, file_config, tensors, header)
    return directory


def _fuse(parts, config):
    """One adapter on a fused layer (c_attn) from the adapters of its parts -> (A, B, rank, alpha)."""
    parts = sorted(parts, key=lambda item: item[0])  # q, k, v: the order of c_attn's output
    first = parts[0][2]
    out, s = first.lora_B.shape[0], first.scaling
    R = sum(adapter.r for _, _, adapter in parts)
    A = np.concatenate([adapter.lora_A.numpy() for _, _, adapter in parts])      # (R, in)
    B = np.zeros((3 * out, R), dtype=A.dtype)                                   # (3·out, R)
    offset = 0
    for part, _, adapter in parts:
        block = adapter.lora_B.numpy()
        if adapter.scaling != s:  # one scaling for the fused adapter: the ratio goes into the block
            block = (block.astype(np.float64) * (adapter.scaling / s)).astype(A.dtype)
        B[part * out:(part + 1) * out, offset:offset + adapter.r] = block
        offset += adapter.r
    alpha = s * (math.sqrt(R) if config.use_rslora else R)  # so that PEFT's alpha / r is s again
    return A, B, R, alpha


def _fused_magnitude(model, torch_name, parts):
    """DoRA's m for a fused layer (c_attn): the parts' magnitudes in the order of its output; a
    part without an adapter gets its rows' norms ‖W_p‖, so that m / ‖W_p‖ = 1 leaves it unchanged."""
    names = minilora_modules(torch_name, model.config.n_layer)
    by_part = {p: adapter.lora_magnitude.numpy() for p, _, adapter in parts}
    return np.concatenate([by_part[p] if p in by_part else _unadapted_magnitude(model, name)
                           for p, name in enumerate(names)])


def _unadapted_magnitude(model, name):
    """‖W‖ per output row of the plain layer `name`, in its dtype: the magnitude that changes nothing."""
    base = _plain_module(model, name)
    return dora.row_norm(dora.weight_array(base, np.float64)).astype(base.weight.dtype)


def _plain_params(model):
    """{plain parameter name: Parameter} of the base model (h.0.attn.q_proj.bias, not ...base.bias)."""
    params = dict(model.named_parameters())
    return {plain: params[name] for name, plain in base_parameter_names(model).items()}


def _bias_tensors(model, config, groups, layout):
    """The trained biases, under PEFT's names (a fused layer's bias: its parts' biases, concatenated)."""
    if config.bias == "none":
        return {}
    params = _plain_params(model)
    inside_saved = tuple(name + "." for name, _ in saved_modules(model))
    if config.bias == "lora_only":
        modules = [n for parts in groups.values() for _, n, _ in parts]
    else:
        modules = [p[:-len(".bias")] for p in params if p.endswith(".bias") and not p.startswith(inside_saved)]
    by_torch = {}
    for module in modules:
        torch_name, part, _ = _where(module, layout)
        if part is None:
            by_torch[torch_name] = params[f"{module}.bias"].numpy()
        elif torch_name not in by_torch:
            # c_attn's bias holds q's, k's and v's, trained or not
            siblings = minilora_modules(torch_name, model.config.n_layer)
            by_torch[torch_name] = np.concatenate([params[f"{m}.bias"].numpy() for m in siblings])
    return {f"{PREFIX}{n}.{'base_layer.' if n in groups else ''}bias": b for n, b in by_torch.items()}


def _saved_tensors(model, adapter_name, layout):
    """The adapter's copies of modules_to_save, under PEFT's names (Conv1D weights transposed)."""
    tensors = {}
    for name, wrapper in saved_modules(model):
        if adapter_name not in wrapper.copies:
            continue
        torch_name, part, conv1d = _where(name, layout)
        if part is not None:
            raise ValueError(f"save_peft_adapter: modules_to_save {name} is a third of GPT-2's fused "
                             f"{torch_name}, which PEFT can only save whole; use layout='minilora'")
        for pname, p in wrapper.copies[adapter_name].named_parameters():
            array = p.numpy()
            tensors[f"{PREFIX}{torch_name}.{pname}"] = array.T.copy() if conv1d and pname == "weight" else array
    return tensors


def _write(directory, file_config, tensors, header):
    """The weights first, then the config: each file is whole, and a save that stops between the two
    leaves a pair that load_peft_adapter refuses (CONFIG_KEY)."""
    from safetensors.numpy import save

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    with io.atomic_write(os.path.join(directory, WEIGHTS_FILE)) as f:
        f.write(save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=header))
    with io.atomic_write(os.path.join(directory, CONFIG_FILE), mode="w") as f:
        json.dump(file_config, f, indent=2, sort_keys=True)


# ---- loading ----------------------------------------------------------------------------------------
def load_peft_adapter(model, directory, adapter_name="default", layout=None):
    """Load PEFT's adapter_config.json + adapter_model.safetensors from `directory` into `model`
    (a plain base model, or one with other adapters) as `adapter_name`, and make it active.
    layout: "minilora", "gpt2", or None (see the module docstring). Returns the model.

    Raises ValueError naming every tensor that is missing, unexpected or of the wrong shape, and
    every config field minilora cannot express; the model is unchanged when it raises.
    """
    check_adapter_name(adapter_name)  # a name already in use is refused by inject_adapter, before any change
    merged = [name for name, layer in lora_layers(model) if layer.merged]
    if merged:
        raise RuntimeError(f"load_peft_adapter: {merged[0]} has an adapter merged into its weight; unmerge first")
    layout, directory = _layout(model, layout), os.fspath(directory)
    config_path, weights_path = os.path.join(directory, CONFIG_FILE), os.path.join(directory, WEIGHTS_FILE)
    with open(config_path, encoding="utf-8") as f:
        try:
            file_config = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config_path}: not valid JSON ({exc})") from exc
    peft_config.check_expressible(file_config, config_path)
    linear_names = _linear_names(model, layout)
    file_config = peft_config.expand_all_linear(file_config, linear_names)
    tensors, header = read_safetensors(weights_path)
    _check_saved_together(file_config, header, config_path, weights_path)
    lora, biases, saved = _sort_tensors(tensors, file_config, weights_path)

    adapters = _adapters(model, layout, file_config, lora, header, linear_names, weights_path)
    saved_arrays = _saved_arrays(model, layout, saved, weights_path)
    config = _minilora_config(file_config, adapters, saved_arrays)
    bias_arrays = _bias_arrays(model, layout, config, biases, lora, saved_arrays, weights_path)

    inject_adapter(model, adapter_name, config)
    for name, (A, B, _, _, magnitude) in adapters.items():
        adapter = get_module(model, name).adapters[adapter_name]
        adapter.lora_A.data[...] = A
        adapter.lora_B.data[...] = B
        if magnitude is not None:
            adapter.lora_magnitude.data[...] = magnitude
    for name, arrays in saved_arrays.items():
        for pname, p in get_module(model, name).copies[adapter_name].named_parameters():
            p.data[...] = arrays[pname]
    params = _plain_params(model)
    for plain, array in bias_arrays.items():
        params[plain].data[...] = array
    activate(model, adapter_name)
    return model


def _check_saved_together(file_config, header, config_path, weights_path):
    """The config fields recorded in the weights' header (by save_peft_adapter; PEFT records none)
    equal the config file's."""
    if CONFIG_KEY not in header:
        return
    try:
        record = json.loads(header[CONFIG_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{weights_path}: the header's {CONFIG_KEY} is not valid JSON ({exc})") from exc
    differ = [f"{key}={file_config.get(key)!r} in the config, {value!r} in the weights"
              for key, value in sorted(record.items()) if file_config.get(key) != value]
    if differ:
        raise ValueError(f"{config_path} and {weights_path} were not saved together (a save that stopped "
                         f"between its two files, or an edited config): {'; '.join(differ)}. Save the adapter again")


def _sort_tensors(tensors, file_config, source):
    """PEFT's tensors by kind: lora {module: {"A", "B"}}, biases {module: (array, under base_layer?)},
    saved {module: {param: array}}. A name of any other form is an error."""
    lora, biases, saved, problems = {}, {}, {}, []
    saved_entries = file_config.get("modules_to_save") or ()
    for key, array in tensors.items():
        if not key.startswith(PREFIX):
            problems.append(f"{key}: PEFT's names start with {PREFIX!r}")
            continue
        rest = key[len(PREFIX):]
        module, _, param = rest.rpartition(".")
        lora_weight = re.fullmatch(r"(.+)\.lora_([AB])\.weight", rest)
        if lora_weight:
            lora.setdefault(lora_weight.group(1), {})[lora_weight.group(2)] = array  # {"A": ..., "B": ...}
        elif param == MAGNITUDE:
            lora.setdefault(module, {})["m"] = array
        elif "lora_" in rest:
            what = next((w for tag, w in UNSUPPORTED.items() if tag in rest),
                        "not a name PEFT's LoRA writes (<module>.lora_A.weight, <module>.lora_B.weight)")
            problems.append(f"{key}: {what}")
        elif any(module == e or module.endswith(f".{e}") for e in saved_entries):
            saved.setdefault(module, {})[param] = array
        elif rest.endswith(".base_layer.bias"):
            biases[rest[:-len(".base_layer.bias")]] = (array, True)
        elif param == "bias":
            biases[module] = (array, False)
        else:
            problems.append(f"{key}: not a LoRA weight, a bias or a module in modules_to_save {list(saved_entries)}")
    if problems:
        raise ValueError(f"{source} has tensors minilora cannot place:\n  " + "\n  ".join(problems))
    return lora, biases, saved


def _minilora_names(torch_name, layout, model):
    return [torch_name] if layout == "minilora" else minilora_modules(torch_name, model.config.n_layer)


def _plain_module(model, name):
    module = get_module(model, name)
    return module.base if isinstance(module, LoRALinear) else module.original if isinstance(module, ModulesToSave) \
        else module


def _adapters(model, layout, file_config, lora, header, linear_names, source):
    """{minilora module: (A, B, r, alpha, DoRA's magnitude or None)}, after checking the file's modules,
    ranks and shapes against the config and the model."""
    targeted = [n for n in linear_names if peft_config.is_targeted(file_config, n)]
    problems = [f"{n}: the config targets it, the file has no adapter for it" for n in targeted if n not in lora]
    problems += [f"{n}: an adapter in the file, but the config does not target it"
                 + ("" if n in linear_names else " and the model has no such Linear")
                 for n in lora if n not in targeted]
    r0, alpha0, use_dora = file_config["r"], file_config["lora_alpha"], bool(file_config.get("use_dora"))
    for n in targeted:
        if n not in lora:
            continue
        missing = [f"lora_{x}" for x in "AB" if x not in lora[n]] + ([MAGNITUDE] if use_dora and "m" not in lora[n] else [])
        if missing:
            problems.append(f"{n}: no {' and no '.join(missing)}" + (" (use_dora is true)" if use_dora else ""))
            continue
        if "m" in lora[n] and not use_dora:
            problems.append(f"{n}.{MAGNITUDE}: a DoRA magnitude, but the config has use_dora false")
            continue
        layers = [_plain_module(model, m) for m in linear_names[n]]
        r, out = peft_config.pattern_value(file_config.get("rank_pattern"), n, r0), sum(l.out_features for l in layers)
        expected = {"A": (r, layers[0].in_features), "B": (out, r), "m": (out,)}
        for x in lora[n]:
            if tuple(lora[n][x].shape) != expected[x]:
                key = MAGNITUDE if x == "m" else f"lora_{x}.weight"
                problems.append(f"{n}.{key} has shape {tuple(lora[n][x].shape)}, the config "
                                f"(r={r}) and the model need {expected[x]}")
    if problems:
        raise ValueError(f"the adapter in {source} does not fit this model:\n  " + "\n  ".join(problems))

    rslora, parts_record = bool(file_config.get("use_rslora")), json.loads(header.get(PARTS_KEY, "{}"))
    adapters = {}
    for n in targeted:
        A, B, m = lora[n]["A"], lora[n]["B"], lora[n].get("m")
        R, alpha = A.shape[0], peft_config.pattern_value(file_config.get("alpha_pattern"), n, alpha0)
        names = linear_names[n]
        if len(names) == 1:
            adapters[names[0]] = (A, B, R, alpha, m)
            continue
        out = B.shape[0] // len(names)
        rows = [slice(p * out, (p + 1) * out) for p in range(len(names))]
        parts = _recorded_parts(parts_record.get(n), B, out, len(names))
        if parts is not None and m is not None and not _others_unchanged(model, names, parts, m, rows):
            parts = None
        if parts is None:  # no record, or PEFT trained the rest: each part gets all of A
            for p, name in enumerate(names):
                adapters[name] = (A, B[rows[p]], R, alpha, None if m is None else m[rows[p]])
            continue
        s, offset = lora_scaling(alpha, R, rslora), 0
        for p, r, part_alpha in parts:
            block = B[p * out:(p + 1) * out, offset:offset + r]
            s_p = lora_scaling(part_alpha, r, rslora)
            if s_p != s:
                block = (block.astype(np.float64) * (s / s_p)).astype(B.dtype)
            adapters[names[p]] = (A[offset:offset + r], block, r, part_alpha, None if m is None else m[rows[p]])
            offset += r
    return adapters


def _others_unchanged(model, names, parts, magnitude, rows):
    """True when DoRA's magnitude leaves every part without an adapter as save_peft_adapter wrote it:
    ‖W_p‖ per row, so that those rows compute W_p·x and need no adapter here either."""
    adapted = {p for p, _, _ in parts}
    return all(np.array_equal(magnitude[rows[p]], _unadapted_magnitude(model, name).astype(magnitude.dtype))
               for p, name in enumerate(names) if p not in adapted)


def _recorded_parts(record, B, out, n_parts):
    """The [[part, r, alpha]] that save_peft_adapter recorded for a fused layer, if B still has
    exactly that block-diagonal form (every entry off the blocks zero); else None."""
    if not record:
        return None
    try:
        parts = [(int(p), int(r), float(a)) for p, r, a in record]
    except (TypeError, ValueError):
        return None
    if sum(r for _, r, _ in parts) != B.shape[1] or not all(0 <= p < n_parts for p, _, _ in parts):
        return None
    mask, offset = np.ones(B.shape, dtype=bool), 0
    for p, r, _ in parts:
        mask[p * out:(p + 1) * out, offset:offset + r] = False
        offset += r
    return parts if not np.any(B[mask]) else None


def _saved_arrays(model, layout, saved, source):
    """{minilora module: {param: array}} for modules_to_save (GPT-2's Conv1D weights transposed back)."""
    arrays, problems = {}, []
    for torch_name, params in saved.items():
        try:
            names = _minilora_names(torch_name, layout, model)
            own = dict(_plain_module(model, names[0]).named_parameters())
        except (ValueError, KeyError):
            problems.append(f"{torch_name}: the model has no such module")
            continue
        if len(names) != 1:
            problems.append(f"{torch_name}: a fused layer saved whole cannot be split back into {', '.join(names)}")
            continue
        name, conv1d = names[0], _where(names[0], layout)[2]
        arrays[name] = {p: (a.T if conv1d and p == "weight" else a) for p, a in params.items()}
        for p in set(own) | set(params):
            if p not in params or p not in own or tuple(arrays[name][p].shape) != own[p].shape:
                problems.append(f"{torch_name}.{p}: the file has "
                                f"{tuple(params[p].shape) if p in params else 'nothing'}, the model has "
                                f"{own[p].shape if p in own else 'nothing'}")
    if problems:
        raise ValueError(f"the modules_to_save in {source} do not fit this model:\n  " + "\n  ".join(problems))
    return arrays


def _minilora_config(file_config, adapters, saved_arrays):
    """The LoRAConfig that gives `adapters` their ranks and alphas, with explicit module names."""
    r, alpha = file_config["r"], file_config["lora_alpha"]
    return LoRAConfig(
        r=r, alpha=alpha, dropout=file_config.get("lora_dropout", 0.0), target_modules=tuple(adapters),
        modules_to_save=tuple(saved_arrays), use_rslora=bool(file_config.get("use_rslora", False)),
        use_dora=bool(file_config.get("use_dora", False)),
        init=peft_config.minilora_init(file_config.get("init_lora_weights", True), CONFIG_FILE),
        bias=file_config.get("bias", "none"),
        rank_pattern={n: a[2] for n, a in adapters.items() if a[2] != r},
        alpha_pattern={n: a[3] for n, a in adapters.items() if a[3] != alpha})


def _bias_arrays(model, layout, config, biases, lora, saved_arrays, source):
    """{plain bias name: array} of the biases the file trains, checked against config.bias."""
    params = _plain_params(model)
    inside_saved = tuple(name + "." for name in saved_arrays)
    with_bias = {}  # PyTorch module -> its minilora modules, for each module with a bias
    for plain in params:
        if plain.endswith(".bias") and not plain.startswith(inside_saved):
            module = plain[:-len(".bias")]
            with_bias.setdefault(_where(module, layout)[0], []).append(module)
    if config.bias == "none":
        expected = set()
    elif config.bias == "lora_only":
        expected = {n for n in lora if n in with_bias}
    else:
        expected = set(with_bias)
    problems = [f"{n}: a trained bias (bias={config.bias!r}), missing from the file" for n in sorted(expected)
                if n not in biases]
    problems += [f"{n}.bias: not trained with bias={config.bias!r}" for n in biases if n not in expected]
    problems += [f"{n}.bias: PEFT loads the bias of an adapted layer from {PREFIX}{n}.base_layer.bias and "
                 "would leave the base bias in place under this name" for n, (_, under) in biases.items()
                 if n in expected and n in lora and not under]
    arrays = {}
    for n in sorted(expected & set(biases)):
        array, modules = biases[n][0], with_bias[n]
        out = sum(params[f"{m}.bias"].shape[0] for m in modules)
        if tuple(array.shape) != (out,):
            problems.append(f"{n}.bias has shape {tuple(array.shape)}, the model needs {(out,)}")
            continue
        offset = 0
        for m in modules:
            size = params[f"{m}.bias"].shape[0]
            piece = array[offset:offset + size]
            offset += size
            trains = config.bias == "all" or m in config.target_modules
            if trains:
                arrays[f"{m}.bias"] = piece
            elif not np.array_equal(piece, params[f"{m}.bias"].numpy()):
                problems.append(f"{n}.bias changes the bias of {m}, which has no adapter: with bias='lora_only' "
                                "minilora trains only the biases of adapted layers")
    if problems:
        raise ValueError(f"the biases in {source} do not fit:\n  " + "\n  ".join(problems))
    return arrays
