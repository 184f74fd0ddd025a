"""check(name, path, seed): run every check of a lab on a student's file and collect the report.

The file runs in a process of its own with a time limit (minilora.labs.sandbox); this process
chooses every input and judges every answer. check_functions does the same checks on functions
given directly, in this process (a notebook, the tests).

For each function of the lab, and each of its cases (random shapes and values drawn from the
seed, lab, function and case: minilora.labs.draw.case_rng), the student's function is called once
with a random incoming gradient and must
    run (not raise, not still be the TODO), return one array per gradient, leave its arguments
    alone, give each gradient its input's shape and dtype, and finite values;
then it is wrapped as a minilora op and must agree with central differences of the forward
(minilora.gradcheck, float64). A wrong gradient is reported with its worst element, its relative
error and a hint (minilora.labs.diagnosis). When every case passes, one more check runs the first
case in float32, which must come back as float32.
"""

import time
from dataclasses import replace

import numpy as np

from minilora.labs.calling import LocalStudent, StudentRaised, call_student, find_student_function, student_arguments
from minilora.labs.diagnosis import hint_for
from minilora.labs.draw import case_rng
from minilora.labs.errors import Failure
from minilora.labs.loading import check_lab_file, default_lab_file
from minilora.labs.numeric import numeric_check
from minilora.labs.registry import get_lab
from minilora.labs.report import CheckLine, LabResult
from minilora.labs.sandbox import DEFAULT_TIMEOUT_S, ProcessEnded, StudentProcess
from minilora.labs.shapes import check_gradients


def check(name, path=None, seed=None, timeout=DEFAULT_TIMEOUT_S):
    """Check the student's file of lab `name` and return a LabResult (`.ok`; print it for the report).

    path: the file to check; by default the lab's file (lab2_softmax.py, ...) in the current folder,
        where `minilora lab start` puts it.
    seed: draws the random shapes and values; by default a fresh one each run (the report shows
        it, so a failing run can be repeated exactly).
    timeout: seconds the file may take in all; then it is stopped and the rest fails.
    Raises ValueError for an unknown lab, a bad seed or timeout, FileNotFoundError when there is no
    file; everything wrong inside the file (an error, an exit, an endless loop) is a failed check.
    """
    lab = get_lab(name)
    if path is None:
        path, file_option = default_lab_file(lab), ""
    else:
        path = check_lab_file(path)
        file_option = f" --file {path}"
    seed = choose_seed(seed)
    result = LabResult(lab, path, seed, f"minilora lab check {lab.name}{file_option} --seed {seed}")
    with StudentProcess(path, timeout) as process:
        try:
            students = process.load(lab)
        except Failure as failure:
            result.lines.append(CheckLine(False, path.name, failure.message, failure.hints))
            return result
        except ProcessEnded as ended:
            result.lines.append(CheckLine(False, path.name, ended.reason))
            return result
        run_checks(result, students)
    return result


def check_functions(name, functions, seed=None):
    """The checks of lab `name` on functions of this process: functions = {"softmax_backward": f}.

    Quicker than check() and handy in a notebook, but nothing is isolated: use check() on a file to
    grade. Returns a LabResult.
    """
    lab = get_lab(name)
    if not isinstance(functions, dict):
        raise TypeError(f"functions must be a dict of function name -> function, got {type(functions).__name__}")
    seed = choose_seed(seed)
    result = LabResult(lab, "your functions", seed, f"labs.check_functions({lab.name!r}, ..., seed={seed})")
    students = {}
    for function in lab.functions:
        try:
            candidate = find_student_function(functions.get(function.name), function.name, function.arguments,
                                              "your functions")
            students[function.name] = LocalStudent(candidate, "your functions")
        except Failure as failure:
            students[function.name] = failure
    run_checks(result, students)
    return result


def run_checks(result, students):
    """Append to result.lines the checks of every function of result.lab, with the seconds each took
    in result.seconds. students: {function name: LocalStudent or RemoteStudent, or a Failure}."""
    ended = None
    for function in result.lab.functions:
        start = time.perf_counter()
        student = students[function.name]
        if ended is not None:
            result.lines.append(CheckLine(False, function.name, f"not checked: {ended}", part=function.name))
        elif isinstance(student, Failure):
            result.lines.append(CheckLine(False, function.name, student.message, student.hints, part=function.name))
        else:
            try:
                _check_function(result, function, student)
            except ProcessEnded as end:
                result.lines.append(CheckLine(False, function.name, end.reason, part=function.name))
                ended = "the file's process had been stopped by then"
        result.seconds[function.name] = time.perf_counter() - start


