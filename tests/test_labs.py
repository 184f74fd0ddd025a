"""The gradient labs: every reference solution passes, typical student mistakes fail on every seed
with a message that names the function and the gradient and a fitting hint, and the command line
answers 0 or 1.

Mistakes are planted as student-like functions, checked in this process (labs.check_functions) on
several seeds: those a student writes (below, by hand), and every typical mistake of every lab's
spec (the reference solution with one gradient replaced). Files go through `lab check` and
`lab grade`, each in its own process, for what a file can do besides being wrong (exit, hang,
crash, patch the checker). Nothing here reads a student's copy of a lab: only the solutions and
the untouched templates in tutorials/labs/.
"""

import json
import re
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from minilora import cli, labs
from minilora.labs.calling import LocalStudent
from minilora.labs.loading import load_module
from minilora.labs.numeric import numeric_check

LABS_FOLDER = Path(__file__).resolve().parent.parent / "tutorials" / "labs"
SOLUTIONS = LABS_FOLDER / "solutions"
SEEDS = [0, 1, 2, 3, 4]


def lab_file(name):
    return labs.get_lab(name).file_name


def solution(name):
    """The reference solution's functions of lab `name`, by name."""
    module = load_module(SOLUTIONS / lab_file(name), f"solution_{name}")
    return {f.name: getattr(module, f.name) for f in labs.get_lab(name).functions}


def variant(tmp_path, name, redefinition, file_name=None):
    """A file: the solution of lab `name` with `redefinition` (source of functions) appended; the
    solution's functions stay reachable as <name>_reference."""
    aliases = "".join(f"{f.name}_reference = {f.name}\n" for f in labs.get_lab(name).functions)
    source = ((SOLUTIONS / lab_file(name)).read_text() + "\n\nimport numpy as np\n\n" + aliases
              + textwrap.dedent(redefinition))
    path = tmp_path / (file_name or lab_file(name))
    path.write_text(source)
    return path


# ---- reference solutions and templates, for every lab the registry finds ---------------------------
@pytest.mark.parametrize("name", list(labs.LABS))
@pytest.mark.parametrize("seed", [0, None])
def test_every_reference_solution_passes_in_its_own_process(name, seed):
    result = labs.check(name, path=SOLUTIONS / lab_file(name), seed=seed)
    assert result.ok, result.report()
    lab = labs.get_lab(name)
    cases = sum(len(f.make_cases(np.random.default_rng(0))) for f in lab.functions)
    # One line per case, and one float32 line per function.
    assert len(result.lines) == cases + len(lab.functions)
    assert f"all {len(result.lines)} checks passed" in result.report()


@pytest.mark.parametrize("name", list(labs.LABS))
def test_every_reference_solution_passes_on_more_seeds(name):
    for seed in SEEDS:
        result = labs.check_functions(name, solution(name), seed=seed)
        assert result.ok, result.report()


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


def test_the_labs_readme_has_a_row_for_every_lab():
    readme = (LABS_FOLDER / "README.md").read_text()
    for lab in labs.LABS.values():
        row = re.search(rf"^\| {lab.number} `{lab.name}` \| `{lab.file_name}` \|(.*)$", readme, re.MULTILINE)
        assert row, f"tutorials/labs/README.md has no table row for lab {lab.number} {lab.name}"
        assert all(f"`{f.name}`" in row.group(1) for f in lab.functions), row.group(0)


def test_the_registry_finds_every_spec_in_order():
    found = [load_module(p, f"spec_{p.stem}").LAB.name
             for p in sorted((Path(labs.__file__).parent / "specs").glob("*.py")) if p.stem != "__init__"]
    assert sorted(found) == sorted(labs.LABS)
    numbers = [lab.number for lab in labs.LABS.values()]
    assert numbers == list(range(1, len(numbers) + 1))


# ---- every typical mistake of every spec is caught on every seed, with its hint ------------------------
def spec_mistakes():
    for lab in labs.LABS.values():
        for function in lab.functions:
            for number, mistake in enumerate(function.mistakes):
                yield pytest.param(lab.name, function, mistake, id=f"{lab.name}-{function.name}-{number}")


def planted(name, function, mistake):
    """The reference solution with `mistake` in one gradient of `function`: a student-like function."""
    functions = solution(name)
    right = functions[function.name]

    def with_mistake(*arguments):
        gradients = right(*arguments)
        gradients = list(gradients) if len(function.gradients) > 1 else [gradients]
        named = dict(zip(function.arguments, arguments))
        gradients[function.gradients.index(mistake.gradient)] = mistake.formula(**named)
        return tuple(gradients) if len(gradients) > 1 else gradients[0]

    return {**functions, function.name: with_mistake}


