"""LoRALinear: a frozen Linear plus low-rank adapters, y = x·Wᵀ + b + scaling·(x·Aᵀ)·Bᵀ.

Data path: x (..., in) goes through the one fused op F.lora_linear, whose forward and backward run
on the best kernel available (NumPy reference, C++ or CUDA). W (out, in) and b stay frozen; only
A (r, in) and B (out, r) of the active adapter receive gradients. B starts at zero, so a fresh
adapter computes the base layer's function (up to the rounding of the fused kernel's sums).

LoRA dropout drops input features on the path through A only (the paper's lora_dropout):
    y = x·Wᵀ + b + scaling·(dropout(x)·Aᵀ)·Bᵀ
The fused op takes a single x, so with dropout active (training, p > 0) the layer adds the two
paths with ordinary ops: base(x) + ((dropout(x) @ Aᵀ) @ Bᵀ)·scaling. That is the same formula,
exactly; the fused op is used whenever the two x's are the same (p = 0, or in eval mode).

A layer holds several named adapters; one is active, and all of them can be switched off
(`disabled`). merge() folds the active adapter into W for inference (W' = W + scaling·B·A) and keeps
the original W, so unmerge() puts back the very same array: no rounding drift however often one
merges and unmerges. Saving and loading see the unmerged W (see `unmerged`): state_dict() of a
merged layer holds W, A and B, never W', and load_state_dict into a merged layer loads W, A and B
and merges again, so a checkpoint taken while merged reloads exactly, without the adapter twice.

Variants (each explained in its own file): DoRA (dora.py) gives the adapter a magnitude
`lora_magnitude` (out,) and rescales every output row; a QLoRA base (minilora.quant.NF4Linear)
keeps W in 4 bits and hands the fused op an NF4Tensor. Merging such a base dequantizes it: the
merged layer holds a float W', and unmerge() puts the very same NF4 base back.
"""

import contextlib
import math
import numbers

import numpy as np

from minilora import backend, random
from minilora import functional as F
from minilora.lora import dora
from minilora.lora.adapter_dict import AdapterDict
from minilora.lora.config import INITS, check_alpha, check_flag, scaling as lora_scaling
from minilora.nn import Linear, Module, Parameter
from minilora.nn import parameter
from minilora.nn.checks import probability
from minilora.quant.linear import NF4Linear
from minilora.tensor import is_grad_enabled


class LoRAAdapter(Module):
    """One adapter: lora_A (r, in), lora_B (out, r), its scaling and its dropout probability;
    with DoRA also lora_magnitude (out,) (see dora.py), else None."""

    def __init__(self, lora_A, lora_B, scaling, dropout=0.0, lora_magnitude=None):
        super().__init__()
        if lora_A.ndim != 2 or lora_B.ndim != 2 or lora_B.shape[1] != lora_A.shape[0]:
            raise ValueError(f"lora_A must be (r, in) and lora_B (out, r) with the same r, got "
                             f"{lora_A.shape} and {lora_B.shape}")
        if not math.isfinite(scaling):
            raise ValueError(f"scaling must be a finite number, got {scaling!r}")
        dropout = probability("dropout", dropout)
        self.lora_A = lora_A if isinstance(lora_A, Parameter) else Parameter(lora_A)
        self.lora_B = lora_B if isinstance(lora_B, Parameter) else Parameter(lora_B)
        self.scaling = float(scaling)
        self.dropout = float(dropout)
        if lora_magnitude is not None and tuple(lora_magnitude.shape) != (lora_B.shape[0],):
            raise ValueError(f"lora_magnitude must be (out,) = ({lora_B.shape[0]},), got {lora_magnitude.shape}")
        self.lora_magnitude = None if lora_magnitude is None else (
            lora_magnitude if isinstance(lora_magnitude, Parameter) else Parameter(lora_magnitude))

    @property
    def r(self):
        return self.lora_A.shape[0]

    def extra_repr(self):
        dora_note = ", DoRA" if self.lora_magnitude is not None else ""
        return f"r={self.r}, scaling={self.scaling:g}, dropout={self.dropout:g}{dora_note}"


