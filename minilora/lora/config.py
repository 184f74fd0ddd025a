"""LoRAConfig: which Linear layers get an adapter, with what rank, scaling and initialisation.

A config is plain data, checked when it is made (so a typo fails before any model is touched) and
written to JSON next to the adapter weights, so that `load_adapter` can rebuild the same adapter.
Checks that need the model (does `q_proj` exist? is r <= min(in, out)?) live in targets.py, which
apply_lora and the parameter counter share.

The update of a targeted layer is  ΔW = scaling · B·A  with A (r, in) and B (out, r):
    scaling = alpha / r          (the paper)
    scaling = alpha / sqrt(r)    (rsLoRA: keeps the update's size steady as r grows)

Variants of the same update: DoRA (use_dora, minilora/lora/dora.py), LoRA-FA (use_lora_fa: A stays
as initialised), PiSSA (init="pissa", minilora/lora/pissa.py), and QLoRA's 4-bit base
(base_quant="nf4", minilora/quant). LoRA+ is an optimizer setting (minilora/lora/lora_plus.py).
"""

import math
import numbers
import re
from dataclasses import asdict, dataclass, field, fields

from minilora.nn.checks import probability

INITS = ("gaussian", "kaiming", "pissa")
BASE_QUANTS = (None, "nf4")
BASE_QUANT_SCOPES = ("adapted", "all-linear")
BIASES = ("none", "all", "lora_only")
ALL_LINEAR = "all-linear"


