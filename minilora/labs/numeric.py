"""The numerical check: the student's backward, wrapped as a minilora op, through minilora.gradcheck.

StudentOp is an ordinary Function whose forward is the lab's formula and whose backward is the
student's function. gradcheck then compares what that backward gives with central differences of
the forward, in float64, for every input that has a gradient, exactly as it checks minilora's own
ops. The student's function gets the incoming gradient and the values named in its signature.
"""

import minilora
from minilora.function import Function
from minilora.gradcheck import gradcheck
from minilora.labs.calling import student_arguments
from minilora.labs.errors import StudentError


class StudentOp(Function):
    @staticmethod
    def forward(ctx, *arrays, function, student, names, options):
        inputs = dict(zip(names, arrays))
        out, saved = function.forward(**inputs, **options)
        ctx.values = {**inputs, **saved, **options}
        ctx.lab_function, ctx.student, ctx.names = function, student, names
        return out

    @staticmethod
    def backward(ctx, grad):
        function = ctx.lab_function
        try:
            returned = ctx.student(*student_arguments(function, grad, ctx.values))
        except Exception as error:  # the student's code failed: tell it apart from a failure of minilora
            raise StudentError(error) from error
        gradients = dict(zip(function.wrt, returned if len(function.gradients) > 1 else (returned,)))
        # Inputs without a gradient (LoRA's frozen W) get None.
        return tuple(gradients.get(name) for name in ctx.names)


def numeric_check(function, student, case, seed):
    """gradcheck of `student` as the backward of function.forward on `case`.

    Returns gradcheck's InputCheck of each gradient, in the order of function.gradients: the
    student's values (.analytic), the central differences (.numeric), the errors and a hint.
    """
    names = list(case.arrays)
    tensors = [minilora.tensor(case.arrays[name], requires_grad=name in function.wrt) for name in names]

    def run(*inputs):
        return StudentOp.apply(*inputs, function=function, student=student, names=names, options=case.options)

    by_input = {check.name: check for check in gradcheck(run, tensors, names=names, seed=seed).inputs}
    return [by_input[wrt] for wrt in function.wrt]
