"""Lab 5, reference solution: the backward of GELU in its tanh approximation.

    y = 0.5·x·(1 + t),  t = tanh(z),  z = C·(x + K·x³)
    dy/dx = 0.5·(1 + t) + 0.5·x·dt/dx        (the product rule)
    dt/dx = (1 - t²)·C·(1 + 3·K·x²)          (tanh' = 1 - tanh², then the chain rule through z)
"""

import math

import numpy as np

C = math.sqrt(2 / math.pi)
K = 0.044715


def gelu_backward(grad, x):
    """grad (...) = dL/dy, x (...) -> grad_x (...), for y = 0.5·x·(1 + tanh(C·(x + K·x³)))."""
    t = np.tanh(C * (x + K * x ** 3))
    dt_dx = (1 - t * t) * C * (1 + 3 * K * x * x)
    return grad * (0.5 * (1 + t) + 0.5 * x * dt_dx)
