"""What a lab is, as data: the functions a student writes, how to call them, and how to test them.

A lab (one file in tutorials/labs/) holds one or more backward functions with TODO bodies. For
each, a LabFunction says everything the checker needs and nothing about how to check:

    name        the function in the student's file, e.g. "softmax_backward"
    arguments   its parameters, in order; the first is always the incoming gradient
    gradients   the names of what it returns, in order, e.g. ("grad_a", "grad_b")
    wrt         for each gradient, the input it belongs to, e.g. ("a", "b"): a gradient must have
                that input's shape and dtype
    forward     the lab's forward formula on NumPy arrays: forward(**arrays, **options) returns
                (output, saved), where saved holds arrays the backward receives besides the
                inputs (softmax's output s, say)
    make_cases  make_cases(rng) -> list of Case: fresh random inputs, several shapes
    mistakes    typical wrong answers, each with the hint a student should read when theirs
                matches it
    broadcast   the inputs that the forward may broadcast (copy along axes), or that every row
                shares (LoRA's A and B), whose gradients must be summed back: a wrong shape for
                them gets a hint about that sum
    error_hints (text, hint) pairs: when the student's function raises an error whose description
                contains text, the hint is shown

minilora.labs.checker turns a LabFunction into checks; minilora.labs.registry lists the labs.
"""

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Case:
    """One set of inputs: what the case is for, the float64 arrays (in the forward's order), the options."""

    description: str
    arrays: dict
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Mistake:
    """A typical wrong gradient. formula is called with the student's arguments as keywords (use
    **_ for the ones it does not need) and returns the wrong array; hint says what went wrong."""

    gradient: str
    formula: Callable
    hint: str


@dataclass(frozen=True)
class LabFunction:
    """One function a student writes; see the module docstring for the fields."""

    name: str
    arguments: tuple
    gradients: tuple
    wrt: tuple
    forward: Callable
    make_cases: Callable
    mistakes: tuple = ()
    broadcast: tuple = ()
    error_hints: tuple = ()

    @property
    def grad_argument(self):
        """The name of the incoming gradient in the student's signature ("grad" or "dy")."""
        return self.arguments[0]


@dataclass(frozen=True)
class Lab:
    """A lab: its number and name, the file students edit (same name under solutions/), its functions."""

    number: int
    name: str
    title: str
    file_name: str
    functions: tuple