@pytest.mark.parametrize("name, function, mistake", list(spec_mistakes()))
def test_every_typical_mistake_fails_on_every_seed_with_its_hint(name, function, mistake):
    # A mistake that gives the right shapes only for some cases (DoRA's norm over the wrong axis, on a
    # square W) raises ValueError on the others, as a student's code would: there the lab's error_hints
    # must give the same hint. On some case of every seed it must be caught by its values.
    functions = planted(name, function, mistake)
    for seed in SEEDS:
        result = labs.check_functions(name, functions, seed=seed)
        assert not result.ok, f"seed {seed}: the mistake passed:\n{result.report()}"
        wrong = f"{mistake.gradient} is wrong"
        assert any(wrong in line.message for line in result.failures), result.report()
        for line in result.failures:
            assert line.subject.startswith(function.name), result.report()
            assert wrong in line.message or f"{function.name} raised ValueError" in line.message, result.report()
            assert any(mistake.hint in hint for hint in line.hints), result.report()


# ---- mistakes as a student writes them ------------------------------------------------------------------
def _ln_forward(x, eps, ddof=0, eps_in_scale=True):
    centered = x - x.mean(axis=-1, keepdims=True)
    var = (centered * centered).sum(axis=-1, keepdims=True) / (x.shape[-1] - ddof)
    inv_std = 1 / np.sqrt(var + eps)
    return centered * inv_std, (inv_std if eps_in_scale else 1 / np.sqrt(var))


def ln_mean_ignored(grad, x, weight, eps):
    x_hat, inv_std = _ln_forward(x, eps)
    rows = tuple(range(x.ndim - 1))
    g = grad * weight
    return inv_std * (g - x_hat * (g * x_hat).mean(axis=-1, keepdims=True)), (grad * x_hat).sum(rows), grad.sum(rows)


def ln_eps_dropped(grad, x, weight, eps, everywhere=True):
    x_hat, inv_std = _ln_forward(x, 0.0 if everywhere else eps, eps_in_scale=False)
    rows = tuple(range(x.ndim - 1))
    g = grad * weight
    grad_x = inv_std * (g - g.mean(axis=-1, keepdims=True) - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
    return grad_x, (grad * x_hat).sum(rows), grad.sum(rows)


def ln_weight_summed_over_axis_0(grad, x, weight, eps):
    grad_x, _, grad_bias = solution("layer_norm")["layer_norm_backward"](grad, x, weight, eps)
    return grad_x, (grad * _ln_forward(x, eps)[0]).sum(axis=0), grad_bias


def ln_mean_not_sum(grad, x, weight, eps):
    grad_x, _, _ = solution("layer_norm")["layer_norm_backward"](grad, x, weight, eps)
    rows = tuple(range(x.ndim - 1))
    return grad_x, (grad * _ln_forward(x, eps)[0]).sum(rows), grad.mean(rows)


def softmax_dot_only(grad, s):
    return grad * s


def softmax_sign(grad, s):
    return s * (np.sum(grad * s, axis=-1, keepdims=True) - grad)


def lora_dx_scaling_twice(dy, x, W, A, B, scaling):
    dx, dA, dB = solution("lora")["lora_backward"](dy, x, W, A, B, scaling)
    N, K = W.shape
    return dx + (scaling - 1) * scaling * ((dy.reshape(-1, N) @ B) @ A).reshape(x.shape), dA, dB


def lora_not_flattened(dy, x, W, A, B, scaling):
    dx, _, dB = solution("lora")["lora_backward"](dy, x, W, A, B, scaling)
    return dx, scaling * (np.swapaxes(dy @ B, -1, -2) @ x), dB


def lora_transpose_3d(dy, x, W, A, B, scaling):
    dx, _, dB = solution("lora")["lora_backward"](dy, x, W, A, B, scaling)
    return dx, scaling * ((dy @ B).T @ x), dB


def lora_dropout_unmasked_x_in_dA(dy, x, W, A, B, scaling, mask, p):
    dx, _, dB = solution("lora")["lora_dropout_backward"](dy, x, W, A, B, scaling, mask, p)
    N, K = W.shape
    return dx, scaling * ((dy.reshape(-1, N) @ B).T @ x.reshape(-1, K)), dB


def lora_dropout_ignored(dy, x, W, A, B, scaling, mask, p):
    return solution("lora")["lora_backward"](dy, x, W, A, B, scaling)


def matmul_sign(grad, a, b):
    return -(grad @ b.T), a.T @ grad


def matmul_grad_ignored(grad, a, b):
    ones = np.ones_like(grad)
    return ones @ b.T, a.T @ ones


def batched_b_mean(grad, a, b):
    grad_a, _ = solution("matmul")["batched_matmul_backward"](grad, a, b)
    grad_b = np.swapaxes(a, -1, -2) @ grad
    grad_b = grad_b.mean(axis=tuple(range(grad_b.ndim - b.ndim)))  # a mean over b's copies
    return grad_a, grad_b


def gelu_no_product_rule(grad, x):
    c, k = np.sqrt(2 / np.pi), 0.044715
    return grad * 0.5 * (1 + np.tanh(c * (x + k * x ** 3)))


def gelu_missing_three(grad, x):
    c, k = np.sqrt(2 / np.pi), 0.044715
    t = np.tanh(c * (x + k * x ** 3))
    return grad * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + k * x * x))


