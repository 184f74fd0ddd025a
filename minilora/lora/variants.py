"""What a LoRAConfig's variants do to a layer when apply_lora gives it a new adapter.

Where it sits: inject.py makes a plain adapter (A drawn, B = 0) for each targeted layer, then calls
`prepare_layer`, which applies, in this order:
    1. PiSSA (init="pissa"): A and B from W's top-r singular vectors, the residual left in W;
    2. QLoRA (base_quant="nf4"): the base Linear replaced by an NF4Linear (W in 4 bits);
    3. DoRA (use_dora): the magnitude m = ‖W + s·B·A‖, from the W the layer will compute with
       (after 1 and 2), so that the layer starts equal to its own base layer.
LoRA-FA (use_lora_fa) only changes which parameters train (inject.mark_trainable).
"""

from minilora.lora import dora
from minilora.lora.pissa import pissa_init
from minilora.nn import Linear
from minilora.quant.linear import NF4Linear


def check_layer(name, layer, config):
    """Raise ValueError (before anything changes) if `config` cannot prepare `layer` (a Linear,
    or a LoRALinear that already has adapters)."""
    if config.init != "pissa":
        return
    base = getattr(layer, "base", layer)
    if isinstance(base, NF4Linear):
        raise ValueError(f"init='pissa' needs the float weight of {name}, whose base is already in NF4")
    if getattr(layer, "adapters", None) is not None and len(layer.adapters) > 0:
        raise ValueError(f"init='pissa' would change W of {name} under its other adapters "
                         f"{layer.adapters.names()}; use it for a layer's first adapter only")


def prepare_layer(layer, adapter, config):
    """Steps 1-3 of the module docstring on a LoRALinear `layer` and its new `adapter`."""
    if config.init == "pissa":
        pissa_init(layer.base, adapter)
    if config.base_quant == "nf4" and not isinstance(layer.base, NF4Linear):
        layer.base = quantized(layer.base, config)
    if config.use_dora:
        dora.init_magnitude(layer.base, adapter)


def quantized(linear, config):
    """An NF4Linear holding `linear`'s weight as the config says (block size, double quantization)."""
    if not isinstance(linear, Linear):
        raise TypeError(f"only a Linear can be quantized, got {type(linear).__name__}")
    return NF4Linear(linear, config.base_quant_block_size, config.base_quant_double)
