"""The gradient labs: every reference solution passes, typical student mistakes fail with a message
that names the function and the gradient (and a fitting hint), and the command line answers 0 or 1.

A mistake is the reference solution with one function redefined below it (a later `def` replaces
an earlier one), so each mistake differs from a correct file in exactly one place.
"""

import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from minilora import cli, labs
from minilora.labs.loading import load_module
from minilora.labs.numeric import numeric_check

LABS_FOLDER = Path(__file__).resolve().parent.parent / "tutorials" / "labs"
SOLUTIONS = LABS_FOLDER / "solutions"


def lab_file(name):
    return labs.get_lab(name).file_name


def variant(tmp_path, name, redefinition):
    """The solution of lab `name` with `redefinition` (source of one or more functions) appended.
    The solution's functions stay reachable as <name>_reference, for mistakes in one gradient only."""
    aliases = "".join(f"{f.name}_reference = {f.name}\n" for f in labs.get_lab(name).functions)
    source = ((SOLUTIONS / lab_file(name)).read_text() + "\n\nimport numpy as np\n\n" + aliases
              + textwrap.dedent(redefinition))
    path = tmp_path / lab_file(name)
    path.write_text(source)
    return path


# ---- reference solutions and templates ------------------------------------------------------------
@pytest.mark.parametrize("name", list(labs.LABS))
@pytest.mark.parametrize("seed", [0, 1, 2, None])
def test_every_reference_solution_passes(name, seed):
    result = labs.check(name, path=SOLUTIONS / lab_file(name), seed=seed)
    assert result.ok, result.report()
    cases = sum(len(f.make_cases(np.random.default_rng(0))) for f in labs.get_lab(name).functions)
    # One line per case, and one float32 line per function.
    assert len(result.lines) == cases + len(labs.get_lab(name).functions)
    assert f"all {len(result.lines)} checks passed" in result.report()


@pytest.mark.parametrize("name", list(labs.LABS))
def test_the_untouched_template_reports_not_written_yet(name):
    lab = labs.get_lab(name)
    result = labs.check(name, path=LABS_FOLDER / lab.file_name, seed=0)
    assert not result.ok
    assert [line.subject for line in result.lines] == [f.name for f in lab.functions]
    for line, function in zip(result.lines, lab.functions):
        assert line.message == f"not written yet: fill in the TODO in {lab.file_name}:{function.name}"


def test_templates_and_solutions_define_the_same_functions():
    for lab in labs.LABS.values():
        for folder in (LABS_FOLDER, SOLUTIONS):
            source = (folder / lab.file_name).read_text()
            for function in lab.functions:
                assert f"def {function.name}({', '.join(function.arguments)}):" in source, (folder, function.name)


def test_the_same_seed_draws_the_same_cases_and_a_fresh_one_is_reported():
    path = SOLUTIONS / lab_file("lora")
    first, again = labs.check("lora", path=path, seed=123), labs.check("lora", path=path, seed=123)
    assert [line.subject for line in first.lines] == [line.subject for line in again.lines]
    other = labs.check("lora", path=path, seed=124)
    assert [line.subject for line in first.lines] != [line.subject for line in other.lines]
    fresh = labs.check("lora", path=path)
    assert f"(seed {fresh.seed})" in fresh.report().splitlines()[0]


