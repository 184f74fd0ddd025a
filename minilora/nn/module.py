"""Module: the base class of every layer and model, and the bookkeeping that goes with it.

A Module keeps three ordered tables, filled by plain attribute assignment:

    self.weight = Parameter(...)   ->  _parameters["weight"]   (trained, saved in state_dict)
    self.q_proj = Linear(...)      ->  _modules["q_proj"]      (a child; its parameters are ours too)
    self.register_buffer("mask", t) -> _buffers["mask"]        (a constant moved by to(), not saved)

Everything else (parameters(), state_dict(), to(), train()) walks these tables. Because a child is
found by name, replacing it is one assignment: `setattr(block.attn, "q_proj", lora_layer)` is how
minilora.lora swaps a Linear for a LoRALinear, and the new layer's parameters appear under the old
name (`h.0.attn.q_proj.*`) with nothing else to update.
"""

import collections
import contextlib

from minilora import backend
from minilora.nn.parameter import Parameter
from minilora.tensor import Tensor

LoadResult = collections.namedtuple("LoadResult", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class: subclasses set parameters and child modules in __init__ and define forward()."""

    def __init__(self):
        # object.__setattr__: our own __setattr__ needs these tables to exist already.
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "training", True)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- registration by assignment ---------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning attributes (while setting {name!r})")
        if isinstance(value, (Parameter, Module)):
            table = self._parameters if isinstance(value, Parameter) else self._modules
            if name not in table:  # a replacement keeps its place in the order
                self._forget(name)
            table[name] = value
        elif name in self._parameters or name in self._modules:
            # A registered slot may be emptied (e.g. no bias), but not filled with something else:
            # a plain Tensor there would silently stop being trained and saved.
            table, kind = (self._parameters, "Parameter") if name in self._parameters else (self._modules, "Module")
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to {name!r} of {type(self).__name__}, "
                                f"which holds a {kind}: assign a {kind} or None")
            table[name] = None
        elif name in self._buffers:
            if not isinstance(value, Tensor):
                raise TypeError(f"cannot assign a {type(value).__name__} to buffer {name!r} of "
                                f"{type(self).__name__}: expected a Tensor")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Called only when normal lookup fails, i.e. for registered parameters, modules and buffers.
        for table in ("_parameters", "_modules", "_buffers"):
            entries = self.__dict__.get(table, {})
            if name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __delattr__(self, name):
        for table in (self._parameters, self._modules, self._buffers):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def _forget(self, name):
        """Remove `name` from every table, so that one name means one thing."""
        self.__dict__.pop(name, None)
        for table in (self._parameters, self._modules, self._buffers):
            table.pop(name, None)

    def register_buffer(self, name, tensor):
        """Keep a constant Tensor (e.g. the causal mask) that to() moves but state_dict leaves out:
        buffers here are rebuilt from the configuration, so a checkpoint need not carry them."""
        if not isinstance(tensor, Tensor) or isinstance(tensor, Parameter):
            raise TypeError(f"register_buffer({name!r}, ...) needs a Tensor that is not a Parameter, "
                            f"got {type(tensor).__name__}")
        self._forget(name)
        self._buffers[name] = tensor

    # ---- walking the tree -----------------------------------------------------------------------
    def named_children(self):
        """[(name, module)] for the direct children, in the order they were assigned."""
        return [(name, m) for name, m in self._modules.items() if m is not None]

    def children(self):
        return [m for _, m in self.named_children()]

    def named_modules(self, prefix=""):
        """[(dotted name, module)] for this module ("" when prefix is empty) and every descendant."""
        out, seen = [], set()

        def visit(module, name):
            if id(module) in seen:
                return
            seen.add(id(module))
            out.append((name, module))
            for child_name, child in module.named_children():
                visit(child, f"{name}.{child_name}" if name else child_name)

        visit(self, prefix)
        return out

    def modules(self):
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix="", recurse=True):
        """[(dotted name, Parameter)], e.g. ("h.0.attn.q_proj.weight", p). A parameter shared by
        two modules is listed once, under the first name it is found at."""
        owners = self.named_modules(prefix) if recurse else [(prefix, self)]
        out, seen = [], set()
        for module_name, module in owners:
            for name, p in module._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                out.append((f"{module_name}.{name}" if module_name else name, p))
        return out

    def parameters(self, recurse=True):
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def named_buffers(self):
        return [(f"{m_name}.{name}" if m_name else name, b)
                for m_name, m in self.named_modules() for name, b in m._buffers.items()]

    # ---- training state ----------------------------------------------------------------------------
    def train(self, mode=True):
        """Set training mode here and in every descendant (Dropout is active only in training)."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode) needs a bool, got {mode!r}")
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        """Evaluation mode: the same as train(False)."""
        return self.train(False)

    def zero_grad(self):
        """Forget every parameter's gradient (set to None: the next backward starts fresh)."""
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze (True) every parameter of this module and its children."""
        if not isinstance(requires_grad, bool):
            raise TypeError(f"requires_grad_ needs a bool, got {requires_grad!r}")
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def num_parameters(self, trainable_only=False):
        """How many numbers the parameters hold (only those that require grad, if asked)."""
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    def parameter_table(self):
        """A per-module count of parameters: `.rows` for code, `print(...)` for people."""
        from minilora.nn.summary import ParameterTable

        return ParameterTable.of(self)

    # ---- moving and casting --------------------------------------------------------------------
    def to(self, device=None, dtype=None):
        """Move ("cpu"/"cuda") and/or cast (e.g. "float64") every parameter, its gradient and every
        floating buffer, in place: the Parameter objects stay the same, so references to them
        (an optimizer's list, a LoRA layer's `.base`) stay valid. Returns self."""
        if device is not None:
            device = backend.check_device(device)
        if dtype is not None:
            dtype = backend.parse_dtype(dtype)
            if dtype not in backend.FLOAT_DTYPES:
                raise ValueError(f"Module.to(dtype=...) needs one of float32, float64, got {dtype}")

        def convert(array):
            if device is not None:
                array = backend.to_device(array, device)
            if dtype is not None and array.dtype.kind == "f":
                array = array.astype(dtype, copy=False)
            return array

        for p in self.parameters():
            p.data = convert(p.data)
            if p.grad is not None:
                p.grad = convert(p.grad)
        for _, b in self.named_buffers():
            b.data = convert(b.data)
        for m in self.modules():
            m._converted(convert, device, dtype)
        return self

    def _converted(self, convert, device, dtype):
        """Called by to() on every submodule, for state that is neither a parameter nor a buffer:
        an NF4 weight (minilora/quant/linear.py), the weight a merged LoRALinear keeps for unmerge
        (minilora/lora/layer.py). `convert` is what to() did to each parameter's array; `device` and
        `dtype` are to()'s arguments, checked (None where not given). Nothing by default."""

    # ---- saving and loading ------------------------------------------------------------------------
    def unmerged(self):
        """A context in which this module's own parameters hold their stored values, for saving and
        loading. A layer that keeps a derived value in a parameter (LoRALinear with its adapter
        merged into the weight) overrides it: it unmerges on entry and merges again on exit, so
        what is saved and loaded is the unmerged weight, whatever the layer's state."""
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _every_module_unmerged(self):
        with contextlib.ExitStack() as stack:
            for module in self.modules():
                stack.enter_context(module.unmerged())
            yield

    def state_dict(self):
        """{dotted name: NumPy array} for every parameter, frozen or not, copied: later training
        does not change a state_dict already taken. Buffers are not included (see register_buffer).
        A merged LoRA layer gives its unmerged weight (and its adapter's A and B), so loading the
        state reproduces the model exactly, merged or not."""
        with self._every_module_unmerged():
            return {name: p.numpy().copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (NumPy, CuPy or Tensors) into the parameters of the same names, in place.

        Every name present in both must match in shape and dtype (a mismatch is always an error).
        strict=True also requires the two sets of names to be equal. Nothing is copied unless all
        checks pass. The arrays are unmerged values (see state_dict): a merged LoRA layer is
        unmerged, loaded, and merged again with what was loaded. Returns LoadResult(missing_keys,
        unexpected_keys).
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"load_state_dict needs a dict of name -> array, got {type(state_dict).__name__}")
        own = dict(self.named_parameters())
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        mismatched, sources = [], {}
        for name, p in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            array = value.data if isinstance(value, Tensor) else value
            if not hasattr(array, "shape") or not hasattr(array, "dtype"):
                raise TypeError(f"state_dict[{name!r}] must be an array or a Tensor, got {type(value).__name__}")
            if tuple(array.shape) != p.shape or array.dtype != p.dtype:
                mismatched.append(f"{name}: the model has shape {p.shape} {p.dtype}, "
                                  f"the state_dict has {tuple(array.shape)} {array.dtype}")
            sources[name] = array

        problems = [f"shape or dtype mismatch: {line}" for line in mismatched]
        if strict:
            problems += [f"missing (in the model, not in the state_dict): {name}" for name in missing]
            problems += [f"unexpected (in the state_dict, not in the model): {name}" for name in unexpected]
        if problems:
            hint = " (cast the model with .to(dtype=...) first)" if mismatched else ""
            raise ValueError(f"load_state_dict into {type(self).__name__} failed{hint}:\n  " + "\n  ".join(problems))

        with self._every_module_unmerged():
            for name, array in sources.items():
                p = own[name]
                p.data[...] = backend.to_device(array, p.device)
        return LoadResult(missing, unexpected)

    # ---- printing ------------------------------------------------------------------------------------
    def extra_repr(self):
        """The one-line description inside the parentheses, e.g. Linear's "in=8, out=32"."""
        return ""

    def __repr__(self):
        children = [f"({name}): {_indent(repr(m))}" for name, m in self.named_children()]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = ([self.extra_repr()] if self.extra_repr() else []) + children
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _indent(text):
    return text.replace("\n", "\n  ")
