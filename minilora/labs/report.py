"""What a lab check found: one line per check, PASS or FAIL in plain words, and the whole as a report.

LabResult is what minilora.labs.check returns: `.ok`, `.lines`, `.seed`, and print(result) (or a
notebook cell ending in it) shows the report that `minilora lab check` prints.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CheckLine:
    """One check: did it pass, what it was about ("softmax_backward, case 2 (...)"), what happened,
    hints, and the part of the lab (the function) it belongs to (None for the file as a whole)."""

    ok: bool
    subject: str
    message: str
    hints: tuple = ()
    part: object = None

    def text(self):
        lines = [f"{'PASS' if self.ok else 'FAIL'}  {self.subject}: {self.message}"]
        lines += [f"      hint: {hint}" for hint in self.hints]
        return "\n".join(lines)


@dataclass(eq=False)
class LabResult:
    """All the checks of one lab on one file (path) or on functions, with the seed that drew their
    inputs; seconds: the time each part (function) took."""

    lab: object
    path: object
    seed: int
    repeat_command: str
    lines: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    @property
    def ok(self):
        return bool(self.lines) and all(line.ok for line in self.lines)

    @property
    def failures(self):
        return [line for line in self.lines if not line.ok]

    def report(self):
        head = f"lab {self.lab.number}, {self.lab.name}: checking {self.path} (seed {self.seed})"
        failed = len(self.failures)
        if failed == 0:
            tail = f"all {len(self.lines)} checks passed"
        else:
            tail = (f"{failed} of {len(self.lines)} checks failed. The same inputs again: "
                    f"{self.repeat_command}")
        return "\n".join([head] + [line.text() for line in self.lines] + [tail])

    def __str__(self):
        return self.report()

    __repr__ = __str__  # a notebook cell ending in check(...) shows the report
