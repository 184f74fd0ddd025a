"""What the fuzz tests (test_fuzz*.py) share: run_case, which calls one entry point and checks the
outcome, spoil, which picks the argument to spoil, and the count of outcomes by class that
conftest.py prints at the end of a run (with test_tampering.py's count of damaged files).

Each fuzz example draws a valid call and, most of the time, spoils one argument with a value from
that argument's list of bad values (NaN, inf, None, a string, a wrong shape or dtype, ...). A valid
call must match an independent reference (NumPy formulas written in the tests, or the rule the API
documents); a spoiled one must be refused with a ValueError or TypeError whose message names the
spoiled argument. Nothing else: no other exception, no NaN where NumPy gives a number, no crash.
Every fuzz test runs EXAMPLES examples (100: about 1,500 calls in all).
"""

import collections

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

EXAMPLES = 100          # per test (no example database, no deadline)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None)
OUTCOMES = collections.Counter()  # (group, outcome) -> number of calls
TAMPERING = collections.Counter()  # (file kind, damage, "refused" or "loaded unchanged") -> files

NAN, INF = float("nan"), float("inf")
BAD_NUMBERS = [NAN, INF, -INF, None, "0.1", [0.1], True, 1j]


def run_case(group, call, bad=None, names=None, check=None, allowed=(ValueError, TypeError)):
    """Call `call()`. bad: the name of the spoiled argument, or None for a valid call. names: words
    of which the message must hold one (default: [bad]). check(result): asserts the result matches
    the reference."""
    try:
        result = call()
    except allowed as exc:
        message = str(exc)
        assert bad is not None, f"{group}: a valid call raised {type(exc).__name__}: {message}"
        wanted = names or [bad]
        assert any(w in message for w in wanted), f"{group}: {bad} spoiled, but the message does not name " \
                                                  f"any of {wanted}: {type(exc).__name__}: {message}"
        assert "incompatible function arguments" not in message, f"{group}: pybind11's dump: {message}"
        OUTCOMES[group, "ValueError" if isinstance(exc, ValueError) else "TypeError"] += 1
        return None
    assert bad is None, f"{group}: the spoiled argument {bad} was accepted (result {result!r:.200})"
    if check is not None:
        check(result)
    OUTCOMES[group, "matched"] += 1
    return result


def spoil(draw, pools):
    """(name, value) of the argument to spoil, or (None, None) for a valid call (about 1 in 3)."""
    name = draw(st.sampled_from([None] + list(pools)))
    return (None, None) if name is None else (name, draw(st.sampled_from(pools[name])))


def assert_close(got, expected, dtype):
    """‖got − expected‖ ≤ tol·‖expected‖ + floor, with DESIGN.md's tolerances."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    tol = 1e-5 if np.dtype(dtype) == np.float32 else 1e-12
    assert np.linalg.norm(got - expected) <= tol * np.linalg.norm(expected) + tol, (got, expected)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
dtypes = st.sampled_from(["float32", "float64"])




def outcome_tables(full=True):
    """The counts as text tables, one per counter that has entries ("" when none); full=False keeps
    only each table's header and total."""
    text = ""
    if OUTCOMES:
        classes = ["matched", "ValueError", "TypeError", "usage error"]
        lines = [f"{'fuzzed entry point':<40}" + "".join(f"{c:>13}" for c in classes)]
        for group in sorted({g for g, _ in OUTCOMES}):
            lines.append(f"{group:<40}" + "".join(f"{OUTCOMES[group, c]:>13}" for c in classes))
        totals = collections.Counter()
        for (_, c), n in OUTCOMES.items():
            totals[c] += n
        lines.append(f"{f'all: {sum(totals.values())} calls':<40}" + "".join(f"{totals[c]:>13}" for c in classes))
        text += "\n".join(lines if full else [lines[0], lines[-1]]) + "\n"
    if TAMPERING:
        lines = [f"{'damage':<44}{'file':>12}{'refused':>10}{'loaded unchanged':>18}"]
        for damage in sorted({d for _, d, _ in TAMPERING}):
            for kind in ("adapter", "checkpoint"):
                refused, unchanged = TAMPERING[kind, damage, "refused"], TAMPERING[kind, damage, "loaded unchanged"]
                if refused or unchanged:
                    lines.append(f"{damage:<44}{kind:>12}{refused:>10}{unchanged:>18}")
        total, refused = sum(TAMPERING.values()), sum(n for (_, _, o), n in TAMPERING.items() if o == "refused")
        lines.append(f"{f'all: {total} loads':<44}{'':>12}{refused:>10}{total - refused:>18}")
        text += "\n".join(lines if full else [lines[0], lines[-1]]) + "\n"
    return text