def gelu_tanh_derivative(grad, x):
    c, k = np.sqrt(2 / np.pi), 0.044715
    t = np.tanh(c * (x + k * x ** 3))
    return grad * (0.5 * (1 + t) + 0.5 * x * (1 - t) * c * (1 + 3 * k * x * x))


def gelu_local_derivative_only(grad, x):
    return solution("gelu")["gelu_backward"](np.ones_like(grad), x)


def ce_divide_by_rows(grad, logits, targets, ignore_index):
    kept = targets != ignore_index
    return solution("cross_entropy")["cross_entropy_backward"](grad, logits, targets, ignore_index) \
        * int(kept.sum()) / targets.size


def ce_ignore_index_ignored(grad, logits, targets, ignore_index):
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    onehot = np.arange(logits.shape[-1]) == targets[..., None]
    return grad * (p - onehot) / targets.size


def ce_onehot_by_indexing(grad, logits, targets, ignore_index):
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    flat = p.reshape(-1, logits.shape[-1]).copy()
    flat[np.arange(flat.shape[0]), targets.reshape(-1)] -= 1
    return grad * flat.reshape(logits.shape) / targets.size


def ce_grad_ignored(grad, logits, targets, ignore_index):
    return solution("cross_entropy")["cross_entropy_backward"](np.ones_like(grad), logits, targets, ignore_index)


def _dora_parts(x, W, A, B, m, scaling, axis=1):
    N, K = W.shape
    V = W + scaling * (B @ A)
    n = np.linalg.norm(V, axis=axis)
    return x.reshape(-1, K), V, n, m / n


def dora_norm_over_columns(dy, x, W, A, B, m, scaling):
    x2, V, n, scale = _dora_parts(x, W, A, B, m, scaling, axis=0)
    g = dy.reshape(-1, W.shape[0]) * scale
    dV = g.T @ x2
    return (g @ V).reshape(x.shape), scaling * B.T @ dV, scaling * dV @ A.T, (g / m * (x2 @ V.T)).sum(axis=0)


def dora_through_the_norm(dy, x, W, A, B, m, scaling):
    # The full derivative of (m / ‖V‖) ⊙ x·Vᵀ with respect to V, row by row.
    x2, V, n, scale = _dora_parts(x, W, A, B, m, scaling)
    dy2 = dy.reshape(-1, W.shape[0])
    z = x2 @ V.T
    dV = (dy2 * scale).T @ x2 - ((dy2 * z).sum(axis=0) * m / n ** 3)[:, None] * V
    return ((dy2 * scale) @ V).reshape(x.shape), scaling * B.T @ dV, scaling * dV @ A.T, (dy2 * z).sum(axis=0) / n


def dora_dA_transposed(dy, x, W, A, B, m, scaling):
    dx, _, dB, dm = solution("dora")["dora_backward"](dy, x, W, A, B, m, scaling)
    x2, _, _, scale = _dora_parts(x, W, A, B, m, scaling)
    return dx, scaling * x2.T @ ((dy.reshape(-1, W.shape[0]) * scale) @ B), dB, dm


def dora_as_lora(dy, x, W, A, B, m, scaling):
    _, _, _, dm = solution("dora")["dora_backward"](dy, x, W, A, B, m, scaling)
    return (*solution("lora")["lora_backward"](dy, x, W, A, B, scaling), dm)