# ---- typical mistakes -----------------------------------------------------------------------------
# (lab, what the student did, the redefinition, the function and the gradient the failure must name,
#  words the hint must contain, or None where the mistake makes the code raise)
MISTAKES = [
    ("matmul", "missing transpose", """
        def matmul_backward(grad, a, b):
            grad_a = grad @ b
            return grad_a, a.T @ grad
     """, "matmul_backward", "grad_a = grad @ b", None),
    ("matmul", "operands swapped", """
        def matmul_backward(grad, a, b):
            return grad @ b.T, grad.T @ a
     """, "matmul_backward", "grad_b has shape", "last two axes swapped"),
    ("matmul", "incoming grad ignored", """
        def matmul_backward(grad, a, b):
            ones = np.ones_like(grad)
            return ones @ b.T, a.T @ ones
     """, "matmul_backward", "grad_a is wrong", "not used"),
    ("matmul", "sign error", """
        def matmul_backward(grad, a, b):
            return -(grad @ b.T), a.T @ grad
     """, "matmul_backward", "grad_a is wrong", "sign"),
    ("matmul", "broadcast axis not summed", """
        def batched_matmul_backward(grad, a, b):
            return sum_to_shape(grad @ np.swapaxes(b, -1, -2), a.shape), np.swapaxes(a, -1, -2) @ grad
     """, "batched_matmul_backward", "grad_b has shape",
     "b was broadcast over the leading axes, so its gradient must be summed over them"),
    ("matmul", "size-1 axis not summed", """
        def batched_matmul_backward(grad, a, b):
            grad_a = grad @ np.swapaxes(b, -1, -2)
            grad_a = grad_a.sum(axis=tuple(range(grad_a.ndim - a.ndim)))  # the leading axes only
            return grad_a, sum_to_shape(np.swapaxes(a, -1, -2) @ grad, b.shape)
     """, "batched_matmul_backward", "grad_a has shape", "size 1"),
    ("softmax", "elementwise s(1-s) only", """
        def softmax_backward(grad, s):
            return grad * s * (1 - s)
     """, "softmax_backward", "grad_x is wrong", "only the diagonal"),
    ("softmax", "sum over the wrong axis", """
        def softmax_backward(grad, s):
            return s * (grad - np.sum(grad * s, axis=0, keepdims=True))
     """, "softmax_backward", "grad_x is wrong", "last one"),
    ("softmax", "sign error", """
        def softmax_backward(grad, s):
            return s * (np.sum(grad * s, axis=-1, keepdims=True) - grad)
     """, "softmax_backward", "grad_x is wrong", "sign"),
    ("softmax", "missing keepdims", """
        def softmax_backward(grad, s):
            return s * (grad - np.sum(grad * s, axis=-1))
     """, "softmax_backward", "np.sum(grad * s, axis=-1)", None),
    ("softmax", "the backward of log_softmax", """
        def softmax_backward(grad, s):
            return grad - s * grad.sum(axis=-1, keepdims=True)
     """, "softmax_backward", "grad_x is wrong", "log_softmax"),
    ("layer_norm", "the mean's dependence ignored", """
        def layer_norm_backward(grad, x, weight, eps):
            centered = x - x.mean(axis=-1, keepdims=True)
            inv_std = 1 / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
            x_hat = centered * inv_std
            rows = tuple(range(x.ndim - 1))
            g = grad * weight
            grad_x = inv_std * (g - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
            return grad_x, (grad * x_hat).sum(axis=rows), grad.sum(axis=rows)
     """, "layer_norm_backward", "grad_x is wrong", "through the mean"),
    ("layer_norm", "the variance's dependence ignored", """
        def layer_norm_backward(grad, x, weight, eps):
            centered = x - x.mean(axis=-1, keepdims=True)
            inv_std = 1 / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
            x_hat = centered * inv_std
            rows = tuple(range(x.ndim - 1))
            g = grad * weight
            grad_x = inv_std * (g - g.mean(axis=-1, keepdims=True))
            return grad_x, (grad * x_hat).sum(axis=rows), grad.sum(axis=rows)
     """, "layer_norm_backward", "grad_x is wrong", "through the variance"),
    ("layer_norm", "grad_weight not summed over the batch", """
        def layer_norm_backward(grad, x, weight, eps):
            centered = x - x.mean(axis=-1, keepdims=True)
            x_hat = centered / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
            grad_x, _, grad_bias = layer_norm_backward_reference(grad, x, weight, eps)
            return grad_x, grad * x_hat, grad_bias
     """, "layer_norm_backward", "grad_weight has shape", "summed over them"),
    ("layer_norm", "unbiased variance", """
        def layer_norm_backward(grad, x, weight, eps):
            centered = x - x.mean(axis=-1, keepdims=True)
            inv_std = 1 / np.sqrt((centered * centered).sum(axis=-1, keepdims=True) / (x.shape[-1] - 1) + eps)
            x_hat = centered * inv_std
            rows = tuple(range(x.ndim - 1))
            g = grad * weight
            grad_x = inv_std * (g - g.mean(axis=-1, keepdims=True) - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
            return grad_x, (grad * x_hat).sum(axis=rows), grad.sum(axis=rows)
     """, "layer_norm_backward", "grad_x is wrong", "unbiased variance"),
    ("layer_norm", "grad_bias summed over the wrong axis", """
        def layer_norm_backward(grad, x, weight, eps):
            grad_x, grad_weight, _ = layer_norm_backward_reference(grad, x, weight, eps)
            return grad_x, grad_weight, grad.sum(axis=-1)
     """, "layer_norm_backward", "grad_bias has shape", None),
    ("lora", "scaling missing in dA", """
        def lora_backward(dy, x, W, A, B, scaling):
            dx, dA, dB = lora_backward_reference(dy, x, W, A, B, scaling)
            return dx, dA / scaling, dB
     """, "lora_backward", "dA is wrong", "the factor scaling is missing"),
    ("lora", "dB using x instead of u", """
        def lora_backward(dy, x, W, A, B, scaling):
            dx, dA, _ = lora_backward_reference(dy, x, W, A, B, scaling)
            return dx, dA, scaling * (dy.reshape(-1, W.shape[0]).T @ x.reshape(-1, W.shape[1]))
     """, "lora_backward", "dB has shape", None),
    ("lora", "dx missing the LoRA term", """
        def lora_backward(dy, x, W, A, B, scaling):
            _, dA, dB = lora_backward_reference(dy, x, W, A, B, scaling)
            return dy @ W, dA, dB
     """, "lora_backward", "dx is wrong", "missing the LoRA path"),
    ("lora", "A transposed", """
        def lora_backward(dy, x, W, A, B, scaling):
            dx, _, dB = lora_backward_reference(dy, x, W, A, B, scaling)
            v = dy.reshape(-1, W.shape[0]) @ B
            return dx, scaling * (x.reshape(-1, W.shape[1]).T @ v), dB
     """, "lora_backward", "dA has shape", "last two axes swapped"),
    ("lora", "leading axes of x not flattened", """
        def lora_backward(dy, x, W, A, B, scaling):
            dx, _, dB = lora_backward_reference(dy, x, W, A, B, scaling)
            return dx, scaling * ((dy @ B).T @ x), dB
     """, "lora_backward", "(dy @ B).T @ x", None),
]