def choose_seed(seed):
    """`seed` checked (a non-negative int), or a fresh one for None."""
    if seed is None:
        return int(np.random.SeedSequence().entropy % 1_000_000)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _check_function(result, function, student):
    """Append the CheckLines of one function: one per case, then the float32 check."""
    names = (result.lab.name, function.name)
    cases = function.make_cases(case_rng(result.seed, *names))
    lines = []
    for number, case in enumerate(cases, 1):
        subject = f"{function.name}, case {number} of {len(cases)} ({case.description})"
        rng = case_rng(result.seed, *names, f"case {number}")
        try:
            line = CheckLine(True, subject, _check_case(function, student, case, rng), part=function.name)
        except Failure as failure:
            if failure.not_written and not lines:
                result.lines.append(CheckLine(False, function.name, failure.message, part=function.name))
                return
            line = CheckLine(False, subject, failure.message, failure.hints, part=function.name)
        lines.append(line)
        result.lines.append(line)
    if all(line.ok for line in lines):
        result.lines.append(_check_float32(function, student, cases[0], case_rng(result.seed, *names, "float32")))


def _call(function, student, case, rng):
    """One call of the student's function on `case` with a random incoming gradient, checked for
    everything but the values. Returns (gradients, arguments)."""
    out, saved = function.forward(**case.arrays, **case.options)
    grad = np.asarray(rng.standard_normal(out.shape)).astype(out.dtype)
    arguments = student_arguments(function, grad, {**case.arrays, **saved, **case.options})
    gradients = call_student(student, function, arguments)
    check_gradients(function, gradients, case.arrays, out.shape)
    return gradients, arguments


def _check_case(function, student, case, rng):
    """The message of a passing case; raises Failure otherwise."""
    gradients, arguments = _call(function, student, case, rng)
    try:
        checks = numeric_check(function, student, case, seed=int(rng.integers(2**32)),
                               output_weight=float(rng.choice([-1, 1]) * rng.uniform(0.5, 2)))
    except (StudentRaised, NotImplementedError) as raised:  # the same call worked a moment ago
        raise Failure(f"{function.name} raised during the numerical check (it gives different answers for "
                      f"the same inputs?): {getattr(raised, 'description', 'NotImplementedError')}") from None
    names = function.gradients
    if all(c.ok for c in checks):
        worst = max(c.max_rel_err for c in checks)
        return f"{_join(names)} {_verb(names, 'match')} the numerical gradients (max relative error {worst:.1e})"

    doubled = _doubled(function, student, arguments)
    messages, hints = [], []
    wrong = [(name, c, g, d) for name, c, g, d in zip(names, checks, gradients, doubled) if not c.ok]
    for name, c, returned, twice in wrong:
        e = c.worst_element
        messages.append(f"{name} is wrong at {int(c.wrong.sum())} of {c.wrong.size} elements; the worst is element "
                        f"{e}: yours (analytic) {c.analytic[e]:.6g}, numerical {c.numeric[e]:.6g} "
                        f"(relative error {c.rel_err[e]:.2g})")
        hint = hint_for(function, name, c, returned, arguments, twice, case.options)
        if hint:
            hints.append(hint if len(wrong) == 1 or hint.startswith(name) else f"{name}: {hint}")
    right = [name for name, c in zip(names, checks) if c.ok]
    if right:
        messages.append(f"{_join(right)} {'is' if len(right) == 1 else 'are'} right")
    raise Failure("; ".join(messages), hints)


def _doubled(function, student, arguments):
    """The student's gradients for twice the incoming gradient (Nones when that call fails)."""
    try:
        return call_student(student, function, [2 * arguments[0]] + arguments[1:])
    except Failure:
        return (None,) * len(function.gradients)


def _check_float32(function, student, case, rng):
    arrays = {name: a.astype(np.float32) if a.dtype.kind == "f" else a for name, a in case.arrays.items()}
    subject = f"{function.name}, float32 inputs (the shapes of case 1)"
    try:
        _call(function, student, replace(case, arrays=arrays), rng)
    except Failure as failure:
        return CheckLine(False, subject, failure.message, failure.hints, part=function.name)
    names = function.gradients
    return CheckLine(True, subject, f"{_join(names)} {_verb(names, 'come')} back as float32", part=function.name)


def _verb(names, verb):
    """'match' for several names, 'matches' for one."""
    return verb if len(names) > 1 else verb + ("es" if verb.endswith("h") else "s")


def _join(names):
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
