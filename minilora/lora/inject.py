"""apply_lora: put adapters into a model in place, and decide which parameters train.

    model = GPT(config)
    apply_lora(model, LoRAConfig(r=8, target_modules=("q_proj", "v_proj")))

swaps every targeted Linear for a LoRALinear (the Linear becomes its `.base`), wraps the modules in
`modules_to_save`, records the config in `model.lora_configs[adapter_name]`, makes the adapter
active and freezes everything except: the active adapter's A and B, its copies of modules_to_save,
and the biases that `config.bias` names (with LoRA-FA, A stays frozen too). The variants a config
asks for (PiSSA, an NF4 base, DoRA) are applied to each new adapter by variants.py.
The Trainer then optimises exactly what requires grad.
"""

from minilora.lora import variants
from minilora.lora.adapter_dict import check_adapter_name
from minilora.lora.config import LoRAConfig
from minilora.lora.layer import LoRALinear, new_adapter
from minilora.lora.modules_to_save import ModulesToSave
from minilora.lora.targets import OUTPUT_HEADS, select_modules_to_save, select_targets
from minilora.nn import Linear, Module


def apply_lora(model, config, adapter_name="default"):
    """Add adapter `adapter_name` as `config` says, make it the active one, and freeze the rest.

    model: any minilora Module with Linear layers (a GPT, say); changed in place and returned.
    Raises ValueError (before changing anything) when the config does not fit the model.
    """
    inject_adapter(model, adapter_name, config)
    activate(model, adapter_name)
    return model


def inject_adapter(model, adapter_name, config):
    """Add adapter `adapter_name` to the layers `config` selects, without making it active."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minilora Module, got {type(model).__name__}")
    if not isinstance(config, LoRAConfig):
        raise TypeError(f"config must be a LoRAConfig, got {type(config).__name__}")
    check_adapter_name(adapter_name)
    configs = lora_configs(model)
    if adapter_name in configs:
        raise ValueError(f"the model already has an adapter named {adapter_name!r} (adapters: {list(configs)})")
    targets, saved = plan(model, config)
    for name in targets:
        variants.check_layer(name, get_module(model, name), config)

    for name in targets:
        layer = get_module(model, name)
        base = layer.base if isinstance(layer, LoRALinear) else layer
        init = "gaussian" if config.init == "pissa" else config.init   # PiSSA overwrites A and B
        adapter = new_adapter(base.in_features, base.out_features, config.rank_for(name),
                              config.alpha_for(name), config.dropout, config.use_rslora, init,
                              base.weight.dtype, base.weight.device)
        if not isinstance(layer, LoRALinear):
            layer = _wrap(model, name, base)
        variants.prepare_layer(layer, adapter, config)
        layer.add_adapter(adapter_name, adapter)
    for name in saved:
        wrapper = get_module(model, name)
        if not isinstance(wrapper, ModulesToSave):
            wrapper = ModulesToSave(wrapper)
            wrapper.active_adapter = active_adapter(model)
            set_module(model, name, wrapper)
        wrapper.add_copy(adapter_name)
    if config.base_quant is not None and config.base_quant_scope == "all-linear":
        for name, module in list(visible_modules(model)):
            if type(module) is Linear and name.split(".")[-1] not in OUTPUT_HEADS:
                set_module(model, name, variants.quantized(module, config))

    configs[adapter_name] = config
    model.lora_configs = configs
    # The new adapter trains only once it is active: re-apply the freezing rule for the current one.
    mark_trainable(model, active_adapter(model))


def plan(model, config):
    """(LoRA target names, modules_to_save names) for `config` on `model`, checked, nothing changed."""
    linears, others = {}, {}
    for name, module in visible_modules(model):
        if isinstance(module, (LoRALinear, Linear)):
            linears[name] = (module.in_features, module.out_features)
        else:
            others[name] = type(module).__name__
    if not linears:
        raise ValueError(f"{type(model).__name__} has no Linear layer below its root for LoRA to adapt")
    targets = select_targets(linears, config, others)
    saved = select_modules_to_save(list(linears) + list(others), config, targets)
    return targets, saved


def activate(model, adapter_name):
    """Make `adapter_name` the adapter that every layer uses, and the one that trains."""
    for _, module in model.named_modules():
        if isinstance(module, (LoRALinear, ModulesToSave)):
            module.active_adapter = adapter_name
    model.active_adapter = adapter_name
    mark_trainable(model, adapter_name)


def mark_trainable(model, adapter_name):
    """Freeze every parameter, then unfreeze what adapter `adapter_name` trains (None: nothing)."""
    model.requires_grad_(False)
    if adapter_name is None:
        return
    config = lora_configs(model)[adapter_name]
    unused = set()  # parameters that forward does not use while this adapter is active
    for _, module in model.named_modules():
        if isinstance(module, LoRALinear) and adapter_name in module.adapters:
            module.adapters[adapter_name].requires_grad_(True)
            if config.use_lora_fa:
                module.adapters[adapter_name].lora_A.requires_grad = False
            if config.bias == "lora_only" and module.base.bias is not None:
                module.base.bias.requires_grad = True
        elif isinstance(module, ModulesToSave):
            unused.update(id(p) for p in module.original.parameters())
            for name in module.copies.names():
                if name == adapter_name:
                    module.copies[name].requires_grad_(True)
                else:
                    unused.update(id(p) for p in module.copies[name].parameters())
    if config.bias == "all":
        for name, p in model.named_parameters():
            if name.endswith(".bias") and id(p) not in unused:
                p.requires_grad = True


# ---- looking things up ---------------------------------------------------------------------------
def lora_configs(model):
    """{adapter name: LoRAConfig} of the adapters in `model` (empty for a plain model)."""
    return dict(model.__dict__.get("lora_configs", {}))


def active_adapter(model):
    """The name of the model's active adapter, or None."""
    return model.__dict__.get("active_adapter")


