"""Messages between the checker and the process that runs a student's file: JSON plus NumPy arrays.

A message is a dict whose values are JSON (numbers, strings, lists, dicts, None) or NumPy arrays
of a numeric or bool dtype, at any depth (a dict with the one key "__array__" is reserved). It travels as

    8 bytes: the length of the JSON header, then the header (arrays replaced by {"__array__": i})
    for each array: 8 bytes of length, then the array in the .npy format

Nothing is pickled: reading a message never runs code from it, so a student's process cannot
make the checker run anything by what it sends, and a malformed message is a WireError, never
a crash. The reader sets a size limit, so a process that sends gigabytes is refused too.
"""

import io
import json
import os
import struct

import numpy as np

LENGTH = struct.Struct("<Q")
MAX_BYTES = 64 << 20  # far above any lab's arrays; a bigger message is refused


class WireError(ValueError):
    """What came over the pipe is not a well-formed message."""


def send(fd, message):
    """Write `message` (see the module docstring) to the file descriptor fd."""
    arrays = []

    def header_value(value):
        if isinstance(value, np.ndarray):
            arrays.append(value)
            return {"__array__": len(arrays) - 1}
        if isinstance(value, (list, tuple)):
            return [header_value(v) for v in value]
        if isinstance(value, dict):
            return {key: header_value(v) for key, v in value.items()}
        return value

    header = json.dumps({key: header_value(value) for key, value in message.items()}).encode()
    parts = [LENGTH.pack(len(header)), header]
    for array in arrays:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
        parts += [LENGTH.pack(buffer.tell()), buffer.getvalue()]
    _write_all(fd, b"".join(parts))


def receive(fd, wait=None):
    """Read one message from fd. wait(): called before each read, may raise (the checker's timeout).
    Raises EOFError when the other side closed the pipe, WireError when the bytes are not a message."""
    budget = [MAX_BYTES]
    try:
        header = json.loads(_read_block(fd, wait, budget).decode())
    except ValueError as error:  # not UTF-8, or not JSON
        raise WireError(f"the header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise WireError("the message is not a dict")
    arrays = {}

    def value_of(value):
        if isinstance(value, dict) and set(value) == {"__array__"}:
            index = value["__array__"]
            if index == len(arrays):  # arrays follow the header in the order they appear in it
                arrays[index] = _read_array(_read_block(fd, wait, budget))
            return arrays[index]
        if isinstance(value, list):
            return [value_of(v) for v in value]
        if isinstance(value, dict):
            return {key: value_of(v) for key, v in value.items()}
        return value

    try:
        return {key: value_of(value) for key, value in header.items()}
    except (TypeError, KeyError, ValueError) as error:
        raise WireError(f"malformed message: {error}") from None


def _read_array(data):
    try:
        array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as error:
        raise WireError(f"not an array: {error}") from None
    if array.dtype.kind not in "biuf":
        raise WireError(f"arrays must be numeric, got dtype {array.dtype}")
    return array if array.flags.writeable else array.copy()  # the receiver owns what it got


def _read_block(fd, wait, budget):
    (length,) = LENGTH.unpack(_read_exactly(fd, LENGTH.size, wait))
    if length > budget[0]:
        raise WireError(f"a message of more than {MAX_BYTES} bytes")
    budget[0] -= length
    return _read_exactly(fd, length, wait)


def _read_exactly(fd, count, wait):
    chunks, left = [], count
    while left:
        if wait is not None:
            wait()
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other end of the pipe was closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
