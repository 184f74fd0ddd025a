"""Lab 5, gelu: the gradient of GELU in its tanh approximation, the GPT's MLP activation.

    t = tanh(c·(x + k·x³))        y = 0.5·x·(1 + t)        c = √(2/π), k = 0.044715
    dy/dx = 0.5·(1 + t) + 0.5·x·(1 - t²)·c·(1 + 3·k·x²)        grad_x = grad·dy/dx

The values are drawn with |x| in [0.3, 3]: there both terms of the product rule and the x² in the
inner derivative are large enough that leaving any one out moves every element well past the
tolerance (near x = 0 the second term vanishes, and far out t = ±1 hides the tanh's derivative).
"""

import numpy as np

from minilora.labs.draw import away_from_zero, sizes
from minilora.labs.spec import Case, Lab, LabFunction, Mistake
from minilora.ops.unary import GELU_C, GELU_K


def forward(x):
    t = np.tanh(GELU_C * (x + GELU_K * x ** 3))
    return 0.5 * x * (1 + t), {}


def cases(rng):
    n, batch, time = sizes(rng, 3)
    return [Case(f"x {shape}{why}", {"x": away_from_zero(rng, shape, low=0.3, high=3.0)})
            for shape, why in (((n,), ", one vector"), ((batch, time, n), ", two leading axes"))]


def _grad(grad, x, first=1.0, second=1.0, tanh_derivative=lambda t: 1 - t * t, c=GELU_C, three=3.0):
    """grad·dy/dx, right by default; each option makes one of the mistakes below."""
    t = np.tanh(GELU_C * (x + GELU_K * x ** 3))
    inner = c * (1 + three * GELU_K * x ** 2)
    return grad * (first * 0.5 * (1 + t) + second * 0.5 * x * tanh_derivative(t) * inner)


def _exact_gelu_grad(grad, x):
    """The derivative of the exact GELU x·Φ(x), a close but different function."""
    from math import erf, pi, sqrt
    phi = 0.5 * (1 + np.vectorize(erf)(x / sqrt(2)))
    return grad * (phi + x * np.exp(-x * x / 2) / sqrt(2 * pi))


MISTAKES = (
    Mistake("grad_x", lambda **a: _grad(**a, second=0.0),
            "only the first term 0.5·(1 + t): t depends on x too, so the product rule adds 0.5·x·dt/dx"),
    Mistake("grad_x", lambda **a: _grad(**a, first=0.0),
            "only the term with dt/dx: the product rule on 0.5·x·(1 + t) also gives 0.5·(1 + t)"),
    Mistake("grad_x", lambda **a: _grad(**a, tanh_derivative=lambda t: 1 - t),
            "the derivative of tanh is 1 - tanh², not 1 - tanh"),
    Mistake("grad_x", lambda **a: _grad(**a, three=1.0),
            "the derivative of k·x³ is 3·k·x²: the factor 3 is missing"),
    Mistake("grad_x", lambda **a: _grad(**a, three=0.0),
            "the inner derivative is c·(1 + 3·k·x²): the chain rule through x + k·x³ is missing"),
    Mistake("grad_x", lambda **a: _grad(**a, c=1.0),
            "the inner derivative is c·(1 + 3·k·x²) with c = √(2/π): the factor c is missing"),
    Mistake("grad_x", lambda **a: _grad(**a, second=-1.0),
            "the term 0.5·x·(1 - t²)·c·(1 + 3·k·x²) has the wrong sign"),
    Mistake("grad_x", _exact_gelu_grad,
            "this is the derivative of the exact GELU x·Φ(x); the forward here is the tanh approximation"),
)

LAB = Lab(
    number=5,
    name="gelu",
    title="GELU (the tanh approximation), the GPT's activation: grad_x",
    file_name="lab5_gelu.py",
    functions=(
        LabFunction(name="gelu_backward", arguments=("grad", "x"), gradients=("grad_x",), wrt=("x",),
                    forward=forward, make_cases=cases, mistakes=MISTAKES),
    ),
)
