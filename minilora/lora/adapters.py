"""Several adapters in one model: add, switch, switch off, delete, and combine them.

One frozen base model can carry many small adapters, one per task, and switch between them by
name: only the active adapter is used in forward and only it trains. `combine_adapters` builds a
new adapter from a weighted sum of others, either exactly (stacking their ranks) or truncated by
SVD to a chosen rank, and reports how much of ΔW the truncation lost.
"""

import contextlib
import math

import numpy as np

from minilora import backend
from minilora.lora.adapter_dict import check_adapter_name
from minilora.lora.config import LoRAConfig
from minilora.lora.inject import (activate, active_adapter, get_module, inject_adapter, lora_configs,
                                  lora_layers, mark_trainable, saved_modules, set_module)
from minilora.lora.layer import LoRAAdapter
from minilora.nn import Parameter


def add_adapter(model, adapter_name, config):
    """Add a new adapter to `model` without making it active; returns the model."""
    inject_adapter(model, adapter_name, config)
    return model


def set_adapter(model, adapter_name):
    """Use adapter `adapter_name` in forward and train it (and only it); returns the model."""
    _require(model, adapter_name)
    merged = [name for name, layer in lora_layers(model) if layer.merged]
    if merged:
        raise RuntimeError(f"cannot switch adapters while {merged[0]} (and {len(merged) - 1} more) has an "
                           "adapter merged into its weight; unmerge first")
    activate(model, adapter_name)
    return model


@contextlib.contextmanager
def disable_adapters(model):
    """Inside the block the model computes exactly what the base model computes.

        with disable_adapters(model):
            base_logits, _ = model(idx)

    LoRA layers use W alone and modules_to_save use their original module. Biases trained with
    LoRAConfig.bias belong to the base model itself and stay as trained.
    """
    layers = lora_layers(model) + saved_modules(model)
    if not layers:
        raise ValueError("disable_adapters: the model has no LoRA layers")
    merged = [name for name, layer in lora_layers(model) if layer.merged]
    if merged:
        raise RuntimeError(f"cannot disable adapters while {merged[0]} has an adapter merged into its "
                           "weight; unmerge first")
    before = [layer.disabled for _, layer in layers]
    for _, layer in layers:
        layer.disabled = True
    try:
        yield model
    finally:
        for (_, layer), state in zip(layers, before):
            layer.disabled = state


def delete_adapter(model, adapter_name):
    """Remove an adapter. Layers left with no adapter become plain again (their Linear or original
    module goes back in place). If it was active, the first remaining adapter becomes active."""
    _require(model, adapter_name)
    for name, layer in lora_layers(model):
        if layer.merged_adapter == adapter_name:
            raise RuntimeError(f"adapter {adapter_name!r} is merged into {name}; unmerge before deleting it")
    for name, layer in lora_layers(model):
        if adapter_name in layer.adapters:
            layer.delete_adapter(adapter_name)
            if len(layer.adapters) == 0:
                set_module(model, name, layer.base)
    for name, wrapper in saved_modules(model):
        if adapter_name in wrapper.copies:
            wrapper.copies.remove(adapter_name)
            if len(wrapper.copies) == 0:
                set_module(model, name, wrapper.original)
    configs = lora_configs(model)
    del configs[adapter_name]
    if configs:
        model.lora_configs = configs
        if active_adapter(model) == adapter_name:
            activate(model, next(iter(configs)))
    else:
        del model.lora_configs
        del model.active_adapter
        mark_trainable(model, None)
    return model


