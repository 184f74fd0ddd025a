"""Gradient labs: students write a backward, minilora checks it numerically and says what is wrong.

Each lab is a file in tutorials/labs/ (lab1_matmul.py ... lab4_lora.py) whose functions raise
NotImplementedError("TODO: ..."); reference solutions are in tutorials/labs/solutions/.

    minilora lab list
    minilora lab check softmax [--file PATH] [--seed N]

or, in a notebook:

    from minilora import labs
    result = labs.check("softmax")       # result.ok; the cell shows the report
    labs.check("lora", path="my_lab4.py", seed=7)

The package: spec.py (what a lab is), specs/ (one module per lab: forward formula, random cases,
typical mistakes), registry.py (the list of labs), loading.py (reading a student's file),
calling.py, shapes.py, numeric.py (the checks), diagnosis.py (hints), report.py (the result),
checker.py (check, which runs them all), command.py (`minilora lab`).
"""

from minilora.labs.checker import check
from minilora.labs.registry import LABS, get_lab
from minilora.labs.report import CheckLine, LabResult

__all__ = ["LABS", "CheckLine", "LabResult", "check", "get_lab"]