def dora_dm_over_one_axis(dy, x, W, A, B, m, scaling):
    dx, dA, dB, _ = solution("dora")["dora_backward"](dy, x, W, A, B, m, scaling)
    V = W + scaling * (B @ A)
    return dx, dA, dB, (dy * (x @ V.T)).sum(axis=0) / np.linalg.norm(V, axis=1)


def dora_dm_of_y(dy, x, W, A, B, m, scaling):
    dx, dA, dB, _ = solution("dora")["dora_backward"](dy, x, W, A, B, m, scaling)
    x2, V, n, scale = _dora_parts(x, W, A, B, m, scaling)
    return dx, dA, dB, (dy.reshape(-1, W.shape[0]) * (x2 @ V.T) * scale).sum(axis=0)


# (lab, function name, the student's function, words every failure's message has (or one of several),
#  words a hint has)
STUDENT_MISTAKES = [
    ("matmul", "matmul_backward", matmul_sign, "grad_a is wrong", "sign"),
    ("matmul", "matmul_backward", matmul_grad_ignored, "grad_a is wrong", "not used"),
    ("matmul", "batched_matmul_backward", batched_b_mean, "grad_b is wrong", "a mean"),
    ("softmax", "softmax_backward", softmax_dot_only, "grad_x is wrong", "-s·Σ_j grad_j·s_j is missing"),
    ("softmax", "softmax_backward", softmax_sign, "grad_x is wrong", "sign"),
    ("layer_norm", "layer_norm_backward", ln_mean_ignored, "grad_x is wrong", "through the mean"),
    ("layer_norm", "layer_norm_backward", ln_eps_dropped, "is wrong", "eps is missing"),
    ("layer_norm", "layer_norm_backward", lambda *a: ln_eps_dropped(*a, everywhere=False), "grad_x is wrong",
     "eps is missing"),
    ("layer_norm", "layer_norm_backward", ln_mean_not_sum, "grad_bias is wrong", "a mean where a sum belongs"),
    ("lora", "lora_backward", lora_dx_scaling_twice, "dx is wrong", "scaling twice"),
    ("lora", "lora_dropout_backward", lora_dropout_unmasked_x_in_dA, "dA is wrong", "the dropped x"),
    ("lora", "lora_dropout_backward", lora_dropout_ignored, "is wrong", "dropout"),
    ("gelu", "gelu_backward", gelu_no_product_rule, "grad_x is wrong", "only the first term"),
    ("gelu", "gelu_backward", gelu_missing_three, "grad_x is wrong", "the factor 3 is missing"),
    ("gelu", "gelu_backward", gelu_tanh_derivative, "grad_x is wrong", "1 - tanh², not 1 - tanh"),
    ("gelu", "gelu_backward", gelu_local_derivative_only, "grad_x is wrong", "not used"),
    ("cross_entropy", "cross_entropy_backward", ce_divide_by_rows, "grad_logits is wrong", "kept targets"),
    ("cross_entropy", "cross_entropy_backward", ce_ignore_index_ignored, "grad_logits", "ignore_index"),
    ("cross_entropy", "cross_entropy_backward", ce_onehot_by_indexing, ("raised IndexError", "grad_logits is wrong"),
     "ignore_index"),
    ("cross_entropy", "cross_entropy_backward", ce_grad_ignored, "grad_logits is wrong", "not used"),
    ("dora", "dora_backward", dora_norm_over_columns, ("raised ValueError", "is wrong"), "over the input axis"),
    ("dora", "dora_backward", dora_through_the_norm, ("dA is wrong", "dB is wrong"), "is detached"),
    ("dora", "dora_backward", dora_dA_transposed, "dA has shape", "last two axes swapped"),
    ("dora", "dora_backward", dora_as_lora, "is wrong", "plain LoRA's"),
    ("dora", "dora_backward", dora_dm_over_one_axis, "dm has shape", "summed over every one of them"),
    ("dora", "dora_backward", dora_dm_of_y, "dm is wrong", "without m"),
]


@pytest.mark.parametrize("name, function, student, message, hint", STUDENT_MISTAKES,
                         ids=[f"{m[0]}-{m[2].__name__}" for m in STUDENT_MISTAKES])
