"""AdapterDict: child modules keyed by adapter name ("default", "task_b", ...).

A LoRALinear keeps its adapters in one (`h.0.attn.q_proj.adapters.default.lora_A`), and a layer in
modules_to_save keeps its per-adapter copies in another (`lm_head.copies.default.weight`), so every
adapter's weights have a dotted name of their own in named_parameters() and state_dict().
"""

import re

from minilora.nn import Module

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_adapter_name(name):
    """Adapter names become parts of parameter names, so they must be identifiers (no dots)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"adapter_name must be an identifier such as 'default' or 'task_b' (letters, "
                         f"digits, underscores; no dots), got {name!r}")
    return name


class AdapterDict(Module):
    """{adapter name: Module}, registered as children so their parameters are found."""

    def add(self, name, module):
        check_adapter_name(name)
        if name in self:
            raise ValueError(f"an adapter named {name!r} already exists here")
        setattr(self, name, module)

    def remove(self, name):
        delattr(self, self._existing(name))

    def names(self):
        return [name for name, _ in self.named_children()]

    def __getitem__(self, name):
        return self._modules[self._existing(name)]

    def __contains__(self, name):
        return name in self._modules

    def __len__(self):
        return len(self._modules)

    def _existing(self, name):
        if name not in self._modules:
            raise KeyError(f"no adapter named {name!r}; the adapters are {self.names()}")
        return name
