"""Optimizer: the base class that holds parameter groups and per-parameter state.

    optimizer = AdamW(model.parameters(), lr=3e-4)                     # one group
    optimizer = AdamW([{"params": decay, "weight_decay": 0.1},           # groups with their own
                       {"params": no_decay, "weight_decay": 0.0}], lr=3e-4)   # options

A group is a dict with "params" and options (lr, weight_decay, ...); options missing from a group
come from the optimizer's defaults. A learning-rate schedule changes `group["lr"]` between steps.
`step()` updates, in place and outside the graph, the raw array of every parameter that has a
gradient; a parameter whose grad is None (frozen, or not used this step) is left alone and gets no
state, which is why fine-tuning only LoRA's small matrices also keeps the optimizer small.
"""

import numpy as np

from minilora import backend
from minilora.checks import check_number
from minilora.nn.module import Module
from minilora.tensor import Tensor, no_grad

# Keys a group may carry besides the optimizer's options: "params", and a "name" for logging.
_GROUP_KEYS = ("params", "name")


class Optimizer:
    def __init__(self, params, defaults):
        if isinstance(params, (Tensor, Module)):
            raise TypeError(f"an optimizer needs an iterable of parameters or of group dicts, got a "
                            f"{type(params).__name__}; pass model.parameters()")
        self.defaults = defaults
        self.param_groups = []
        # id(parameter) -> {name: array or number}, made at the parameter's first update.
        # Keyed by id because Tensors compare elementwise, not by identity.
        self.state = {}
        params = list(params)
        if not params:
            raise ValueError("the optimizer got an empty list of parameters")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a dict {"params": [...], option: value, ...}; missing options take the defaults."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"a parameter group must be a dict with a 'params' entry, got {group!r}")
        self._check_option_names(group, "a parameter group")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if not isinstance(p, Tensor) or p.dtype.kind != "f":
                raise TypeError(f"parameter {i} of a group must be a floating Tensor, got {p!r}")
            if id(p) in taken:
                raise ValueError(f"parameter {i} of the new group (shape {p.shape}) is listed twice; "
                                 "each parameter may appear once, in one group")
            taken.add(id(p))
        full = {**self.defaults, **group, "params": params}
        self.check_options(full)
        self.param_groups.append(full)

    def _check_option_names(self, group, where):
        unknown = [k for k in group if k not in _GROUP_KEYS and k not in self.defaults]
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} in {where} of {type(self).__name__}; "
                             f"its options are {sorted(self.defaults)}")

    def check_options(self, group):
        """Raise a clear error for a bad option value; subclasses check their own options."""
        check_number("lr", group["lr"], low=0.0)

    def parameters(self):
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self):
        """Set every parameter's grad to None, so the next backward starts from nothing."""
        for p in self.parameters():
            p.grad = None

    def step(self):
        """Update every parameter that has a gradient, using its group's current options."""
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self.update(p, p.grad, self.state.setdefault(id(p), {}), group)

    def update(self, p, grad, state, group):
        """Change p.data in place from grad (an array of p's shape) and this parameter's state."""
        raise NotImplementedError

    def state_nbytes(self):
        """Bytes held in optimizer state (moments, momentum buffers) now; state is made at each
        parameter's first step, so call this after one step() to see the training-time size."""
        return sum(v.nbytes for s in self.state.values() for v in s.values() if hasattr(v, "nbytes"))

    # ---- checkpoints ---------------------------------------------------------------------------
    def state_dict(self):
        """{"optimizer": class name, "state": {index: {name: NumPy array or number}},
        "param_groups": [options + "params": [indices]]}, where index counts the parameters across
        the groups in order. Copied."""
        index = {id(p): i for i, p in enumerate(self.parameters())}
        state = {index[key]: {k: _copy_to_numpy(v) for k, v in s.items()}
                 for key, s in self.state.items() if key in index}
        groups = [{**g, "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        return {"optimizer": type(self).__name__, "state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore options and state saved by state_dict() from an optimizer of the same class over
        the same parameters, in the same groups and order. A state_dict without "optimizer" (saved
        before it was recorded) is accepted if its options are this optimizer's. Everything is
        checked before anything changes."""
        groups, state = self._check_state_dict(state_dict)
        for group, saved in zip(self.param_groups, groups):
            self.check_options({**group, **saved, "params": group["params"]})
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        params = self.parameters()
        self.state = {id(params[index]): {k: _to_param(v, params[index]) for k, v in s.items()}
                      for index, s in state.items()}

    def _check_state_dict(self, state_dict):
        """Raise a clear error unless state_dict fits this optimizer; returns its groups and state."""
        name = type(self).__name__
        if not isinstance(state_dict, dict):
            raise TypeError(f"{name}.load_state_dict needs a dict from Optimizer.state_dict(), "
                            f"got {type(state_dict).__name__}")
        missing = [k for k in ("state", "param_groups") if k not in state_dict]
        if missing:
            raise ValueError(f"the state_dict lacks {missing}; Optimizer.state_dict() gives 'state' and "
                             f"'param_groups', got keys {sorted(state_dict, key=str)}")
        saved_by = state_dict.get("optimizer", name)
        if saved_by != name:
            raise ValueError(f"the state_dict was saved by {saved_by!r}, not by {name!r}; an optimizer "
                             "loads only its own class's state")
        groups, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, list) or not all(isinstance(g, dict) and "params" in g for g in groups):
            raise TypeError(f"state_dict['param_groups'] must be a list of dicts with a 'params' entry, "
                            f"got {groups!r:.200}")
        for group in groups:
            self._check_option_names(group, "a saved parameter group")
        sizes, saved_sizes = [len(g["params"]) for g in self.param_groups], [len(g["params"]) for g in groups]
        if sizes != saved_sizes:
            raise ValueError(f"the state_dict has groups of sizes {saved_sizes}, this optimizer {sizes}")
        if not isinstance(state, dict):
            raise TypeError(f"state_dict['state'] must be a dict {{parameter index: dict}}, "
                            f"got {type(state).__name__}")
        params = self.parameters()
        for index, s in state.items():
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError(f"state_dict['state'] keys must be parameter indices (int), got "
                                f"{type(index).__name__} {index!r}; JSON turns int keys into str")
            if not 0 <= index < len(params):
                raise ValueError(f"state_dict['state'] has parameter index {index}; this optimizer has "
                                 f"parameters 0 to {len(params) - 1}")
            if not isinstance(s, dict):
                raise TypeError(f"the state of parameter {index} must be a dict, got {type(s).__name__}")
            for key, value in s.items():
                if hasattr(value, "shape") and tuple(value.shape) != params[index].shape:
                    raise ValueError(f"state {key!r} of parameter {index} has shape {tuple(value.shape)}, "
                                     f"the parameter has {params[index].shape}")
        return groups, state


def _copy_to_numpy(value):
    return backend.to_numpy(value).copy() if hasattr(value, "shape") else value


def _to_param(value, p):
    """A saved state array, copied onto p's device and cast to p's dtype (numbers pass through)."""
    if not hasattr(value, "shape"):
        return value
    return backend.to_device(np.array(backend.to_numpy(value), dtype=p.dtype), p.device)
