"""Calling a student's backward function: the arguments it gets, and what it must give back.

A student is anything with call(arguments) -> (returned, changed): a LocalStudent runs the function
in this process, a RemoteStudent (minilora.labs.sandbox) in the process that runs the student's file.
call_student calls it once and checks everything that does not need a derivative: that it is
written, that it runs, that it returns one NumPy array per gradient, and that it leaves its
arguments alone. Any problem is raised as a Failure with the student's line in it.
"""

import inspect

import numpy as np

from minilora.labs.errors import Failure, describe_exception, exception_hint
from minilora.tensor import Tensor


class StudentRaised(Exception):
    """The student's function raised: `description` names the exception and the student's line,
    `hint` is what may be wrong (or None)."""

    def __init__(self, description, hint=None):
        super().__init__(description)
        self.description = description
        self.hint = hint


class LocalStudent:
    """A student's function run in this process: by labs.check_functions, and, inside the process
    that runs a student's file, by minilora.labs.runner.

    call(arguments) -> (returned, changed): what the function returned and the positions of the
    array arguments it changed in place. It raises NotImplementedError while the function is the
    template's TODO, and StudentRaised for any other exception (sys.exit included).
    """

    def __init__(self, function, file_name, path=None):
        self.function = function
        self.file_name = file_name
        # Tracebacks are told from the student's lines: those of this file.
        self.path = path or (inspect.getsourcefile(function) if inspect.isfunction(function) else None)

    def call(self, arguments):
        originals = [a.copy() if isinstance(a, np.ndarray) else a for a in arguments]
        try:
            returned = self.function(*arguments)
        except NotImplementedError:
            raise
        except (Exception, SystemExit) as error:  # whatever the student's code raises becomes a FAIL line
            raise StudentRaised(describe_exception(error, self.path), exception_hint(error, arguments)) from None
        changed = [i for i, (before, after) in enumerate(zip(originals, arguments))
                   if isinstance(before, np.ndarray) and not np.array_equal(before, after, equal_nan=True)]
        return returned, changed


def student_arguments(function, grad, values):
    """The positional arguments of `function`'s student code: the incoming grad, then the named
    values (inputs, what the forward saved, options), in the order of the signature."""
    return [grad] + [values[name] for name in function.arguments[1:]]


def find_student_function(candidate, name, parameters, file_name):
    """`candidate` (what the student's file calls `name`, or None) if it is a function that takes
    the template's parameters; Failure otherwise."""
    if not callable(candidate):
        raise Failure(f"{file_name} has no function {name}: keep the name from the template")
    try:
        inspect.signature(candidate).bind(*parameters)
    except TypeError:
        wanted = f"{name}({', '.join(parameters)})"
        raise Failure(f"{name}{inspect.signature(candidate)} cannot be called as {wanted}: "
                      "keep the parameters of the template") from None
    except ValueError:  # no signature to inspect (a builtin): calling it will tell
        pass
    return candidate


def call_student(student, function, arguments):
    """Run the student's function on `arguments` (a LocalStudent or a RemoteStudent); returns its
    gradients as a tuple, one per name in function.gradients, or raises Failure."""
    try:
        returned, changed = student.call(arguments)
    except NotImplementedError:
        raise Failure(f"not written yet: fill in the TODO in {student.file_name}:{function.name}",
                      not_written=True) from None
    except StudentRaised as raised:
        hints = [raised.hint] + [hint for text, hint in function.error_hints if text in raised.description]
        raise Failure(f"{function.name} raised {raised.description}", hints=hints) from None
    if changed:
        name = function.arguments[changed[0]]
        raise Failure(f"{function.name} changed its argument {name} in place (with -=, *= or an assignment "
                      "into it): the caller still needs it, so compute the gradient into a new array")
    return as_gradients(returned, function)


def as_gradients(returned, function):
    names = function.gradients
    wanted = names[0] if len(names) == 1 else f"a tuple of {len(names)}: ({', '.join(names)})"
    if len(names) == 1:
        if isinstance(returned, (tuple, list)):
            raise Failure(f"{function.name} returned a {type(returned).__name__} of {len(returned)}; "
                          f"return the array {names[0]} itself")
        returned = (returned,)
    elif not isinstance(returned, (tuple, list)):
        raise Failure(f"{function.name} returned {_kind(returned)}, expected {wanted}")
    elif len(returned) != len(names):
        raise Failure(f"{function.name} returned {len(returned)} values, expected {wanted}")
    for name, value in zip(names, returned):
        if not isinstance(value, np.ndarray):
            raise Failure(f"{name} is {_kind(value)}, expected a NumPy array", hints=[_type_hint(value)])
    return tuple(returned)


def type_name(value):
    """The name of value's type; for a value that stands in for one from a student's process, that one's."""
    return getattr(value, "type_name", type(value).__name__)


def _kind(value):
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"one array of shape {value.shape}"
    return f"a {type_name(value)}"


def _type_hint(value):
    if value is None:
        return "did the function reach its return statement, and does it return every gradient?"
    if isinstance(value, Tensor) or type_name(value) == "Tensor":
        return "this is a minilora Tensor; the labs work on plain arrays: return its .data"
    if isinstance(value, (list, tuple)) or type_name(value) in ("list", "tuple"):
        return "wrap it with np.asarray(...), or compute it with NumPy operations"
    if np.isscalar(value) or getattr(value, "scalar", False):
        return "a reduction without keepdims or over every axis gives a single number; keep the input's shape"
    return None
