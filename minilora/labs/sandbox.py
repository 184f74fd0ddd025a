"""A student's file run in a process of its own, with a time limit, so that nothing in it can stop,
hang or fool the checker.

    with StudentProcess(path, timeout=60) as process:
        students = process.load(lab)        # {function name: RemoteStudent, or the Failure that says why not}
        call_student(students[name], function, arguments)   # as for a LocalStudent

The process is `python -I` (no PYTHON* variables, no user site-packages) started in an empty
temporary folder; minilora.labs.runner loads the file there and calls its functions. Requests and
replies travel over the process's stdin and stdout as minilora.labs.wire messages (never pickles),
while the runner sends the student's own prints to a log file. The process only ever returns the
arrays the student's functions computed, for inputs the checker chose: every comparison with the
numerical gradient happens here, in the checker's process.

Whatever goes wrong in there ends the process's part in the check with a ProcessEnded saying why:
an exit (os._exit, or a crash of the interpreter), the time limit (an endless loop), or a reply
that is not a well-formed message. sys.exit() inside a function is an exception like any other,
reported at the student's line.
"""

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from minilora.labs import wire
from minilora.labs.calling import StudentRaised
from minilora.labs.errors import Failure

DEFAULT_TIMEOUT_S = 60.0
# Put minilora's own folder first on the path, so the runner is this minilora, installed or not.
BOOTSTRAP = ("import sys; sys.path.insert(0, sys.argv[1]); "
             "from minilora.labs.runner import serve_stdio; serve_stdio()")
ROOT = str(Path(__file__).resolve().parents[2])


class ProcessEnded(BaseException):
    """The student's process is gone or no longer answers; `reason` says why. A BaseException, so
    that no `except Exception` around a call of the student's code can swallow it."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class Opaque:
    """Stands for a value that a student's function returned and that is not an array: only the
    name of its type crosses the pipe (`type_name`, and `scalar` for a single number)."""

    def __init__(self, type_name, scalar=False):
        self.type_name = str(type_name)
        self.scalar = bool(scalar)


class RemoteStudent:
    """A student's function in a StudentProcess; call(arguments) works as LocalStudent.call."""

    def __init__(self, process, name):
        self.process = process
        self.name = name
        self.file_name = process.path.name

    def call(self, arguments):
        reply = self.process.request({"op": "call", "function": self.name, "arguments": list(arguments)},
                                     f"while running {self.name}")
        status = reply.get("status")
        if status == "not_written":
            raise NotImplementedError
        try:
            if status == "raised":
                hint = reply.get("hint")
                raise StudentRaised(str(reply["description"]), None if hint is None else str(hint))
            if status == "returned":
                return _decode(reply["value"]), [int(i) for i in reply["changed"]]
        except (KeyError, TypeError, ValueError):
            pass
        raise self.process.end(f"the process running {self.file_name} sent a reply the checker cannot read "
                               "(did the file write to the checker's pipe?)")


def _decode(value):
    if value is None or isinstance(value, np.ndarray):
        return value
    if "__container__" in value:
        items = [_decode(item) for item in value["items"]]
        return tuple(items) if value["__container__"] == "tuple" else items
    return Opaque(value["__type__"], value.get("scalar", False))


class StudentProcess:
    """The process running one student's file (see the module docstring); use it as a context manager."""

    def __init__(self, path, timeout=DEFAULT_TIMEOUT_S):
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.path = Path(path).resolve()
        self.timeout = float(timeout)
        self.replies = queue.Queue()
        self.ended = None

    def __enter__(self):
        self.folder = tempfile.mkdtemp(prefix="minilora_lab_")
        self.log_path = os.path.join(self.folder, "output.txt")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        # One thread each: the arrays are tiny, and many students may be graded side by side.
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-c", BOOTSTRAP, ROOT], cwd=self.folder, env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                start_new_session=os.name == "posix")  # its own process group, so a kill stops its children too
        self.deadline = _now() + self.timeout
        self.reader = threading.Thread(target=self._read_replies, daemon=True)
        self.reader.start()
        return self

    def __exit__(self, *exc):
        try:
            if self.ended is None:
                wire.send(self.process.stdin.fileno(), {"op": "exit"})
                self.process.wait(timeout=2)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        self._kill()
        self.reader.join(timeout=2)
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)

    def load(self, lab):
        """{function name: RemoteStudent, or a Failure saying why the file has no such function} for
        every function of `lab`; Failure when the file does not load at all."""
        reply = self.request({"op": "load", "path": str(self.path),
                              "functions": {f.name: list(f.arguments) for f in lab.functions}},
                             "while loading the file")
        try:
            if not reply["loaded"]:
                raise Failure(str(reply["message"]))
            problems = {f.name: reply["problems"][f.name] for f in lab.functions}
        except (KeyError, TypeError):
            raise self.end(f"the process running {self.path.name} sent a reply the checker cannot read") from None
        return {name: RemoteStudent(self, name) if problem is None else Failure(str(problem))
                for name, problem in problems.items()}

    def request(self, message, doing):
        """Send `message` and return the reply; ProcessEnded when there will be none."""
        if self.ended is not None:
            raise ProcessEnded(self.ended)
        try:
            wire.send(self.process.stdin.fileno(), message)
            kind, reply = self.replies.get(timeout=max(self.deadline - _now(), 0))
        except queue.Empty:
            raise self.end(f"{self.path.name} did not finish within {self.timeout:g} s {doing} (an endless loop?), "
                           "so it was stopped") from None
        except OSError:  # the pipe is closed: the process has gone, and the reader says so
            try:
                kind, reply = self.replies.get(timeout=5)
            except queue.Empty:
                kind, reply = "exit", None
        if kind == "message":
            return reply
        if kind == "exit":
            raise self.end(self._exit_reason(doing))
        raise self.end(f"the process running {self.path.name} sent something that is not a reply {doing} "
                       f"({reply}): did the file write to the checker's pipe?")

    def end(self, reason):
        """Stop the process for good; returns the ProcessEnded to raise."""
        self.ended = reason
        self._kill()
        return ProcessEnded(reason)

    def _exit_reason(self, doing):
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        reason = (f"the process running {self.path.name} ended {doing} (exit code {code}): "
                  "a lab file must not exit (os._exit, sys.exit at its top level) or crash the interpreter")
        tail = _last_lines(self.log_path)
        return reason + (f"; its last output: {tail}" if tail else "")

    def _read_replies(self):
        """In a thread: every message from the process, then why there are no more."""
        fd = self.process.stdout.fileno()
        while True:
            try:
                self.replies.put(("message", wire.receive(fd)))
            except EOFError:
                self.replies.put(("exit", None))
                return
            except (wire.WireError, OSError) as error:
                self.replies.put(("garbled", str(error)))
                return

    def _kill(self):
        if self.process.poll() is None:
            try:
                if os.name == "posix":
                    os.killpg(self.process.pid, signal.SIGKILL)
                else:
                    self.process.kill()
            except OSError:  # it ended by itself in the meantime
                pass
        self.process.wait()


def _now():
    return time.monotonic()


def _last_lines(path, count=3, limit=300):
    try:
        with open(path, "rb") as f:
            text = f.read()[-4096:].decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:])[-limit:]