@dataclass
class LoRAConfig:
    """What apply_lora does to a model.

    r: rank of every adapter (an int >= 1), unless rank_pattern says otherwise for a layer.
    alpha: numerator of the scaling (> 0).
    dropout: probability of dropping an input feature on the path through A only, in [0, 1).
    target_modules: which Linear layers get an adapter:
        a list of names or name suffixes ("q_proj" matches "h.0.attn.q_proj"; "attn.q_proj" too),
        one string, read as a regular expression matched against the whole name
        ("h\\.[01]\\.attn\\.(q|v)_proj"), or "all-linear" (every Linear but the output head).
    exclude_modules: names/suffixes or a regular expression, removed from the targets.
    modules_to_save: names/suffixes of modules that are trained in full and saved with the adapter
        (a new head, say); each adapter gets its own copy.
    use_rslora: scale by alpha/sqrt(r) instead of alpha/r.
    init: how A starts (B always starts at zero, so the adapted model starts equal to the base):
        "gaussian": A ~ N(0, 1/in_features): each component of u = x·Aᵀ then has the variance of one
                    input feature (the paper says "random Gaussian" without a variance);
        "kaiming":  A ~ U(-1/sqrt(in), 1/sqrt(in)), which is kaiming_uniform with a = sqrt(5), the
                    default of common LoRA libraries (same shape, a variance three times smaller).
        "pissa":    A and B from the top-r singular vectors of W, which keeps the rest (the
                    residual) so the layer's function is unchanged at the start (pissa.py); B ≠ 0.
    bias: which biases train: "none", "all" (every bias in the model) or "lora_only" (the biases of
        the adapted layers).
    layers_to_transform: block indices (the number in "h.3.attn.q_proj") to adapt; None means all.
    rank_pattern / alpha_pattern: {name or suffix: r} / {name or suffix: alpha} for layers that
        differ from r / alpha.
    use_dora: DoRA, a trainable magnitude `lora_magnitude` (out,) per adapted layer (dora.py).
    use_lora_fa: LoRA-FA, A frozen after its initialisation; only B (and m with DoRA) trains.
    base_quant: None, or "nf4" to store the frozen base weights in 4-bit NormalFloat (QLoRA).
    base_quant_block_size / base_quant_double: NF4's numbers per absmax (64 in QLoRA) and double
        quantization of the absmaxes (on in QLoRA: about 4.127 instead of 4.5 bits a weight).
    base_quant_scope: "adapted" quantizes the base of every adapted layer; "all-linear" also every
        other Linear but the output head (those carry no adapter and simply stay frozen in 4 bits).
    """

    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    target_modules: object = ("q_proj", "v_proj")
    exclude_modules: object = ()
    modules_to_save: tuple = ()
    use_rslora: bool = False
    init: str = "gaussian"
    bias: str = "none"
    layers_to_transform: object = None
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    use_dora: bool = False
    use_lora_fa: bool = False
    base_quant: object = None
    base_quant_block_size: int = 64
    base_quant_double: bool = True
    base_quant_scope: str = "adapted"

    def __post_init__(self):
        self.r = check_rank("r", self.r)
        self.alpha = check_alpha("alpha", self.alpha)
        self.dropout = probability("dropout", self.dropout)
        self.target_modules = _names_or_regex("target_modules", self.target_modules, allow_empty=False)
        self.exclude_modules = _names_or_regex("exclude_modules", self.exclude_modules, allow_empty=True)
        if self.exclude_modules == ALL_LINEAR:
            raise ValueError("exclude_modules cannot be 'all-linear' (nothing would be left to adapt)")
        self.modules_to_save = _names("modules_to_save", self.modules_to_save)
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.bias not in BIASES:
            raise ValueError(f"bias must be one of {BIASES}, got {self.bias!r}")
        if self.layers_to_transform is not None:
            layers = self.layers_to_transform
            layers = [layers] if isinstance(layers, int) else layers
            if isinstance(layers, str) or not all(_is_int(i) and i >= 0 for i in layers) or not layers:
                raise ValueError("layers_to_transform must be None or a non-empty list of block "
                                 f"indices (ints >= 0), got {self.layers_to_transform!r}")
            self.layers_to_transform = tuple(sorted(set(int(i) for i in layers)))
        self.rank_pattern = _pattern("rank_pattern", self.rank_pattern, check_rank)
        self.alpha_pattern = _pattern("alpha_pattern", self.alpha_pattern, check_alpha)
        for name in ("use_rslora", "use_dora", "use_lora_fa", "base_quant_double"):
            check_flag(name, getattr(self, name))
        if self.base_quant not in BASE_QUANTS:
            raise ValueError(f"base_quant must be one of {BASE_QUANTS}, got {self.base_quant!r}")
        if not _is_int(self.base_quant_block_size) or self.base_quant_block_size < 2:
            raise ValueError(f"base_quant_block_size must be an int >= 2, got {self.base_quant_block_size!r}")
        if self.base_quant_scope not in BASE_QUANT_SCOPES:
            raise ValueError(f"base_quant_scope must be one of {BASE_QUANT_SCOPES}, got {self.base_quant_scope!r}")

    # ---- per-layer values ----------------------------------------------------------------------
    def rank_for(self, name):
        """The rank of the adapter on the Linear called `name` (rank_pattern first, then r)."""
        return _lookup(self.rank_pattern, name, self.r)

    def alpha_for(self, name):
        return _lookup(self.alpha_pattern, name, self.alpha)

    def scaling_for(self, name):
        """alpha/r, or alpha/sqrt(r) with rsLoRA, for the Linear called `name`."""
        return scaling(self.alpha_for(name), self.rank_for(name), self.use_rslora)

    # ---- JSON ----------------------------------------------------------------------------------
    def to_dict(self):
        """Plain JSON-ready data (tuples become lists); from_dict(to_dict()) gives an equal config."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise TypeError(f"LoRAConfig.from_dict needs a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"LoRAConfig.from_dict: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)


def scaling(alpha, r, use_rslora=False):
    """The factor in front of B·A: alpha/r, or alpha/sqrt(r) with rsLoRA."""
    return float(alpha) / (math.sqrt(r) if use_rslora else r)


def matches_name(name, pattern):
    """True when `pattern` is `name` itself or a suffix of it made of whole dotted parts."""
    return name == pattern or name.endswith("." + pattern)


def _lookup(pattern_dict, name, default):
    for key, value in pattern_dict.items():
        if matches_name(name, key):
            return value
    return default


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


# ---- the checks an adapter's own arguments share (LoRALinear makes one without a config) --------
def check_rank(argname, r):
    """r as an int; ValueError unless it is an integer >= 1 (a NumPy integer too)."""
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 1:
        raise ValueError(f"{argname} must be an int >= 1, got {r!r}")
    return int(r)


def check_alpha(argname, alpha):
    """alpha as an int or float; ValueError unless it is a finite real number > 0 (NumPy's too)."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0 \
            or not math.isfinite(alpha):
        raise ValueError(f"{argname} must be a finite number > 0, got {alpha!r}")
    return int(alpha) if isinstance(alpha, numbers.Integral) else float(alpha)


def check_flag(argname, value):
    """TypeError unless value is True or False: a string like "no" would be read as True."""
    if not isinstance(value, bool):
        raise TypeError(f"{argname} must be True or False, got {value!r}")


def _names(argname, value):
    """A list/tuple of non-empty strings, as a tuple."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{argname} must be a list of module names, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item:
            raise TypeError(f"{argname} entries must be non-empty strings, got {item!r} in {value!r}")
    return tuple(value)


def _names_or_regex(argname, value, allow_empty):
    """A regular expression (one string) or a tuple of names/suffixes."""
    if isinstance(value, str):
        if value == ALL_LINEAR:
            return value
        if not value:
            raise ValueError(f"{argname} must not be an empty string")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{argname} {value!r} is read as a regular expression and does not "
                             f"compile: {exc}") from exc
        return value
    names = _names(argname, value)
    if not names and not allow_empty:
        raise ValueError(f"{argname} must name at least one module, got {value!r}")
    return names


def _pattern(argname, value, check):
    if not isinstance(value, dict):
        raise TypeError(f"{argname} must be a dict {{module name or suffix: value}}, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"{argname} keys must be non-empty module names, got {key!r}")
    return {key: check(f"{argname}[{key!r}]", item) for key, item in value.items()}