def test_a_students_mistake_fails_on_every_seed_and_says_what(name, function, student, message, hint):
    functions = {**solution(name), function: student}
    for seed in SEEDS:
        result = labs.check_functions(name, functions, seed=seed)
        assert not result.ok, f"seed {seed}: the mistake passed:\n{result.report()}"
        for line in result.failures:
            messages = message if isinstance(message, tuple) else (message,)
            assert line.subject.startswith(function) and any(m in line.message for m in messages), result.report()
            assert any(hint in h for h in line.hints), result.report()


@pytest.mark.parametrize("name, function, student, hint", [
    ("layer_norm", "layer_norm_backward", ln_weight_summed_over_axis_0,
     "summed over every one of them; yours still has 1 of them"),
    ("lora", "lora_backward", lora_not_flattened, "A was broadcast over the leading axes"),
    ("lora", "lora_backward", lora_transpose_3d, ".T reverses every axis"),
], ids=["layer_norm-axis-0-only", "lora-not-flattened", "lora-T-of-3d"])
def test_a_mistake_in_the_leading_axes_gets_a_hint_that_fits(name, function, student, hint):
    functions = {**solution(name), function: student}
    for seed in SEEDS:
        result = labs.check_functions(name, functions, seed=seed)
        failures = result.failures
        assert failures and all("two leading axes" in line.subject for line in failures), result.report()
        assert all(any(hint in h for h in line.hints) for line in failures), result.report()
    assert "(axis=0)" not in str(labs.check_functions("layer_norm", {
        "layer_norm_backward": ln_weight_summed_over_axis_0}, seed=0))


def test_a_sum_that_kept_its_axes_gets_the_keepdims_hint():
    right = solution("layer_norm")["layer_norm_backward"]

    def bias_keepdims(grad, x, weight, eps):
        grad_x, grad_weight, _ = right(grad, x, weight, eps)
        return grad_x, grad_weight, grad.sum(axis=tuple(range(x.ndim - 1)), keepdims=True)

    for seed in SEEDS:
        result = labs.check_functions("layer_norm", {"layer_norm_backward": bias_keepdims}, seed=seed)
        assert len(result.failures) == 2, result.report()
        for line in result.failures:
            assert line.message.startswith("grad_bias has shape (1"), result.report()
            assert any("a sum with keepdims=True keeps the summed axes" in h for h in line.hints), result.report()


def test_a_gradient_off_by_a_factor_that_is_no_size_gets_no_misleading_story():
    def off(grad, s):
        return 0.3 * solution("softmax")["softmax_backward"](grad, s)

    result = labs.check_functions("softmax", {"softmax_backward": off}, seed=0)
    hints = [h for line in result.failures for h in line.hints]
    assert hints and all(h == "grad_x is 0.3 × the right value everywhere: a constant factor is off" for h in hints)


def test_layer_norm_cases_make_eps_matter_in_every_row():
    function = labs.get_lab("layer_norm").functions[0]
    for seed in SEEDS:
        for case in function.make_cases(np.random.default_rng(seed)):
            x, eps = case.arrays["x"], case.options["eps"]
            variance = x.var(axis=-1)
            # 1/sqrt(var) against 1/sqrt(var + eps): at least 10% apart in every row, rtol is 0.1%.
            assert np.all(np.sqrt((variance + eps) / variance) > 1.1), case.description


def test_a_solution_that_only_works_at_B_zero_fails():
    # At B = 0, dA = s·(dy·B)ᵀ·x is exactly zero: a dA of zeros would pass on such inputs.
    right = solution("lora")["lora_backward"]

    def zero_dA(dy, x, W, A, B, scaling):
        dx, _, dB = right(dy, x, W, A, B, scaling)
        return dx, np.zeros_like(A), dB

    function = labs.get_lab("lora").functions[0]
    case = function.make_cases(np.random.default_rng(0))[0]
    at_zero = replace(case, arrays={**case.arrays, "B": np.zeros_like(case.arrays["B"])})
    student = LocalStudent(zero_dA, "test")
    assert all(c.ok for c in numeric_check(function, student, at_zero, seed=0))  # the bug hides at B = 0
    for case in function.make_cases(np.random.default_rng()):
        assert np.all(np.abs(case.arrays["B"]) >= 0.5)
    result = labs.check_functions("lora", {**solution("lora"), "lora_backward": zero_dA}, seed=0)
    assert len(result.failures) == 3, result.report()
    for line in result.failures:
        assert "dA is wrong" in line.message and "dx and dB are right" in line.message, result.report()
        assert any("all zeros" in h for h in line.hints), result.report()


