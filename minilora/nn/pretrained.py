"""GPT-2 from a Hugging Face checkpoint: config.json + model.safetensors -> minilora's GPT.

    model = GPT.from_pretrained("minilora_runs/gpt2")       # a folder holding both files

minilora's GPT is GPT-2's architecture; only the way the weights are stored differs:

    GPT-2 (GPT2LMHeadModel)              minilora                    conversion
    transformer.wte / wpe                wte / wpe                   as is
    transformer.h.{i}.ln_1 / ln_2        h.{i}.ln_1 / ln_2           as is
    transformer.h.{i}.attn.c_attn        h.{i}.attn.q_proj, k_proj,  split the output in three
                                           v_proj                      (q first, then k, then v)
    transformer.h.{i}.attn.c_proj        h.{i}.attn.o_proj           transpose
    transformer.h.{i}.mlp.c_fc / c_proj  h.{i}.mlp.fc_in / fc_out    transpose
    transformer.ln_f                     ln_f                        as is
    lm_head (tied to wte)                lm_head (a copy of wte)     as is

GPT-2's attention and MLP layers are "Conv1D" modules: a Linear whose weight is stored (in, out),
y = x·W + b, where minilora's Linear stores (out, in), y = x·Wᵀ + b; hence the transposes. The
real gpt2 model.safetensors names its tensors without the "transformer." prefix ("h.0.attn.c_attn
.weight"); models saved by transformers' save_pretrained have it. Both are read.

The files are read with the safetensors package's NumPy API: no PyTorch anywhere. The same name
table (`gpt2_module`) serves minilora.lora.peft, which writes adapters under GPT-2's names.
"""

import collections
import json
import os
import re

import numpy as np

from minilora import backend

LAYOUT = "gpt2"  # the value of model.pretrained_layout for a model loaded here

# Inside block i: minilora module -> (GPT-2 module, which third of c_attn's output, or None)
_BLOCK = {
    "ln_1": ("ln_1", None),
    "attn.q_proj": ("attn.c_attn", 0),
    "attn.k_proj": ("attn.c_attn", 1),
    "attn.v_proj": ("attn.c_attn", 2),
    "attn.o_proj": ("attn.c_proj", None),
    "ln_2": ("ln_2", None),
    "mlp.fc_in": ("mlp.c_fc", None),
    "mlp.fc_out": ("mlp.c_proj", None),
}
_TOP = {"wte": "transformer.wte", "wpe": "transformer.wpe", "ln_f": "transformer.ln_f", "lm_head": "lm_head"}
_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
_BLOCK_NAME = re.compile(r"h\.(\d+)\.(.+)")
# Older checkpoints also store each block's causal mask as a tensor; minilora builds its own.
_MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
# GPT-2's "gelu_new" and "gelu_pytorch_tanh" are both the tanh approximation that minilora's gelu uses.
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")

GPT2Module = collections.namedtuple("GPT2Module", ["name", "part", "conv1d"])
GPT2Module.__doc__ = """Where a minilora module lives in GPT2LMHeadModel: name ("transformer.h.0.attn.c_attn"),
part (0, 1, 2: the third of c_attn's output that is q, k or v; None for a whole module) and
conv1d (True where GPT-2 stores the weight transposed, (in, out))."""


def gpt2_module(name):
    """The GPT2Module for minilora module `name` ("h.0.attn.q_proj", "lm_head", ...)."""
    if name in _TOP:
        return GPT2Module(_TOP[name], None, False)
    match = _BLOCK_NAME.fullmatch(name)
    if match and match.group(2) in _BLOCK:
        inner, part = _BLOCK[match.group(2)]
        return GPT2Module(f"transformer.h.{match.group(1)}.{inner}", part, inner in _CONV1D)
    raise ValueError(f"{name!r} is not a module of minilora's GPT that GPT-2 has (expected one of "
                     f"{sorted(_TOP)} or h.<i>.{{{', '.join(_BLOCK)}}})")


def minilora_modules(gpt2_name, n_layer):
    """The inverse of gpt2_module: [minilora module names] for a GPT2LMHeadModel module
    (three for c_attn: q, k, v in order). Raises ValueError for a name minilora has no module for."""
    for ours, theirs in _TOP.items():
        if gpt2_name == theirs:
            return [ours]
    match = re.fullmatch(r"transformer\.h\.(\d+)\.(.+)", gpt2_name)
    if match and int(match.group(1)) < n_layer:
        found = [f"h.{match.group(1)}.{ours}" for ours, (theirs, _) in _BLOCK.items() if theirs == match.group(2)]
        if found:
            return found
    raise ValueError(f"{gpt2_name!r} is not a module of a GPT-2 with {n_layer} blocks that minilora has "
                     f"(expected {sorted(_TOP.values())} or transformer.h.<i>.{{ln_1, attn.c_attn, attn.c_proj, "
                     f"ln_2, mlp.c_fc, mlp.c_proj}})")