@pytest.mark.parametrize("name, what, redefinition, function, message, hint", MISTAKES,
                         ids=[f"{m[0]}: {m[1]}" for m in MISTAKES])
def test_a_typical_mistake_fails_and_says_where(tmp_path, name, what, redefinition, function, message, hint):
    path = variant(tmp_path, name, redefinition)
    result = labs.check(name, path=path)
    assert not result.ok, f"{what} passed:\n{result.report()}"
    failures = result.failures
    assert all(line.subject.startswith(function) for line in failures), result.report()
    # Every failure names the gradient (or the student's line that raised), and the hint fits.
    assert all(message in line.message for line in failures), result.report()
    assert result.report().endswith(f"minilora lab check {name} --file {path} --seed {result.seed}")
    if hint is not None:
        assert all(any(hint in h for h in line.hints) for line in failures), result.report()


def test_a_mistake_that_raises_names_the_line_of_the_students_file(tmp_path):
    path = variant(tmp_path, "matmul", """
        def matmul_backward(grad, a, b):
            grad_a = grad @ b
            return grad_a, a.T @ grad
    """)
    line_number = path.read_text().splitlines().index("    grad_a = grad @ b") + 1
    result = labs.check("matmul", path=path, seed=0)
    message = result.failures[0].message
    assert message.startswith(f"matmul_backward raised ValueError at {path.name}:{line_number} in matmul_backward, "
                              "`grad_a = grad @ b`: "), message