# ---- the same inputs for a case, whatever the other parts do -----------------------------------------
def test_each_case_draws_the_same_inputs_whatever_the_other_parts_do():
    seen = {}

    def recording(key):
        right = solution("matmul")["batched_matmul_backward"]

        def batched(grad, a, b):
            seen.setdefault(key, []).append((grad.copy(), a.copy(), b.copy()))
            return right(grad, a, b)
        return batched

    def not_written(grad, a, b):
        raise NotImplementedError

    def wrong(grad, a, b):
        return grad @ b.T * 2, a.T @ grad

    for key, first in (("not written", not_written), ("wrong", wrong), ("right", solution("matmul")["matmul_backward"])):
        labs.check_functions("matmul", {"matmul_backward": first, "batched_matmul_backward": recording(key)}, seed=11)
    calls = list(seen.values())
    assert len(calls[0]) > 4
    for other in calls[1:]:
        assert len(other) == len(calls[0])
        for mine, theirs in zip(calls[0], other):
            assert all(np.array_equal(m, t) for m, t in zip(mine, theirs))


def test_the_same_seed_draws_the_same_cases_and_a_fresh_one_is_reported():
    functions = solution("lora")
    first, again = labs.check_functions("lora", functions, seed=123), labs.check_functions("lora", functions, seed=123)
    assert [line.subject for line in first.lines] == [line.subject for line in again.lines]
    other = labs.check_functions("lora", functions, seed=124)
    assert [line.subject for line in first.lines] != [line.subject for line in other.lines]
    fresh = labs.check("lora", path=SOLUTIONS / lab_file("lora"))
    assert f"(seed {fresh.seed})" in fresh.report().splitlines()[0]


# ---- what else goes wrong in a student's file -----------------------------------------------------
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
    assert "transpose" in result.failures[0].hints[0]


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
    ("return grad @ b.T, float((a.T @ grad).sum())", "grad_b is a float, expected a NumPy array"),
    ("return (grad @ b.T).astype(np.float32), a.T @ grad", "grad_a is float32, but a is float64"),
    ("grad *= 2\n    return grad @ b.T / 2, a.T @ grad / 2", "matmul_backward changed its argument grad in place"),
], ids=["one value", "three values", "None", "a float", "dtype", "in place"])
def test_what_is_returned_is_checked_before_the_values(tmp_path, body, message):
    path = variant(tmp_path, "matmul", f"def matmul_backward(grad, a, b):\n    {body}\n")
    result = labs.check("matmul", path=path, seed=0)
    assert [line.subject.split(",")[0] for line in result.failures] == ["matmul_backward"] * 2, result.report()
    assert all(message in line.message for line in result.failures), result.report()


def test_float32_inputs_must_give_float32_gradients():
    def promoting(grad, s):
        out = np.zeros(s.shape)
        out += s * (grad - np.sum(grad * s, axis=-1, keepdims=True))
        return out

    result = labs.check_functions("softmax", {"softmax_backward": promoting}, seed=0)
    (failure,) = result.failures
    assert failure.subject.startswith("softmax_backward, float32 inputs")
    assert failure.message == "grad_x is float64, but x is float32: a gradient has its input's dtype"
    assert "np.zeros" in failure.hints[0]


def test_scaling_applied_twice_is_named_in_the_hint():
    right = solution("lora")["lora_backward"]

    def twice(dy, x, W, A, B, scaling):
        dx, dA, dB = right(dy, x, W, A, B, scaling)
        return dx, dA, dB * scaling

    result = labs.check_functions("lora", {**solution("lora"), "lora_backward": twice}, seed=0)
    assert len(result.failures) == 3
    for line in result.failures:
        scaling = float(re.search(r"scaling ([0-9.]+)", line.subject).group(1))
        assert line.message.startswith("dB is wrong")
        (hint,) = line.hints
        assert hint.startswith("dB is the right value times scaling (") and hint.endswith("scaling is applied twice")
        assert abs(float(hint.split("(")[1].split(")")[0]) - scaling) < 0.01


