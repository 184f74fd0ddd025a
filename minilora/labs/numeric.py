"""The numerical check: the student's backward, wrapped as a minilora op, through minilora.gradcheck.

StudentOp is an ordinary Function whose forward is the lab's formula and whose backward is the
student's function. gradcheck then compares what that backward gives with central differences of
the forward, in float64, for every input that has a gradient, exactly as it checks minilora's own
ops. The student's function gets the incoming gradient and the values named in its signature.

A scalar output (a loss) would reach the backward with the gradient 1, and a backward that
ignores its incoming gradient would pass: such an output is multiplied by a random weight first.
"""

import minilora
from minilora.function import Function
from minilora.gradcheck import gradcheck
from minilora.labs.calling import as_gradients, student_arguments
from minilora.labs.shapes import check_gradients


class StudentOp(Function):
    @staticmethod
    def forward(ctx, *arrays, function, student, names, options, constants):
        inputs = {**dict(zip(names, arrays)), **constants}
        out, saved = function.forward(**inputs, **options)
        ctx.values = {**inputs, **saved, **options}
        ctx.lab_function, ctx.student, ctx.names = function, student, names
        return out

    @staticmethod
    def backward(ctx, grad):
        function = ctx.lab_function
        # Raises StudentRaised or NotImplementedError for the checker; a Failure when what comes back
        # is not the arrays that the first call gave (a function that changes its mind).
        returned, _ = ctx.student.call(student_arguments(function, grad, ctx.values))
        gradients = as_gradients(returned, function)
        check_gradients(function, gradients, ctx.values)
        by_input = dict(zip(function.wrt, gradients))
        # Inputs without a gradient (LoRA's frozen W, integer targets) get None.
        return tuple(by_input.get(name) for name in ctx.names)


def numeric_check(function, student, case, seed, output_weight=1.0):
    """gradcheck of `student` (a LocalStudent or RemoteStudent) as the backward of function.forward on `case`.

    output_weight multiplies a scalar output (see the module docstring).
    Returns gradcheck's InputCheck of each gradient, in the order of function.gradients: the
    student's values (.analytic), the central differences (.numeric), the errors and a hint.
    """
    # Integer arrays (class targets) have no gradient and cannot share an op with float inputs: they
    # go to the forward as constants.
    names = [name for name, array in case.arrays.items() if array.dtype.kind == "f"]
    constants = {name: array for name, array in case.arrays.items() if name not in names}
    tensors = [minilora.tensor(case.arrays[name], requires_grad=name in function.wrt) for name in names]

    def run(*inputs):
        out = StudentOp.apply(*inputs, function=function, student=student, names=names, options=case.options,
                              constants=constants)
        return out * output_weight if out.size == 1 else out

    by_input = {check.name: check for check in gradcheck(run, tensors, names=names, seed=seed).inputs}
    return [by_input[wrt] for wrt in function.wrt]
