"""ModuleList and Sequential: children registered under the names "0", "1", ...

So a GPT's blocks are found as `h.0.*`, `h.1.*`, and replacing one (`model.h[1] = new_block`)
re-registers it under the same name.
"""

from minilora.nn.module import Module


class ModuleList(Module):
    """A list of modules that registers each one. No forward: the owner decides how to call them.
    Indexing takes ints (negative ones too); a slice gives a plain Python list."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__} holds Modules, got {type(module).__name__}")
        setattr(self, str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def _index(self, i):
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"{type(self).__name__} indices must be ints, got {type(i).__name__}")
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} is out of range for a {type(self).__name__} of length {len(self)}")
        return str(i % len(self))

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._modules[str(j)] for j in range(len(self))[i]]
        return self._modules[self._index(i)]

    def __setitem__(self, i, module):
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__} holds Modules, got {type(module).__name__}")
        setattr(self, self._index(i), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter([self._modules[str(j)] for j in range(len(self))])


class Sequential(ModuleList):
    """Calls its modules in order, each on the previous one's output."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x