def new_adapter(in_features, out_features, r, alpha, dropout=0.0, use_rslora=False, init="gaussian",
                dtype="float32", device="cpu"):
    """A fresh adapter: B = 0 and A drawn as `init` says (see LoRAConfig for the two choices)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "pissa":
        raise ValueError("init='pissa' starts from W's singular vectors and changes W: use apply_lora with "
                         "LoRAConfig(init='pissa'), or minilora.lora.pissa.pissa_init on a layer")
    alpha = check_alpha("alpha", alpha)
    check_flag("use_rslora", use_rslora)
    if init == "gaussian":
        lora_A = random.randn((r, in_features), dtype, device) * (1.0 / math.sqrt(in_features))
    else:
        bound = 1.0 / math.sqrt(in_features)
        lora_A = (random.rand((r, in_features), dtype, device) * 2.0 - 1.0) * bound
    lora_B = parameter.zeros((out_features, r), dtype, device)
    return LoRAAdapter(Parameter(lora_A), lora_B, lora_scaling(alpha, r, use_rslora), dropout)


class LoRALinear(Module):
    """A frozen `base` Linear with LoRA adapters. x: (..., in_features) -> y: (..., out_features).

    LoRALinear(Linear(64, 32), r=4, alpha=8) wraps the layer with one adapter, "default", active;
    r=None wraps it with no adapter yet (apply_lora adds them with add_adapter).
    `.lora_A`, `.lora_B`, `.scaling`, `.r`, `.dropout`, `.lora_magnitude` are those of the active
    adapter. base may be an NF4Linear (a 4-bit frozen W); use_dora=True gives the adapter a magnitude.
    """

    def __init__(self, base, r=8, alpha=16, dropout=0.0, use_rslora=False, init="gaussian",
                 adapter_name="default", use_dora=False):
        super().__init__()
        if not isinstance(base, (Linear, NF4Linear)):
            raise TypeError(f"LoRALinear wraps a Linear (or an NF4Linear), got {type(base).__name__}")
        if r is not None and (isinstance(r, bool) or not isinstance(r, numbers.Integral)
                              or not 1 <= r <= min(base.in_features, base.out_features)):
            raise ValueError(f"r must be an int in [1, min(in, out)] = [1, "
                             f"{min(base.in_features, base.out_features)}] for this layer, got {r!r}")
        check_flag("use_dora", use_dora)
        self.base = base
        base.requires_grad_(False)  # W and b are frozen; apply_lora may unfreeze b (LoRAConfig.bias)
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.adapters = AdapterDict()
        self.active_adapter = adapter_name
        self.disabled = False
        self.merged_adapter = None
        self._unmerged_weight = None
        self._quantized_base = None  # the NF4Linear while merged (the merged W' is float)
        if r is not None:
            adapter = new_adapter(self.in_features, self.out_features, int(r), alpha, dropout, use_rslora, init,
                                  base.weight.dtype, base.weight.device)
            if use_dora:
                dora.init_magnitude(base, adapter)
            self.add_adapter(adapter_name, adapter)

    # ---- the active adapter ------------------------------------------------------------------
    def add_adapter(self, name, adapter):
        """Add a LoRAAdapter under `name` (it does not become active)."""
        if not isinstance(adapter, LoRAAdapter):
            raise TypeError(f"add_adapter needs a LoRAAdapter, got {type(adapter).__name__}")
        expected = (adapter.r, self.in_features), (self.out_features, adapter.r)
        if (adapter.lora_A.shape, adapter.lora_B.shape) != expected:
            raise ValueError(f"adapter {name!r} has lora_A {adapter.lora_A.shape} and lora_B "
                             f"{adapter.lora_B.shape}; this layer needs {expected[0]} and {expected[1]}")
        w = self.base.weight
        if adapter.lora_A.dtype != w.dtype or adapter.lora_A.device != w.device:
            raise TypeError(f"adapter {name!r} is {adapter.lora_A.dtype} on {adapter.lora_A.device}, the "
                            f"layer's weight is {w.dtype} on {w.device}")
        self.adapters.add(name, adapter)

    def delete_adapter(self, name):
        if self.merged_adapter == name:
            raise RuntimeError(f"adapter {name!r} is merged into the weight; unmerge() before deleting it")
        self.adapters.remove(name)

    @property
    def active(self):
        """The LoRAAdapter that forward uses, or None (disabled, or this layer lacks the active one)."""
        if self.disabled or self.active_adapter not in self.adapters:
            return None
        return self.adapters[self.active_adapter]

    def _require_active(self):
        if self.active_adapter not in self.adapters:
            # Not AttributeError: raised inside a property, Python would swallow it into __getattr__.
            raise RuntimeError(f"this LoRALinear has no adapter named {self.active_adapter!r} (its "
                                 f"adapters are {self.adapters.names()})")
        return self.adapters[self.active_adapter]

    @property
    def lora_A(self):
        return self._require_active().lora_A

    @property
    def lora_B(self):
        return self._require_active().lora_B

    @property
    def scaling(self):
        return self._require_active().scaling

    @property
    def r(self):
        return self._require_active().r

    @property
    def lora_magnitude(self):
        """DoRA's magnitude m (out,) of the active adapter, or None for a plain LoRA adapter."""
        return self._require_active().lora_magnitude

    @property
    def dropout(self):
        return self._require_active().dropout

    @property
    def weight(self):
        """The base layer's weight W (out, in), frozen (merged into, while merged)."""
        return self.base.weight

    @property
    def bias(self):
        return self.base.bias

    @property
    def merged(self):
        return self.merged_adapter is not None

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, x):
        if self.merged:
            if self.disabled:
                raise RuntimeError("this LoRALinear is disabled but has adapter "
                                   f"{self.merged_adapter!r} merged into its weight; unmerge() first")
            if self.training and is_grad_enabled():
                raise RuntimeError(f"adapter {self.merged_adapter!r} is merged into the weight, so its A and B "
                                   "would get no gradient: unmerge() before training, or run inference "
                                   "under model.eval() / minilora.no_grad()")
            return self.base(x)
        adapter = self.active
        if adapter is None:
            return self.base(x)
        if adapter.lora_magnitude is not None:
            return dora.dora_forward(self.base, adapter, x, adapter.dropout > 0.0 and self.training)
        if adapter.dropout == 0.0 or not self.training:
            return F.lora_linear(x, dora.frozen_weight(self.base), adapter.lora_A, adapter.lora_B, adapter.scaling,
                                 bias=self.base.bias)
        dropped = F.dropout(x, adapter.dropout, True)
        return self.base(x) + ((dropped @ adapter.lora_A.T) @ adapter.lora_B.T) * adapter.scaling

    # ---- merging -------------------------------------------------------------------------------
    def delta_weight(self, name=None, dtype=None):
        """scaling·B·A of adapter `name` (default: the active one), an array (out, in).

        Computed in float64 (or `dtype`), so that merging adds one rounding, not two.
        """
        adapter = self.adapters[name] if name is not None else self._require_active()
        dtype = backend.parse_dtype(dtype or "float64")
        return (adapter.lora_B.data.astype(dtype) @ adapter.lora_A.data.astype(dtype)) * adapter.scaling

    def merge(self):
        """Fold the active adapter into the weight: W <- W + scaling·B·A (for inference); with DoRA
        W <- (m / ‖W + s·B·A‖) ⊙ (W + s·B·A). An NF4 base becomes a float Linear holding the result.

        The merged weight is checked for NaN/inf first; if it has any, merge raises ValueError and
        W is untouched. The original W is kept for unmerge().
        """
        if self.merged:
            raise RuntimeError(f"adapter {self.merged_adapter!r} is already merged; unmerge() first")
        self._require_active()
        self._merge(self.active_adapter)

    def _merge(self, adapter_name):
        adapter = self.adapters[adapter_name]
        float_base = self.base.dequantized_linear() if isinstance(self.base, NF4Linear) else self.base
        weight = float_base.weight
        xp = backend.xp_of(weight.data)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # reported just below
            if adapter.lora_magnitude is not None:
                merged = dora.merged_weight(float_base, adapter, xp.float64).astype(weight.dtype)
            else:
                merged = (weight.data.astype(xp.float64) + self.delta_weight(adapter_name)).astype(weight.dtype)
        if not bool(xp.isfinite(merged).all()):
            raise ValueError(f"merging adapter {adapter_name!r} would put NaN or inf into the weight "
                             "(the adapter's A or B holds non-finite values, or the sum overflows); "
                             "the weight was left unchanged")
        if float_base is not self.base:
            self._quantized_base, self.base = self.base, float_base
        self._unmerged_weight = weight.data
        weight.data = merged
        self.merged_adapter = adapter_name

    def unmerge(self):
        """Put back the weight exactly as it was before merge() (the same array, bit for bit; after a
        .to() while merged, that array moved or cast as the rest of the layer was)."""
        if not self.merged:
            raise RuntimeError("unmerge() called on a LoRALinear that is not merged")
        self.base.weight.data = self._unmerged_weight
        self._unmerged_weight = None
        self.merged_adapter = None
        if self._quantized_base is not None:
            self.base, self._quantized_base = self._quantized_base, None

    def _converted(self, convert, device, dtype):
        # Module.to moved or cast the merged weight; the weight unmerge() puts back goes with it,
        # so that unmerge() still restores W (exactly, unless a cast to float32 rounds it).
        if self._unmerged_weight is not None:
            self._unmerged_weight = convert(self._unmerged_weight)

    @contextlib.contextmanager
    def unmerged(self):
        """Unmerged inside the block, merged again (the same adapter, with the weights the block
        leaves, e.g. loaded ones) after it: how state_dict and load_state_dict see a merged layer."""
        adapter_name = self.merged_adapter
        if adapter_name is None:
            yield
            return
        self.unmerge()
        try:
            yield
        finally:
            try:
                self._merge(adapter_name)
            except ValueError as exc:
                raise ValueError(f"adapter {adapter_name!r} could not be merged back into the weight "
                                 f"after loading, so this layer is left unmerged: {exc}") from None

    def extra_repr(self):
        state = "merged" if self.merged else ("disabled" if self.disabled else "active")
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"active_adapter={self.active_adapter!r} ({state})")
