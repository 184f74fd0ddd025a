"""Checkpoints: a whole model's parameters and configuration in one file, through minilora.io.

    save_checkpoint(model, "runs/add/model", extra={"step": 800})   -> "runs/add/model.npz"
    model = load_checkpoint("runs/add/model.npz")                   # a GPT rebuilt from its config
    load_checkpoint("runs/add/model.npz", model=other)              # or loaded into a model you have

The file holds model.state_dict() (every parameter, as NumPy arrays: a model on "cuda" is copied
to the CPU to be saved; a model with merged LoRA adapters gives its unmerged weights, so the file
is the same merged or not) and, as metadata, the model's GPTConfig and a free-form JSON `extra`
(the step, the tokenizer's characters, a training history). Saving is atomic and loading checks
the file's checksum (minilora.io), then Module.load_state_dict checks every name, shape and dtype
against the model and lists each difference before any parameter is changed.
"""

import collections
import dataclasses

from minilora import io
from minilora.nn import GPT, GPTConfig
from minilora.quant.linear import NF4Linear

FORMAT = "minilora-checkpoint"
VERSION = 1

Checkpoint = collections.namedtuple("Checkpoint", ["state", "config", "extra"])
Checkpoint.__doc__ = """What read_checkpoint returns: state {name: NumPy array}, config (a dict, or None), extra (a dict)."""


def save_checkpoint(model, path, config=None, extra=None):
    """Write model's parameters, `config` (default: model.config, a dataclass or dict) and `extra`
    (a JSON-serialisable dict) to `path` (".npz" appended if missing). Returns the path written."""
    config = getattr(model, "config", None) if config is None else config
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dataclass, a dict or None, got {type(config).__name__}")
    # An NF4 base keeps its weight outside the parameters, so a checkpoint would silently lose it.
    quantized = [name for name, module in model.named_modules() if isinstance(module, NF4Linear)]
    if quantized:
        raise ValueError(f"model has NF4 (4-bit) base layers, whose weights a checkpoint does not hold: "
                         f"{quantized[:3]}{' ...' if len(quantized) > 3 else ''}; save the float base model "
                         "before quantizing it and the adapter with save_adapter, which quantizes that base "
                         "again when loaded")
    metadata = {"format": FORMAT, "version": VERSION, "model": type(model).__name__,
                "config": config, "extra": {} if extra is None else extra}
    return io.save_arrays(path, model.state_dict(), metadata)


def read_checkpoint(path):
    """Read and check a checkpoint file without building a model -> Checkpoint(state, config, extra)."""
    state, metadata = io.load_arrays(path)
    if metadata.get("format") != FORMAT:
        raise io.ArrayFileError(f"{path}: not a minilora checkpoint (format {metadata.get('format')!r}, "
                                f"expected {FORMAT!r}); adapter files are read by minilora.lora.load_adapter")
    if metadata.get("version") != VERSION:
        raise io.ArrayFileError(f"{path}: checkpoint version {metadata.get('version')!r}; this minilora reads {VERSION}")
    return Checkpoint(state, metadata.get("config"), metadata.get("extra") or {})


def load_checkpoint(path, model=None, device=None):
    """Load the checkpoint at `path` into `model`, or, when model is None, into a new GPT built from
    the saved config (in the saved dtype). device: move the model there after loading. Returns the model.

    Raises ValueError listing every missing, unexpected or mismatched (shape, dtype) parameter
    when the file does not fit the model; the model is left unchanged then.
    """
    state, config, _ = read_checkpoint(path)
    if model is None:
        if config is None:
            raise ValueError(f"{path} has no saved config, so the model cannot be rebuilt; pass model=")
        model = GPT(GPTConfig(**config))
        dtypes = {a.dtype for a in state.values() if a.dtype.kind == "f"}
        if len(dtypes) == 1:
            model.to(dtype=dtypes.pop())
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise ValueError(f"{path} does not fit the model: {exc}") from None
    if device is not None:
        model.to(device=device)
    return model
