"""The process that runs a student's file: it loads the file and calls its functions, nothing more.

minilora.labs.sandbox starts it (python -I, in an empty temporary folder), and it answers one
request at a time on its stdin and stdout:

    {"op": "load", "path": ..., "functions": {name: [parameters]}}
        -> {"loaded": true, "problems": {name: None or [message]}}  or  {"loaded": false, "message": ...}
    {"op": "call", "function": name, "arguments": [...]}
        -> {"status": "returned", "value": ..., "changed": [positions]}
         | {"status": "not_written"}  |  {"status": "raised", "description": ..., "hint": ...}

It never judges a gradient: the checker compares the returned arrays with numerical gradients
itself, in its own process, so nothing the student's code does in here (patching classes, exiting,
printing) can make a wrong gradient pass. The student's prints go to a log file, not to the pipe.
"""

import os
import sys
from pathlib import Path

import numpy as np

from minilora.labs import wire
from minilora.labs.calling import LocalStudent, StudentRaised, find_student_function
from minilora.labs.errors import Failure, describe_exception
from minilora.labs.loading import load_module


def encode_returned(value):
    """What a student's function returned, as a message value: arrays as they are, tuples and lists
    one level deep, anything else by the name of its type."""
    if isinstance(value, (tuple, list)):
        return {"__container__": type(value).__name__, "items": [_encode_item(v) for v in value]}
    return _encode_item(value)


def _encode_item(value):
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return np.array(value)  # a plain ndarray: a subclass does not cross the pipe
    kind = type(value).__name__
    if isinstance(value, np.ndarray):
        kind = f"array of dtype {value.dtype}"
    return {"__type__": kind, "scalar": bool(np.isscalar(value))}


def _load(request):
    """(the reply, {name: LocalStudent}) for a load request."""
    path = Path(request["path"])
    try:
        module = load_module(path, "minilora_lab_student")
    except Failure as failure:
        return {"loaded": False, "message": failure.message}, {}
    except BaseException as error:  # sys.exit() at the top of the file, say
        return {"loaded": False, "message": f"{path.name} could not be run: {describe_exception(error, path)}"}, {}
    students, problems = {}, {}
    for name, parameters in request["functions"].items():
        problems[name] = None
        try:
            candidate = find_student_function(getattr(module, name, None), name, parameters, path.name)
        except Failure as failure:
            problems[name] = failure.message
            continue
        students[name] = LocalStudent(candidate, path.name, path)
    return {"loaded": True, "problems": problems}, students


def _call(students, request):
    try:
        returned, changed = students[request["function"]].call(request["arguments"])
    except NotImplementedError:
        return {"status": "not_written"}
    except StudentRaised as raised:
        return {"status": "raised", "description": raised.description, "hint": raised.hint}
    return {"status": "returned", "value": encode_returned(returned), "changed": changed}


def serve(read_fd, write_fd):
    """Answer requests until the checker closes the pipe or sends {"op": "exit"}."""
    students = {}
    while True:
        try:
            request = wire.receive(read_fd)
        except EOFError:
            return
        if request["op"] == "exit":
            return
        if request["op"] == "load":
            reply, students = _load(request)
        else:
            reply = _call(students, request)
        wire.send(write_fd, reply)


def serve_stdio():
    """serve() on stdin and stdout, after moving stdout out of the student's way: the replies keep a
    copy of it, and what the student's code prints (print, sys.stdout, even os.write(1, ...)) goes
    to stderr, the log."""
    replies = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(0, replies)
