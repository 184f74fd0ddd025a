"""How a check fails: the Failure a check raises, and an exception told as the line of the student's file."""

import traceback
from pathlib import Path

import numpy as np


class Failure(Exception):
    """A check that did not pass: `message` in plain words, `hints` (what may be wrong), and
    `not_written` when the function still raises the template's NotImplementedError."""

    def __init__(self, message, hints=(), not_written=False):
        super().__init__(message)
        self.message = message
        self.hints = tuple(h for h in hints if h)
        self.not_written = not_written


def describe_exception(error, path):
    """'ValueError at lab1_matmul.py:37 in matmul_backward, `grad_a = grad @ b`: <message>'.

    The line is the last one in the student's file that the traceback passes through, so an error
    raised deep inside NumPy still points at the student's line that called it.
    """
    frames = []
    if path is not None:
        path = Path(path).resolve()
        frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path]
    where = ""
    if frames:
        frame = frames[-1]
        where = f" at {path.name}:{frame.lineno} in {frame.name}" + (f", `{frame.line}`" if frame.line else "")
    return f"{type(error).__name__}{where}: {error}"


def exception_hint(error, arguments=()):
    """A hint for the NumPy errors that wrong gradients raise most, or None. arguments: what the
    student's function was called with (an argument of more than two axes changes the hint)."""
    text = str(error)
    if isinstance(error, SystemExit):
        return "a lab function returns its gradients; sys.exit() or exit() ends the check instead"
    if "mismatch in its core dimension" in text or "not aligned" in text:
        if any(isinstance(a, np.ndarray) and a.ndim > 2 for a in arguments):
            return ("the sizes of a matrix product do not fit, and an input has more than two axes: .T reverses "
                    "every axis of such an array. Transpose the last two with np.swapaxes(p, -1, -2), or "
                    "flatten the leading axes first: p.reshape(-1, p.shape[-1])")
        return ("the sizes of a matrix product do not fit: in p @ q the last axis of p must equal the "
                "second-to-last of q. Write each operand's shape next to the line: is a transpose missing?")
    if "could not be broadcast together" in text:
        return ("two shapes do not broadcast: a sum along an axis drops that axis unless keepdims=True, "
                "and a transpose changes which axes line up")
    return None