# ---- the config -----------------------------------------------------------------------------------
def config_from_gpt2(hf, source="config.json"):
    """A GPTConfig from GPT-2's config.json (a dict). Raises ValueError naming the first field whose
    value minilora's GPT cannot express (another activation, LayerNorm eps, MLP width, ...)."""
    from minilora.nn.gpt import GPTConfig  # gpt.py imports this module for from_pretrained

    if not isinstance(hf, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(hf).__name__}")
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{source}: model_type is {hf['model_type']!r}; minilora reads GPT-2 checkpoints "
                         "(model_type 'gpt2')")
    missing = [k for k in ("n_embd", "n_head", "n_layer", "n_positions", "vocab_size") if k not in hf]
    if missing:
        raise ValueError(f"{source}: missing {missing}; a GPT-2 config.json has n_embd, n_head, n_layer, "
                         "n_positions and vocab_size")
    # field: (value minilora's GPT has, why)
    fixed = {
        "layer_norm_epsilon": (1e-5, "minilora's LayerNorms use eps 1e-5"),
        "n_inner": (None, "minilora's MLP is 4·n_embd wide (n_inner null or 4·n_embd)"),
        "scale_attn_weights": (True, "minilora scales the scores by 1/sqrt(head_dim)"),
        "scale_attn_by_inverse_layer_idx": (False, "minilora does not scale attention by the layer index"),
        "add_cross_attention": (False, "minilora's GPT is decoder-only, without cross-attention"),
    }
    for key, (expected, why) in fixed.items():
        value = hf.get(key, expected)
        if key == "n_inner" and value == 4 * hf["n_embd"]:
            continue
        if value != expected:
            raise ValueError(f"{source}: {key}={value!r} cannot be expressed: {why}")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in TANH_GELUS:
        raise ValueError(f"{source}: activation_function={activation!r} cannot be expressed: minilora's "
                         f"GELU is the tanh approximation ({' or '.join(TANH_GELUS)})")
    # Dropout is not copied: the LoRA fine-tunes here use LoRA's own dropout on a frozen model.
    return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                     n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=0.0, bias=True)


# ---- the files ------------------------------------------------------------------------------------
def checkpoint_files(path):
    """(config.json path, model.safetensors path) for `path`, a folder holding both or the
    .safetensors file itself with config.json beside it."""
    path = os.fspath(path)
    if os.path.isdir(path):
        weights = os.path.join(path, "model.safetensors")
    elif path.endswith(".safetensors"):
        weights = path
    else:
        raise ValueError(f"path must be a folder with config.json and model.safetensors, or a .safetensors "
                         f"file, got {path!r}")
    config = os.path.join(os.path.dirname(os.path.abspath(weights)), "config.json")
    for needed in (config, weights):
        if not os.path.isfile(needed):
            raise FileNotFoundError(f"{needed} not found (a GPT-2 checkpoint is config.json + model.safetensors; "
                                    "minilora.hub.fetch_gpt2 downloads them)")
    return config, weights


def read_safetensors(path):
    """{name: NumPy array} of a .safetensors file, and its header metadata ({str: str})."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="np") as f:
            return {name: f.get_tensor(name) for name in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: cannot be read as a .safetensors file ({type(exc).__name__}: {exc})") from exc


def gpt2_state_dict(tensors, model, source="model.safetensors"):
    """{minilora parameter name: array} for `model` (a GPT) from GPT-2's tensors ({name: array},
    with or without the "transformer." prefix). Raises ValueError naming every missing tensor,
    unexpected tensor or shape that does not fit."""
    tensors = {name.removeprefix("transformer."): array for name, array in tensors.items()}
    problems, used, state = [], set(), {}
    for name, p in model.named_parameters():
        module, _, param = name.rpartition(".")
        where = gpt2_module(module)
        key = f"{where.name.removeprefix('transformer.')}.{param}"
        if key == "lm_head.weight" and key not in tensors:
            key = "wte.weight"  # GPT-2 ties the output head to the token embeddings
        if key not in tensors:
            problems.append(f"missing tensor {key!r} (for {name})")
            continue
        used.add(key)
        array = tensors[key]
        parts = 1 if where.part is None else 3
        out_features = p.shape[0]
        if where.conv1d and param == "weight":
            expected = (p.shape[1], parts * out_features)  # Conv1D stores (in, out)
        else:
            expected = (parts * out_features,) + tuple(p.shape[1:])
        if tuple(array.shape) != expected:
            problems.append(f"tensor {key!r} has shape {tuple(array.shape)}, {name} needs {expected}")
            continue
        if array.dtype.kind != "f":
            problems.append(f"tensor {key!r} has dtype {array.dtype}, expected a floating dtype")
            continue
        if where.conv1d and param == "weight":
            array = array.T
        if where.part is not None:
            array = array[where.part * out_features:(where.part + 1) * out_features]
        state[name] = np.ascontiguousarray(array, dtype=p.dtype)
    unexpected = sorted(k for k in tensors if k not in used and not _MASK_BUFFER.fullmatch(k))
    problems += [f"unexpected tensor {k!r} (minilora's GPT has no place for it)" for k in unexpected]
    if problems:
        raise ValueError(f"{source} does not fit a GPT with {model.config}:\n  " + "\n  ".join(problems))
    return state


def load_gpt2(path, dtype="float32"):
    """A GPT holding the weights of the GPT-2 checkpoint at `path` (see checkpoint_files), with
    parameters in `dtype`. The model is marked `model.pretrained_layout = "gpt2"`, so that
    minilora.lora.save_peft_adapter writes its adapters under GPT-2's module names."""
    from minilora.nn.gpt import GPT

    dtype = backend.parse_dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating dtype such as 'float32', got {dtype}")
    config_path, weights_path = checkpoint_files(path)
    with open(config_path, encoding="utf-8") as f:
        try:
            hf_config = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config_path}: not valid JSON ({exc})") from exc
    model = GPT(config_from_gpt2(hf_config, config_path)).to(dtype=dtype)
    tensors, _ = read_safetensors(weights_path)
    model.load_state_dict(gpt2_state_dict(tensors, model, weights_path))
    model.pretrained_layout = LAYOUT
    return model