def combine_adapters(model, weights, new_name, method="cat", rank=None):
    """Add adapter `new_name` with ΔW = Σ wᵢ·scalingᵢ·Bᵢ·Aᵢ in every layer any of them adapts.

    weights: {adapter name: weight wᵢ}.
    method "cat": exact. A = [A₁; A₂; ...] (Σrᵢ, in), B = [w₁s₁B₁, w₂s₂B₂, ...] (out, Σrᵢ), scaling 1,
        so B·A = Σ wᵢsᵢBᵢAᵢ and the rank is Σrᵢ.
    method "svd": ΔW truncated to `rank` by its SVD, ΔW ≈ U_k·S_k·V_kᵀ, with B = U_k·√S_k and
        A = √S_k·V_kᵀ. (A layer whose stacked rank Σrᵢ is below `rank` keeps Σrᵢ: nothing to cut.)
    Returns {layer name: relative Frobenius error ‖ΔW − B·A‖/‖ΔW‖} of the new adapter in float64
    (0 for "cat"; for "svd" it equals sqrt(Σ discarded σ²) / sqrt(Σ σ²)). The new adapter is added,
    not activated. Adapters with modules_to_save cannot be combined (a head has no low-rank sum).
    """
    check_adapter_name(new_name)
    configs = lora_configs(model)
    if new_name in configs:
        raise ValueError(f"the model already has an adapter named {new_name!r}")
    if not isinstance(weights, dict) or not weights:
        raise TypeError(f"weights must be a non-empty dict {{adapter name: weight}}, got {weights!r}")
    for name, w in weights.items():
        _require(model, name)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"weights[{name!r}] must be a finite number, got {w!r}")
        if configs[name].use_dora:
            raise ValueError(f"adapter {name!r} is a DoRA adapter; its magnitude rescales W + s·B·A, so it "
                             "has no low-rank sum with others: only plain LoRA adapters can be combined")
        if configs[name].modules_to_save:
            raise ValueError(f"adapter {name!r} has modules_to_save {configs[name].modules_to_save}; "
                             "only pure LoRA adapters can be combined")
    if method not in ("cat", "svd"):
        raise ValueError(f"method must be 'cat' or 'svd', got {method!r}")
    if method == "cat" and rank is not None:
        raise ValueError("rank is only for method='svd' ('cat' keeps the summed rank)")
    if method == "svd" and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"method='svd' needs rank, an int >= 1, got {rank!r}")

    new_factors, errors = {}, {}
    for name, layer in lora_layers(model):
        present = [(n, w) for n, w in weights.items() if n in layer.adapters]
        if not present:
            continue
        if method == "svd" and rank > min(layer.in_features, layer.out_features):
            raise ValueError(f"rank={rank} exceeds min(in, out) = "
                             f"{min(layer.in_features, layer.out_features)} of {name}")
        lora_A, lora_B = _stack(layer, present)
        if method == "cat" and lora_A.shape[0] > min(layer.in_features, layer.out_features):
            raise ValueError(f"the stacked rank {lora_A.shape[0]} exceeds min(in, out) = "
                             f"{min(layer.in_features, layer.out_features)} of {name}; use method='svd'")
        if method == "cat":
            new_factors[name], errors[name] = (lora_A, lora_B), 0.0
        else:
            new_factors[name], errors[name] = _truncate(lora_A, lora_B, rank)

    for name, (lora_A, lora_B) in new_factors.items():
        layer = get_module(model, name)
        xp = backend.xp_of(layer.base.weight.data)
        dtype = layer.base.weight.dtype
        layer.add_adapter(new_name, LoRAAdapter(Parameter(xp.asarray(lora_A, dtype=dtype)),
                                                Parameter(xp.asarray(lora_B, dtype=dtype)), scaling=1.0))
    configs[new_name] = _combined_config(new_factors)
    model.lora_configs = configs
    mark_trainable(model, active_adapter(model))
    return errors


def _stack(layer, present):
    """Float64 NumPy factors (Σrᵢ, in) and (out, Σrᵢ) with B·A = Σ wᵢ·sᵢ·Bᵢ·Aᵢ."""
    blocks_A, blocks_B = [], []
    for name, w in present:
        adapter = layer.adapters[name]
        blocks_A.append(adapter.lora_A.numpy().astype(np.float64))
        blocks_B.append(adapter.lora_B.numpy().astype(np.float64) * (w * adapter.scaling))
    return np.concatenate(blocks_A, axis=0), np.concatenate(blocks_B, axis=1)


def _truncate(lora_A, lora_B, rank):
    """The best rank-`rank` factors of B·A (Eckart-Young) and the relative error they leave."""
    delta = lora_B @ lora_A                                    # (out, in)
    U, S, Vt = np.linalg.svd(delta, full_matrices=False)
    k = min(rank, lora_A.shape[0])
    root = np.sqrt(S[:k])
    total = float(np.sum(S ** 2))
    error = math.sqrt(float(np.sum(S[k:] ** 2)) / total) if total > 0 else 0.0
    return (root[:, None] * Vt[:k], U[:, :k] * root), error


def _combined_config(factors):
    """A config that rebuilds the combined adapter's shapes: exact layer names, per-layer ranks,
    alpha = r so that scaling = 1 (the weights already carry every factor)."""
    ranks = {name: lora_A.shape[0] for name, (lora_A, _) in factors.items()}
    common = max(set(ranks.values()), key=list(ranks.values()).count)
    other = {name: r for name, r in ranks.items() if r != common}
    return LoRAConfig(r=common, alpha=common, target_modules=tuple(ranks), rank_pattern=other,
                      alpha_pattern=dict(other))


def _require(model, adapter_name):
    configs = lora_configs(model)
    if adapter_name not in configs:
        raise ValueError(f"no adapter named {adapter_name!r}; the model's adapters are {list(configs)}")