# ---- isolation: what a file can do besides being wrong --------------------------------------------------
TRICKS = {
    "sys.exit in the function": ("import sys\ndef softmax_backward(grad, s):\n    sys.exit(0)\n",
                                 "raised SystemExit at lab2_softmax.py:3"),
    "os._exit in the function": ("import os\ndef softmax_backward(grad, s):\n    os._exit(0)\n",
                                 "ended while running softmax_backward (exit code 0)"),
    "sys.exit at the top": ("import sys\nsys.exit(0)\n", "could not be run: SystemExit"),
    "a crash of the interpreter": ("import ctypes\ndef softmax_backward(grad, s):\n    ctypes.string_at(0)\n",
                                   "ended while running softmax_backward (exit code -11)"),
    "the result class patched": ("import minilora.labs.report as r, minilora.labs.checker as c\n"
                                 "r.LabResult.ok = property(lambda self: True)\n"
                                 "r.CheckLine.__init__ = lambda self, *a, **k: None\n"
                                 "c.check = lambda *a, **k: None\n"
                                 "def softmax_backward(grad, s):\n    return grad\n", "grad_x is wrong"),
    "an endless loop": ("def softmax_backward(grad, s):\n    while True:\n        pass\n",
                        "did not finish within 3 s while running softmax_backward"),
    "bytes written to the checker's pipe": ("import os\ndef softmax_backward(grad, s):\n"
                                            "    for fd in range(20):\n"
                                            "        try:\n            os.write(fd, b'\\x05\\0\\0\\0\\0\\0\\0\\0{}}}}')\n"
                                            "        except OSError:\n            pass\n    return grad\n",
                                            "did the file write to the checker's pipe?"),
    "closing its stdin": ("import os\nos.close(0)\ndef softmax_backward(grad, s):\n    return grad\n",
                          "ended while running softmax_backward"),
}


@pytest.mark.parametrize("trick", list(TRICKS))
def test_a_file_cannot_pass_by_exiting_patching_hanging_or_crashing(tmp_path, capsys, trick):
    source, message = TRICKS[trick]
    if "ctypes" in source and sys.platform == "win32":
        pytest.skip("the crash is a POSIX signal")
    path = tmp_path / "lab2_softmax.py"
    path.write_text(source)
    assert cli.main(["lab", "check", "softmax", "--file", str(path), "--seed", "0", "--timeout", "3"]) == 1
    out = capsys.readouterr().out
    assert message in out and "FAIL" in out and "all 4 checks passed" not in out, out


def test_a_file_that_prints_still_passes_and_its_prints_do_not_reach_the_report(tmp_path, capsys):
    path = variant(tmp_path, "softmax", "import os\nprint('PASS  fake')\nos.write(1, b'all 9 checks passed\\n')\n")
    assert cli.main(["lab", "check", "softmax", "--file", str(path), "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "fake" not in out and "all 4 checks passed" in out


def test_grade_checks_every_file_apart_and_writes_a_record_per_part(tmp_path, capsys):
    folder = tmp_path / "submissions"
    for student, source in [("ada", (SOLUTIONS / "lab1_matmul.py").read_text()),
                            ("bob", "import os\nos._exit(0)\n"),
                            ("cy", (SOLUTIONS / "lab1_matmul.py").read_text()
                             + "\ndef batched_matmul_backward(grad, a, b):\n    while True:\n        pass\n")]:
        (folder / student).mkdir(parents=True)
        (folder / student / "lab1_matmul.py").write_text(source)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "junk.py").write_text("")
    records_path = tmp_path / "grades.json"
    code = cli.main(["lab", "grade", "matmul", str(folder), "--seed", "5", "--timeout", "5",
                     "--json", str(records_path)])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0].startswith(f"PASS  {folder / 'ada' / 'lab1_matmul.py'}: 2 of 2 parts passed")
    assert out[1].startswith(f"FAIL  {folder / 'bob' / 'lab1_matmul.py'}: 0 of 2 parts passed")
    assert out[2].startswith(f"FAIL  {folder / 'cy' / 'lab1_matmul.py'}: 1 of 2 parts passed; "
                             "batched_matmul_backward: ")
    assert "did not finish within 5 s" in out[2]
    assert out[3] == "1 of 3 files passed every check (lab matmul, seed 5); the same inputs again: --seed 5"
    records = json.loads(records_path.read_text())
    assert [(Path(r["file"]).parent.name, r["part"], r["passed"]) for r in records] == [
        ("ada", "matmul_backward", True), ("ada", "batched_matmul_backward", True),
        ("bob", "matmul_backward", False), ("bob", "batched_matmul_backward", False),
        ("cy", "matmul_backward", True), ("cy", "batched_matmul_backward", False)]
    assert all(r["lab"] == "matmul" and r["seed"] == 5 and r["seconds"] >= 0 for r in records)
    assert "ended while loading the file (exit code 0)" in records[2]["message"]
    assert records[0]["message"] == "all 3 checks passed"


