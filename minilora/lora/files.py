"""Adapter files: only what the adapter adds to the base model, a few kilobytes instead of the model.

save_adapter writes, through minilora.io (one atomic .npz, no pickle, with a checksum):
    arrays    "{layer}.lora_A" (r, in) and "{layer}.lora_B" (out, r) for every adapted layer,
              and "{layer}.lora_magnitude" (out,) with DoRA,
              "{module}.{param}" for the adapter's copies of modules_to_save,
              "{name}.bias" for the biases that LoRAConfig.bias trains (they change the base model);
              every name is the one the plain base model uses, so the file does not depend on the
              adapter's name or on how many other adapters the model carries;
    metadata  the LoRAConfig, and the shape of every base-model parameter the adapter sits on
              ({plain name: shape}).
load_adapter checks all of that against the model it is loaded into and names every mismatch
before it changes anything. Loading redoes what the config does to the base model (PiSSA's
residual, an NF4 base) from the base model it is loaded into, which must therefore be the one the
adapter was trained on (PiSSA's residual is W minus its top-r part: the same W gives the same one).
"""

import copy
import os

from minilora import io
from minilora.checkpoint import save_checkpoint
from minilora.lora.adapters import set_adapter
from minilora.lora.adapter_dict import check_adapter_name
from minilora.lora.config import LoRAConfig
from minilora.lora.inject import (activate, active_adapter, base_parameter_names, get_module, inject_adapter,
                                  lora_configs, lora_layers, plan, saved_modules)
from minilora.lora.layer import LoRALinear
from minilora.lora.merge import merge_and_unload
from minilora.lora.modules_to_save import ModulesToSave

FORMAT = "minilora-adapter"
VERSION = 1


def save_adapter(model, path, adapter_name=None):
    """Write adapter `adapter_name` (default: the active one) of `model` to `path`; returns the path
    minilora.io wrote. A model without LoRA layers is an error, never an empty file."""
    configs = lora_configs(model)
    if not lora_layers(model) or not configs:
        raise ValueError(f"save_adapter: {type(model).__name__} has no LoRA layers, so there is no adapter "
                         "to save (apply_lora first; to save the whole model use minilora.checkpoint)")
    adapter_name = active_adapter(model) if adapter_name is None else adapter_name
    if adapter_name not in configs:
        raise ValueError(f"save_adapter: no adapter named {adapter_name!r}; the adapters are {list(configs)}")
    config = configs[adapter_name]
    arrays, base_shapes = {}, {}
    for name, layer in lora_layers(model):
        if adapter_name in layer.adapters:
            adapter = layer.adapters[adapter_name]
            arrays[f"{name}.lora_A"] = adapter.lora_A.numpy()
            arrays[f"{name}.lora_B"] = adapter.lora_B.numpy()
            if adapter.lora_magnitude is not None:
                arrays[f"{name}.lora_magnitude"] = adapter.lora_magnitude.numpy()
            base_shapes[f"{name}.weight"] = list(layer.base.weight.shape)
    for name, wrapper in saved_modules(model):
        if adapter_name in wrapper.copies:
            for pname, p in wrapper.copies[adapter_name].named_parameters():
                arrays[f"{name}.{pname}"] = p.numpy()
                base_shapes[f"{name}.{pname}"] = list(p.shape)
    params = dict(model.named_parameters())
    for name, plain in _trained_biases(model, config, adapter_name).items():
        arrays[plain] = params[name].numpy()
    metadata = {"format": FORMAT, "version": VERSION, "adapter_name": adapter_name,
                "config": config.to_dict(), "base_shapes": base_shapes}
    return io.save_arrays(path, arrays, metadata)


def load_adapter(model, path, adapter_name="default"):
    """Load an adapter file into `model` (a plain base model, or one with other adapters) as
    `adapter_name`, and make it the active adapter. Returns the model.

    Raises ValueError naming every layer that is missing or has another shape, every array that
    is missing, unexpected or of the wrong shape/dtype; the model is unchanged when it raises.
    """
    check_adapter_name(adapter_name)
    if adapter_name in lora_configs(model):
        raise ValueError(f"load_adapter: the model already has an adapter named {adapter_name!r}; "
                         "pick another adapter_name or delete_adapter it first")
    merged = [name for name, layer in lora_layers(model) if layer.merged]
    if merged:
        raise RuntimeError(f"load_adapter: {merged[0]} has an adapter merged into its weight; unmerge first")
    arrays, metadata = io.load_arrays(path)
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a minilora adapter file (format "
                         f"{metadata.get('format') if isinstance(metadata, dict) else None!r}, expected {FORMAT!r})")
    if metadata.get("version") != VERSION:
        raise ValueError(f"{path} has adapter format version {metadata.get('version')!r}; this minilora "
                         f"reads version {VERSION}")
    if not isinstance(metadata.get("config"), dict) or not isinstance(metadata.get("base_shapes"), dict):
        raise ValueError(f"{path}: the adapter metadata needs a 'config' and a 'base_shapes' object")
    config = LoRAConfig.from_dict(metadata["config"])
    _check_base(model, metadata["base_shapes"], path)
    targets, saved = plan(model, config)
    expected = _expected_arrays(model, config, targets, saved)
    _check_arrays(arrays, expected, path)

    inject_adapter(model, adapter_name, config)
    params = dict(model.named_parameters())
    for name in targets:
        adapter = get_module(model, name).adapters[adapter_name]
        adapter.lora_A.data[...] = arrays[f"{name}.lora_A"]
        adapter.lora_B.data[...] = arrays[f"{name}.lora_B"]
        if config.use_dora:
            adapter.lora_magnitude.data[...] = arrays[f"{name}.lora_magnitude"]
    for name in saved:
        for pname, p in get_module(model, name).copies[adapter_name].named_parameters():
            p.data[...] = arrays[f"{name}.{pname}"]
    for name, plain in _trained_biases(model, config, adapter_name).items():
        params[name].data[...] = arrays[plain]
    activate(model, adapter_name)
    return model


