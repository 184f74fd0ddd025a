"""Gradient labs: students write a backward, minilora checks it numerically and says what is wrong.

Each lab is a file in tutorials/labs/ (lab1_matmul.py, lab2_softmax.py, ...) whose functions raise
NotImplementedError("TODO: ..."); reference solutions are in tutorials/labs/solutions/.

    minilora lab list
    minilora lab start softmax [FOLDER]                  # copy lab2_softmax.py there
    minilora lab check softmax [--file PATH] [--seed N]
    minilora lab grade softmax submissions/ --json grades.json

or, in a notebook:

    from minilora import labs
    result = labs.check("softmax")       # result.ok; the cell shows the report
    labs.check("lora", path="my_lab4.py", seed=7)
    labs.check_functions("softmax", {"softmax_backward": softmax_backward})   # in this process

The package: spec.py (what a lab is), specs/ (one module per lab: forward formula, random cases,
typical mistakes), registry.py (finds the labs), loading.py (a lab's file, a student's copy),
sandbox.py, runner.py and wire.py (a student's file in its own process), calling.py, shapes.py,
numeric.py (the checks), diagnosis.py (hints), report.py (the result), checker.py (check, which
runs them all), grading.py (many files), command.py (`minilora lab`).
"""

from minilora.labs.checker import check, check_functions
from minilora.labs.grading import grade
from minilora.labs.loading import start_lab
from minilora.labs.registry import LABS, get_lab
from minilora.labs.report import CheckLine, LabResult

__all__ = ["LABS", "CheckLine", "LabResult", "check", "check_functions", "get_lab", "grade", "start_lab"]