def test_a_solution_that_only_works_at_B_zero_fails(tmp_path):
    # At B = 0, dA = s·(dy·B)ᵀ·x is exactly zero: a dA of zeros would pass on such inputs.
    path = variant(tmp_path, "lora", """
        def lora_backward(dy, x, W, A, B, scaling):
            dx, _, dB = lora_backward_reference(dy, x, W, A, B, scaling)
            return dx, np.zeros_like(A), dB
    """)
    function = labs.get_lab("lora").functions[0]
    case = function.make_cases(np.random.default_rng(0))[0]
    at_zero = replace(case, arrays={**case.arrays, "B": np.zeros_like(case.arrays["B"])})
    student = load_module(path, "lab4_at_B_zero").lora_backward
    assert all(c.ok for c in numeric_check(function, student, at_zero, seed=0))  # the bug hides at B = 0
    for case in function.make_cases(np.random.default_rng()):
        assert np.all(np.abs(case.arrays["B"]) >= 0.5)
    result = labs.check("lora", path=path)
    assert len(result.failures) == 3, result.report()
    for line in result.failures:
        assert "dA is wrong" in line.message and "dx and dB are right" in line.message, result.report()
        assert any("all zeros" in h for h in line.hints), result.report()


# ---- what else goes wrong in a student's file -----------------------------------------------------
def test_a_syntax_error_is_a_clear_message_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "lab2_softmax.py"
    path.write_text("import numpy as np\n\n\ndef softmax_backward(grad, s)\n    return s\n")
    result = labs.check("softmax", path=path, seed=0)
    assert not result.ok and len(result.lines) == 1
    assert result.lines[0].message.startswith("lab2_softmax.py has a syntax error at line 4: ")
    assert "def softmax_backward(grad, s)" in result.lines[0].message
    assert cli.main(["lab", "check", "softmax", "--file", str(path)]) == 1
    out = capsys.readouterr()
    assert "syntax error at line 4" in out.out and "Traceback" not in out.out + out.err


def test_a_file_that_raises_when_run_names_its_line(tmp_path):
    path = tmp_path / "lab2_softmax.py"
    path.write_text("import numpy as np\nscale = undefined_name\n")
    result = labs.check("softmax", path=path, seed=0)
    assert not result.ok
    assert result.lines[0].message == ("lab2_softmax.py could not be run: NameError at lab2_softmax.py:2 in <module>, "
                                       "`scale = undefined_name`: name 'undefined_name' is not defined")


def test_a_missing_function_and_a_changed_signature_are_named(tmp_path):
    path = tmp_path / "lab1_matmul.py"
    path.write_text("def matmul_backward(grad, a):\n    return grad, grad\n")
    messages = [line.message for line in labs.check("matmul", path=path, seed=0).lines]
    assert messages == [
        "matmul_backward(grad, a) cannot be called as matmul_backward(grad, a, b): keep the parameters of the template",
        "lab1_matmul.py has no function batched_matmul_backward: keep the name from the template",
    ]


@pytest.mark.parametrize("body, message", [
    ("return grad @ b.T", "matmul_backward returned one array of shape"),
    ("return grad @ b.T, a.T @ grad, a", "matmul_backward returned 3 values, expected a tuple of 2: (grad_a, grad_b)"),
    ("return grad @ b.T, None", "grad_b is None, expected a NumPy array"),
    ("return (grad @ b.T).astype(np.float32), a.T @ grad", "grad_a is float32, but a is float64"),
    ("grad *= 2\n    return grad @ b.T / 2, a.T @ grad / 2", "matmul_backward changed its argument grad in place"),
], ids=["one value", "three values", "None", "dtype", "in place"])
def test_what_is_returned_is_checked_before_the_values(tmp_path, body, message):
    path = variant(tmp_path, "matmul", f"def matmul_backward(grad, a, b):\n    {body}\n")
    result = labs.check("matmul", path=path, seed=0)
    assert [line.subject.split(",")[0] for line in result.failures] == ["matmul_backward"] * 2, result.report()
    assert all(message in line.message for line in result.failures), result.report()


def test_float32_inputs_must_give_float32_gradients(tmp_path):
    path = variant(tmp_path, "softmax", """
        def softmax_backward(grad, s):
            out = np.zeros(s.shape)
            out += s * (grad - np.sum(grad * s, axis=-1, keepdims=True))
            return out
    """)
    result = labs.check("softmax", path=path, seed=0)
    (failure,) = result.failures
    assert failure.subject.startswith("softmax_backward, float32 inputs")
    assert failure.message == "grad_x is float64, but x is float32: a gradient has its input's dtype"
    assert "np.zeros" in failure.hints[0]


