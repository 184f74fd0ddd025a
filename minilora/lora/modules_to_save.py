"""ModulesToSave: a module trained in full next to LoRA (a new head, say), one copy per adapter.

apply_lora wraps each module named in LoRAConfig.modules_to_save: `.original` stays frozen and
`.copies[adapter]` is a trainable copy that forward uses while that adapter is active. So switching
adapters switches heads too, disabling adapters gives back the original module, and save_adapter
stores the active copy next to the LoRA weights.
"""

import copy

from minilora.lora.adapter_dict import AdapterDict
from minilora.nn import Module


class ModulesToSave(Module):
    """Calls the active adapter's copy of `original` (or `original` itself when disabled)."""

    def __init__(self, original):
        super().__init__()
        self.original = original
        self.copies = AdapterDict()
        self.active_adapter = None
        self.disabled = False

    def add_copy(self, name):
        """A trainable copy of the original module for adapter `name`."""
        self.copies.add(name, copy.deepcopy(self.original))

    @property
    def active(self):
        """The module that forward calls."""
        if self.disabled or self.active_adapter not in self.copies:
            return self.original
        return self.copies[self.active_adapter]

    def forward(self, *args, **kwargs):
        return self.active(*args, **kwargs)

    def __getattr__(self, name):
        # The wrapper stands for the module: `model.wte.weight` is the weight forward uses now.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or "_modules" not in self.__dict__:
                raise
            return getattr(self.active, name)

    def extra_repr(self):
        return f"active_adapter={self.active_adapter!r}"
