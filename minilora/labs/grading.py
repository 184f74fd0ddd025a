"""Grading students' files of one lab, as an instructor: `minilora lab grade <lab> <files or folders>`.

Every file is checked exactly as `minilora lab check` checks it (in a process of its own, with a
time limit, every answer judged here), all with the same seed, so every student gets the same
inputs. The outcome per part (a function of the lab) is a record:

    {"file": "submissions/ada/lab2_softmax.py", "lab": "softmax", "part": "softmax_backward",
     "passed": false, "message": "case 1 of 3 (...): grad_x is wrong at ... hint: ...",
     "seed": 7, "seconds": 0.41}

and per file one summary line (PASS or FAIL, the file, how many parts passed, the first failure).
"""

import json
from pathlib import Path

from minilora.io import atomic_write
from minilora.labs.checker import check, choose_seed
from minilora.labs.registry import get_lab
from minilora.labs.sandbox import DEFAULT_TIMEOUT_S


def lab_files(sources):
    """The Python files to grade, in order: each file named, and every .py file under each folder
    named (recursively, sorted; hidden folders and __pycache__ skipped). FileNotFoundError for a
    path that does not exist, ValueError when there is no file at all."""
    files = []
    for source in map(Path, sources):
        if source.is_file():
            files.append(source)
        elif source.is_dir():
            files += sorted(p for p in source.rglob("*.py")
                            if not any(part.startswith(".") or part == "__pycache__"
                                       for part in p.relative_to(source).parts))
        else:
            raise FileNotFoundError(f"no such file or folder: {source}")
    if not files:
        raise ValueError(f"no .py files to grade in {', '.join(map(str, sources))}")
    return files


def grade(name, sources, seed=None, timeout=DEFAULT_TIMEOUT_S):
    """(path, LabResult) for every file in `sources` (see lab_files), one at a time as each is
    checked, all with the same seed (by default a fresh one: see each result's .seed). An unknown
    lab or a missing path is an error before any file runs."""
    get_lab(name)
    seed, files = choose_seed(seed), lab_files(sources)
    for path in files:
        yield path, check(name, path=path, seed=seed, timeout=timeout)


def part_records(path, result):
    """One record (see the module docstring) per part of result.lab for the file at `path`."""
    records = []
    for function in result.lab.functions:
        # A line without a part (the file did not load) fails every part.
        lines = [line for line in result.lines if line.part in (function.name, None)]
        failed = [line for line in lines if not line.ok]
        passed = bool(lines) and not failed
        message = f"all {len(lines)} checks passed" if passed else _line_text(failed[0])
        records.append({"file": str(path), "lab": result.lab.name, "part": function.name, "passed": passed,
                        "message": message, "seed": result.seed,
                        "seconds": round(result.seconds.get(function.name, 0.0), 3)})
    return records


def summary_line(path, records):
    """'PASS  ada/lab2_softmax.py: 1 of 1 parts passed', or FAIL with the first failing part."""
    passed = sum(r["passed"] for r in records)
    line = f"{'PASS' if passed == len(records) else 'FAIL'}  {path}: {passed} of {len(records)} parts passed"
    failed = [r for r in records if not r["passed"]]
    if failed:
        line += f"; {failed[0]['part']}: {failed[0]['message']}"
    return line.replace("\n", " ")


def write_records(path, records):
    """The records as a JSON list, written atomically to `path`."""
    with atomic_write(path, mode="w") as f:
        json.dump(records, f, indent=1)
        f.write("\n")


def _line_text(line):
    hints = "".join(f" hint: {hint}" for hint in line.hints)
    if line.subject == line.part:  # a line about the whole part: its name is said already
        return f"{line.message}{hints}"
    subject = line.subject.split(", ", 1)[1] if ", " in line.subject else line.subject
    return f"{subject}: {line.message}{hints}"