def test_grade_exits_0_when_every_file_passes_and_1_for_a_missing_path(tmp_path, capsys):
    assert cli.main(["lab", "grade", "softmax", str(SOLUTIONS / "lab2_softmax.py"), "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("PASS  ")
    assert cli.main(["lab", "grade", "softmax", str(LABS_FOLDER / "lab2_softmax.py"), "--seed", "1"]) == 1
    assert capsys.readouterr().out.splitlines()[0].endswith(
        "0 of 1 parts passed; softmax_backward: not written yet: fill in the TODO in lab2_softmax.py:softmax_backward")
    assert cli.main(["lab", "grade", "softmax", str(tmp_path / "nobody")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert cli.main(["lab", "grade", "softmax", str(tmp_path)]) == 1
    assert "no .py files to grade" in capsys.readouterr().err


# ---- the command line and the Python API ----------------------------------------------------------
def test_lab_start_copies_the_template_and_never_overwrites(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "my labs"
    assert cli.main(["lab", "start", "softmax", str(folder)]) == 0
    copy = folder / "lab2_softmax.py"
    assert copy.read_text() == (LABS_FOLDER / "lab2_softmax.py").read_text()
    assert f"minilora lab check softmax --file {copy}" in capsys.readouterr().out
    copy.write_text("# my work\n")
    assert cli.main(["lab", "start", "softmax", str(folder)]) == 1
    assert "already exists" in capsys.readouterr().err and copy.read_text() == "# my work\n"
    # `lab check` without --file checks the copy in the current folder.
    monkeypatch.chdir(folder)
    assert cli.main(["lab", "check", "softmax", "--seed", "0"]) == 1
    out = capsys.readouterr().out
    assert "checking lab2_softmax.py (seed 0)" in out and "has no function softmax_backward" in out


def test_lab_check_without_a_file_here_says_how_to_start(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["lab", "check", "gelu"]) == 1
    assert "minilora lab start gelu" in capsys.readouterr().err


def test_lab_check_exits_0_when_every_check_passes_and_1_otherwise(tmp_path, capsys):
    path = SOLUTIONS / lab_file("layer_norm")
    assert cli.main(["lab", "check", "layer_norm", "--file", str(path), "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"lab 3, layer_norm: checking {path} (seed 4)"
    assert all(line.startswith("PASS  ") for line in out.splitlines()[1:-1])
    wrong = variant(tmp_path, "layer_norm", "def layer_norm_backward(grad, x, weight, eps):\n"
                                            "    return grad, weight, weight\n")
    assert cli.main(["lab", "check", "layer_norm", "--file", str(wrong), "--seed", "4"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  layer_norm_backward, case 1 of 2" in out
    assert f"minilora lab check layer_norm --file {wrong} --seed 4" in out


def test_an_unknown_lab_is_a_clear_error_listing_the_labs(capsys):
    listed = ", ".join(labs.LABS)
    assert cli.main(["lab", "check", "attention"]) == 1
    assert capsys.readouterr().err.strip() == f"minilora lab check: unknown lab 'attention'; the labs are: {listed}"
    with pytest.raises(ValueError, match=f"unknown lab 'attention'; the labs are: {listed}"):
        labs.check("attention")


def test_a_missing_file_a_bad_seed_and_a_bad_timeout_are_clear_errors(tmp_path, capsys):
    missing = tmp_path / "nowhere.py"
    assert cli.main(["lab", "check", "lora", "--file", str(missing)]) == 1
    assert capsys.readouterr().err.strip() == f"minilora lab check: no such lab file: {missing}"
    with pytest.raises(FileNotFoundError, match="no such lab file"):
        labs.check("lora", path=missing)
    assert cli.main(["lab", "check", "lora", "--file", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == (f"minilora lab check: {tmp_path} is a folder, expected a lab's "
                                               ".py file in it (the lab<N>_<name>.py that `minilora lab start` writes)")
    with pytest.raises(ValueError, match=r"seed must be a non-negative int, got -1"):
        labs.check("lora", path=SOLUTIONS / lab_file("lora"), seed=-1)
    with pytest.raises(ValueError, match=r"timeout must be a positive number of seconds, got 0"):
        labs.check("lora", path=SOLUTIONS / lab_file("lora"), timeout=0)


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
