"""check(name, path, seed): run every check of a lab on a student's file and collect the report.

For each function of the lab, and each of its cases (fresh random shapes and values drawn from the
seed), the student's function is called once with a random incoming gradient and must
    run (not raise, not still be the TODO), return one array per gradient, leave its arguments
    alone, give each gradient its input's shape and dtype, and finite values;
then it is wrapped as a minilora op and must agree with central differences of the forward
(minilora.gradcheck, float64). A wrong gradient is reported with its worst element, its relative
error and a hint (minilora.labs.diagnosis). When every case passes, one more check runs the first
case in float32, which must come back as float32.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np

from minilora.labs.calling import call_student, find_student_function, student_arguments
from minilora.labs.diagnosis import hint_for
from minilora.labs.errors import Failure, StudentError, describe_exception
from minilora.labs.loading import default_lab_file, load_module
from minilora.labs.numeric import numeric_check
from minilora.labs.registry import get_lab
from minilora.labs.report import CheckLine, LabResult
from minilora.labs.shapes import check_gradients


def check(name, path=None, seed=None):
    """Check the student's file of lab `name` and return a LabResult (`.ok`; print it for the report).

    path: the file to check; by default the lab's file in the repository's tutorials/labs/.
    seed: draws the random shapes and values; by default a fresh one each run (the report shows
        it, so a failing run can be repeated exactly).
    Raises ValueError for an unknown lab or a bad seed, FileNotFoundError when there is no file;
    everything wrong inside the file is a failed check in the result, never an exception.
    """
    lab = get_lab(name)
    if path is None:
        path, file_option = default_lab_file(lab), ""
    else:
        path = Path(path)
        file_option = f" --file {path}"
        if not path.is_file():
            raise FileNotFoundError(f"no such lab file: {path}")
    seed = _check_seed(seed)
    result = LabResult(lab, path, seed, f"minilora lab check {lab.name}{file_option} --seed {seed}")
    try:
        module = load_module(path, f"minilora_lab_{lab.name}")
    except Failure as failure:
        result.lines.append(CheckLine(False, path.name, failure.message, failure.hints))
        return result
    rng = np.random.default_rng(seed)
    for function in lab.functions:
        result.lines += _check_function(module, function, path, rng)
    return result


def _check_seed(seed):
    if seed is None:
        return int(np.random.SeedSequence().entropy % 1_000_000)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _check_function(module, function, path, rng):
    """The CheckLines of one function: one per case, then the float32 check."""
    try:
        student = find_student_function(module, function, path)
    except Failure as failure:
        return [CheckLine(False, function.name, failure.message, failure.hints)]
    cases = function.make_cases(rng)
    lines = []
    for number, case in enumerate(cases, 1):
        subject = f"{function.name}, case {number} of {len(cases)} ({case.description})"
        try:
            lines.append(CheckLine(True, subject, _check_case(function, student, case, path, rng)))
        except Failure as failure:
            if failure.not_written and not lines:
                return [CheckLine(False, function.name, failure.message)]
            lines.append(CheckLine(False, subject, failure.message, failure.hints))
    if all(line.ok for line in lines):
        lines.append(_check_float32(function, student, cases[0], path, rng))
    return lines


def _call(function, student, case, path, rng):
    """One call of the student's function on `case` with a random incoming gradient, checked for
    everything but the values. Returns (gradients, arguments)."""
    out, saved = function.forward(**case.arrays, **case.options)
    grad = rng.standard_normal(out.shape).astype(out.dtype)
    arguments = student_arguments(function, grad, {**case.arrays, **saved, **case.options})
    gradients = call_student(student, function, arguments, path)
    check_gradients(function, gradients, case.arrays)
    return gradients, arguments


def _check_case(function, student, case, path, rng):
    """The message of a passing case; raises Failure otherwise."""
    gradients, arguments = _call(function, student, case, path, rng)
    try:
        checks = numeric_check(function, student, case, seed=int(rng.integers(2**32)))
    except StudentError as raised:  # the same call worked a moment ago: the function is not deterministic
        raise Failure(f"{function.name} raised during the numerical check: "
                      f"{describe_exception(raised.error, path)}") from None
    names = function.gradients
    if all(c.ok for c in checks):
        worst = max(c.max_rel_err for c in checks)
        return f"{_join(names)} {_verb(names, 'match')} the numerical gradients (max relative error {worst:.1e})"

    doubled = _doubled(function, student, arguments, path)
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


def _doubled(function, student, arguments, path):
    """The student's gradients for twice the incoming gradient (Nones when that call fails)."""
    try:
        return call_student(student, function, [2 * arguments[0]] + arguments[1:], path)
    except Failure:
        return (None,) * len(function.gradients)


def _check_float32(function, student, case, path, rng):
    arrays = {name: a.astype(np.float32) for name, a in case.arrays.items()}
    subject = f"{function.name}, float32 inputs (the shapes of case 1)"
    try:
        _call(function, student, replace(case, arrays=arrays), path, rng)
    except Failure as failure:
        return CheckLine(False, subject, failure.message, failure.hints)
    names = function.gradients
    return CheckLine(True, subject, f"{_join(names)} {_verb(names, 'come')} back as float32")


def _verb(names, verb):
    """'match' for several names, 'matches' for one."""
    return verb if len(names) > 1 else verb + ("es" if verb.endswith("h") else "s")


def _join(names):
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