def lora_layers(model):
    """[(name, LoRALinear)] in the model's order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def saved_modules(model):
    """[(name, ModulesToSave)] in the model's order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ModulesToSave)]


def base_parameter_names(model):
    """{name in this model: name in the plain model} for every parameter of the base model.

    "h.0.attn.q_proj.base.weight" -> "h.0.attn.q_proj.weight", "lm_head.original.weight" ->
    "lm_head.weight"; adapter weights and per-adapter copies have no plain name and are left out.
    """
    names = {}

    def visit(module, name, plain):
        for pname, _ in module.named_parameters(recurse=False):
            names[_join(name, pname)] = _join(plain, pname)
        wrapper_keeps = {LoRALinear: "base", ModulesToSave: "original"}.get(type(module))
        for child_name, child in module.named_children():
            if wrapper_keeps is None:
                visit(child, _join(name, child_name), _join(plain, child_name))
            elif child_name == wrapper_keeps:
                visit(child, _join(name, child_name), plain)

    visit(model, "", "")
    return names


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def get_module(model, name):
    module = model
    for part in name.split("."):
        module = module._modules[part]
    return module


def set_module(model, name, new):
    parent_name, _, leaf = name.rpartition(".")
    setattr(get_module(model, parent_name) if parent_name else model, leaf, new)


def _wrap(model, name, linear):
    """Replace the Linear at `name` by a LoRALinear around it that has no adapter yet."""
    layer = LoRALinear(linear, r=None)
    layer.active_adapter = active_adapter(model)
    set_module(model, name, layer)
    return layer


def visible_modules(model):
    """Named modules, without the root and without the insides of LoRA wrappers."""
    hidden = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(h + ".") for h in hidden):
            continue
        if isinstance(module, (LoRALinear, ModulesToSave)):
            hidden.append(name)
        yield name, module