def test_scaling_applied_twice_is_named_in_the_hint(tmp_path):
    path = variant(tmp_path, "lora", """
        def lora_backward(dy, x, W, A, B, scaling):
            dx, dA, dB = lora_backward_reference(dy, x, W, A, B, scaling)
            return dx, dA, dB * scaling
    """)
    result = labs.check("lora", path=path, seed=0)
    assert len(result.failures) == 3
    for line, case in zip(result.failures, labs.get_lab("lora").functions[0].make_cases(np.random.default_rng(0))):
        scaling = case.options["scaling"]
        assert line.message.startswith("dB is wrong")
        assert line.hints == (f"dB is the right value times scaling ({scaling:.4g}): scaling is applied twice",)


# ---- the command line and the Python API ----------------------------------------------------------
def test_lab_check_exits_0_when_every_check_passes_and_1_otherwise(tmp_path, capsys):
    solution = SOLUTIONS / lab_file("layer_norm")
    assert cli.main(["lab", "check", "layer_norm", "--file", str(solution), "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"lab 3, layer_norm: checking {solution} (seed 4)"
    assert all(line.startswith("PASS  ") for line in out.splitlines()[1:-1])
    wrong = variant(tmp_path, "layer_norm", "def layer_norm_backward(grad, x, weight, eps):\n"
                                            "    return grad, weight, weight\n")
    assert cli.main(["lab", "check", "layer_norm", "--file", str(wrong), "--seed", "4"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  layer_norm_backward, case 1 of 2" in out
    assert f"minilora lab check layer_norm --file {wrong} --seed 4" in out


def test_lab_check_defaults_to_the_file_in_the_repository(capsys):
    assert cli.main(["lab", "check", "softmax", "--seed", "0"]) == 1
    out = capsys.readouterr().out
    assert f"checking {LABS_FOLDER / 'lab2_softmax.py'} (seed 0)" in out
    assert "FAIL  softmax_backward: not written yet: fill in the TODO in lab2_softmax.py:softmax_backward" in out
    assert "minilora lab check softmax --seed 0" in out  # no --file: it is the default one


def test_an_unknown_lab_is_a_clear_error_listing_the_labs(capsys):
    assert cli.main(["lab", "check", "attention"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "minilora lab check: unknown lab 'attention'; the labs are: matmul, softmax, layer_norm, lora"
    with pytest.raises(ValueError, match="unknown lab 'attention'; the labs are: matmul, softmax, layer_norm, lora"):
        labs.check("attention")


def test_a_missing_file_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nowhere.py"
    assert cli.main(["lab", "check", "lora", "--file", str(missing)]) == 1
    assert capsys.readouterr().err.strip() == f"minilora lab check: no such lab file: {missing}"
    with pytest.raises(FileNotFoundError, match="no such lab file"):
        labs.check("lora", path=missing)


def test_a_bad_seed_is_a_clear_error():
    with pytest.raises(ValueError, match=r"seed must be a non-negative int, got -1"):
        labs.check("lora", path=SOLUTIONS / lab_file("lora"), seed=-1)


def test_lab_list_names_every_lab_its_file_and_functions(capsys):
    assert cli.main(["lab", "list"]) == 0
    out = capsys.readouterr().out
    for lab in labs.LABS.values():
        assert f"{lab.number}. {lab.name}" in out and lab.file_name in out
        assert all(f.name in out for f in lab.functions)


def test_the_result_prints_its_report_for_a_notebook():
    result = labs.check("softmax", path=SOLUTIONS / lab_file("softmax"), seed=9)
    assert result.ok and repr(result) == str(result) == result.report()
    assert result.report().splitlines()[-1] == f"all {len(result.lines)} checks passed"


def test_checking_a_file_leaves_no_module_no_import_path_and_no_bytecode_behind(tmp_path):
    path = variant(tmp_path, "softmax", "")
    import_path = list(sys.path)
    assert labs.check("softmax", path=path, seed=0).ok
    assert sys.path == import_path
    assert not [name for name, module in sys.modules.items() if getattr(module, "__file__", None) == str(path)]
    assert not (tmp_path / "__pycache__").exists()
    # An edited file is read again, not taken from a cache.
    path.write_text(path.read_text() + "\ndef softmax_backward(grad, s):\n    return -grad\n")
    assert not labs.check("softmax", path=path, seed=0).ok
