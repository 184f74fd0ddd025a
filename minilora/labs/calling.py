"""Calling a student's backward function: the arguments it gets, and what it must give back.

call_student runs the function once and checks everything that does not need a derivative: that
it is written, that it runs, that it returns one NumPy array per gradient, and that it leaves its
arguments alone. Any problem is raised as a Failure with the student's line in it.
"""

import inspect

import numpy as np

from minilora.labs.errors import Failure, describe_exception, exception_hint
from minilora.tensor import Tensor


def student_arguments(function, grad, values):
    """The positional arguments of `function`'s student code: the incoming grad, then the named
    values (inputs, what the forward saved, options), in the order of the signature."""
    return [grad] + [values[name] for name in function.arguments[1:]]


def find_student_function(module, function, path):
    """The student's function called function.name in module; Failure if it is missing or its
    parameters differ from the template's."""
    student = getattr(module, function.name, None)
    if not callable(student):
        raise Failure(f"{path.name} has no function {function.name}: keep the name from the template")
    try:
        inspect.signature(student).bind(*function.arguments)
    except TypeError:
        wanted = f"{function.name}({', '.join(function.arguments)})"
        raise Failure(f"{function.name}{inspect.signature(student)} cannot be called as {wanted}: "
                      "keep the parameters of the template") from None
    except ValueError:  # no signature to inspect (a builtin): calling it will tell
        pass
    return student


def call_student(student, function, arguments, path):
    """Run student(*arguments); returns its gradients as a tuple, one per name in function.gradients."""
    originals = [a.copy() if isinstance(a, np.ndarray) else a for a in arguments]
    try:
        returned = student(*arguments)
    except NotImplementedError:
        raise Failure(f"not written yet: fill in the TODO in {path.name}:{function.name}", not_written=True) from None
    except Exception as error:  # whatever the student's code raises becomes a readable FAIL line
        raise Failure(f"{function.name} raised {describe_exception(error, path)}",
                      hints=[exception_hint(error)]) from None
    for name, before, after in zip(function.arguments, originals, arguments):
        if isinstance(before, np.ndarray) and not np.array_equal(before, after, equal_nan=True):
            raise Failure(f"{function.name} changed its argument {name} in place (with -=, *= or an assignment "
                          "into it): the caller still needs it, so compute the gradient into a new array")
    return _as_gradients(returned, function)


def _as_gradients(returned, function):
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


def _kind(value):
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"one array of shape {value.shape}"
    return f"a {type(value).__name__}"


def _type_hint(value):
    if value is None:
        return "did the function reach its return statement, and does it return every gradient?"
    if isinstance(value, Tensor):
        return "this is a minilora Tensor; the labs work on plain arrays: return its .data"
    if isinstance(value, (list, tuple)):
        return "wrap it with np.asarray(...), or compute it with NumPy operations"
    if np.isscalar(value):
        return "a reduction without keepdims or over every axis gives a single number; keep the input's shape"
    return None
