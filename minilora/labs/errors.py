"""How a check fails: the Failure a check raises, and an exception told as the line of the student's file."""

import traceback
from pathlib import Path


class Failure(Exception):
    """A check that did not pass: `message` in plain words, `hints` (what may be wrong), and
    `not_written` when the function still raises the template's NotImplementedError."""

    def __init__(self, message, hints=(), not_written=False):
        super().__init__(message)
        self.message = message
        self.hints = tuple(h for h in hints if h)
        self.not_written = not_written


class StudentError(Exception):
    """An exception raised by the student's code where minilora called it; `error` is the original."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def describe_exception(error, path):
    """'ValueError at lab1_matmul.py:37 in matmul_backward, `grad_a = grad @ b`: <message>'.

    The line is the last one in the student's file that the traceback passes through, so an error
    raised deep inside NumPy still points at the student's line that called it.
    """
    path = Path(path).resolve()
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path]
    where = ""
    if frames:
        frame = frames[-1]
        where = f" at {path.name}:{frame.lineno} in {frame.name}" + (f", `{frame.line}`" if frame.line else "")
    return f"{type(error).__name__}{where}: {error}"


def exception_hint(error):
    """A hint for the two NumPy errors that wrong gradients raise most, or None."""
    text = str(error)
    if "mismatch in its core dimension" in text or "not aligned" in text:
        return ("the sizes of a matrix product do not fit: in p @ q the last axis of p must equal the "
                "second-to-last of q. Write each operand's shape next to the line: is a transpose missing?")
    if "could not be broadcast together" in text:
        return ("two shapes do not broadcast: a sum along an axis drops that axis unless keepdims=True, "
                "and a transpose changes which axes line up")
    return None
