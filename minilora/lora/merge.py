"""Merging: fold the active adapter into the weights, for inference with no extra cost.

merge_adapters / unmerge_adapters call LoRALinear.merge()/unmerge() on every LoRA layer (W' = W +
scaling·B·A, and back to the very same W). merge_and_unload goes one step further and gives back a
plain model: every LoRALinear is replaced by its Linear holding W', every modules_to_save wrapper by
the active adapter's copy, every NF4 layer left (base_quant_scope="all-linear" quantizes layers
without adapters too) by a float Linear holding its dequantized W, and the adapters are dropped. Its
outputs equal the adapted model's up to float rounding; it has no LoRA parameters at all.
"""

from minilora.lora.inject import lora_configs, lora_layers, mark_trainable, saved_modules, set_module
from minilora.quant.linear import NF4Linear


def merge_adapters(model):
    """Merge the active adapter into every LoRA layer that has it; returns the model."""
    _merge_all([layer for _, layer in _layers(model) if layer.active is not None])
    return model


def unmerge_adapters(model):
    """Undo merge_adapters: every merged layer gets its original weight back, bit for bit."""
    for _, layer in _layers(model):
        if layer.merged:
            layer.unmerge()
    return model


def merge_and_unload(model):
    """A plain model (plain Linears, no adapters) that computes what the adapted model computes.

    Changes `model` in place and returns it. Parameters stay frozen as apply_lora left them; call
    model.requires_grad_(True) to train the merged model in full.
    """
    layers = _layers(model)
    _merge_all([layer for _, layer in layers if not layer.merged and layer.active is not None])
    for name, layer in layers:
        layer._unmerged_weight = None
        set_module(model, name, layer.base)
    for name, wrapper in saved_modules(model):
        set_module(model, name, wrapper.active)
    for name, module in list(model.named_modules()):
        if isinstance(module, NF4Linear):
            set_module(model, name, module.dequantized_linear())
    del model.lora_configs
    del model.active_adapter
    mark_trainable(model, None)
    return model


def _merge_all(layers):
    """Merge every layer, or none: if one merge fails (non-finite weights), undo the others."""
    done = []
    try:
        for layer in layers:
            layer.merge()
            done.append(layer)
    except Exception:
        for layer in done:
            layer.unmerge()
        raise


def _layers(model):
    layers = lora_layers(model)
    if not layers or not lora_configs(model):
        raise ValueError(f"{type(model).__name__} has no LoRA layers to merge (use apply_lora first)")
    return layers