def adapter_and_checkpoint_sizes(model, directory, adapter_name=None):
    """Write the adapter and a full checkpoint of the same fine-tuned model into `directory`;
    return {"adapter_path", "adapter_bytes", "checkpoint_path", "checkpoint_bytes"}.

    The full checkpoint (minilora.checkpoint) is a copy of the model with the adapter merged in and
    unloaded: what a fully fine-tuned model would have to store for this one task.
    """
    adapter_name = active_adapter(model) if adapter_name is None else adapter_name
    adapter_path = save_adapter(model, os.path.join(directory, "adapter"), adapter_name)
    plain = copy.deepcopy(model)
    if adapter_name != active_adapter(plain):
        set_adapter(plain, adapter_name)
    checkpoint_path = save_checkpoint(merge_and_unload(plain), os.path.join(directory, "full_model"))
    return {"adapter_path": adapter_path, "adapter_bytes": os.path.getsize(adapter_path),
            "checkpoint_path": checkpoint_path, "checkpoint_bytes": os.path.getsize(checkpoint_path)}


def _trained_biases(model, config, adapter_name):
    """{bias name in this model: name in the plain model} for the biases `config.bias` trains
    (biases inside modules_to_save travel with the module's copy instead)."""
    if config.bias == "none":
        return {}
    plain = base_parameter_names(model)
    wrapped = [name for name, _ in saved_modules(model)]
    if config.bias == "all":
        return {n: p for n, p in plain.items()
                if p.endswith(".bias") and not any(p.startswith(w + ".") for w in wrapped)}
    layers = [name for name, layer in lora_layers(model) if adapter_name in layer.adapters]
    return {f"{name}.base.bias": f"{name}.bias" for name in layers if f"{name}.base.bias" in plain}


def _check_base(model, base_shapes, path):
    """Every base-model parameter the adapter sits on must exist in `model` with the same shape."""
    params = dict(model.named_parameters())
    shapes = {plain: params[name].shape for name, plain in base_parameter_names(model).items()}
    problems = []
    for name, shape in base_shapes.items():
        if name not in shapes:
            problems.append(f"{name}: not in the model")
        elif list(shapes[name]) != list(shape):
            problems.append(f"{name}: the model has {tuple(shapes[name])}, the adapter was made for "
                            f"{tuple(shape)}")
    if problems:
        raise ValueError(f"the adapter in {path} does not fit this model:\n  " + "\n  ".join(problems))


def _expected_arrays(model, config, targets, saved):
    """{array name: (shape, dtype)} that an adapter made with `config` must hold for `model`."""
    expected = {}
    for name in targets:
        base = _plain(get_module(model, name))
        r = config.rank_for(name)
        expected[f"{name}.lora_A"] = ((r, base.in_features), base.weight.dtype)
        expected[f"{name}.lora_B"] = ((base.out_features, r), base.weight.dtype)
        if config.use_dora:
            expected[f"{name}.lora_magnitude"] = ((base.out_features,), base.weight.dtype)
    for name in saved:
        for pname, p in _plain(get_module(model, name)).named_parameters():
            expected[f"{name}.{pname}"] = (p.shape, p.dtype)
    if config.bias == "all":
        params = dict(model.named_parameters())
        for name, plain in base_parameter_names(model).items():
            if plain.endswith(".bias") and not any(plain.startswith(s + ".") for s in saved):
                expected[plain] = (params[name].shape, params[name].dtype)
    elif config.bias == "lora_only":
        for name in targets:
            bias = _plain(get_module(model, name)).bias
            if bias is not None:
                expected[f"{name}.bias"] = (bias.shape, bias.dtype)
    return expected


def _plain(module):
    """The module a LoRA wrapper stands for (a LoRALinear's base, a ModulesToSave's original)."""
    if isinstance(module, LoRALinear):
        return module.base
    if isinstance(module, ModulesToSave):
        return module.original
    return module


def _check_arrays(arrays, expected, path):
    problems = [f"missing array {name}" for name in expected if name not in arrays]
    problems += [f"unexpected array {name}" for name in arrays if name not in expected]
    for name, (shape, dtype) in expected.items():
        if name in arrays and (tuple(arrays[name].shape) != tuple(shape) or arrays[name].dtype != dtype):
            problems.append(f"{name}: the file has {tuple(arrays[name].shape)} {arrays[name].dtype}, "
                            f"the model needs {tuple(shape)} {dtype}")
    if problems:
        raise ValueError(f"the adapter in {path} does not match this model:\n  " + "\n  ".join(problems))
