"""Lab 5: the backward of GELU, the activation inside every MLP of the GPT.

The GPT uses GELU in its tanh approximation (as GPT-2 does), elementwise:

    y = 0.5·x·(1 + t),   t = tanh(c·(x + k·x³)),   c = √(2/π) ≈ 0.7979, k = 0.044715
    x, y, grad: any shape (every element is its own GELU)

gelu_backward(grad, x) gets grad = dL/dy and returns grad_x = dL/dx, of x's shape.

Derive it in steps:
  1. y is a product of 0.5·x and (1 + t): the product rule gives two terms.
  2. t = tanh(z) with z = c·(x + k·x³): the chain rule gives dt/dx = (dtanh/dz)·(dz/dx).
     What is the derivative of tanh, written with t itself? And of z?
  3. Elementwise, grad_x = grad·dy/dx.

Check your work:

    minilora lab check gelu                                  # lab5_gelu.py in this folder
    minilora lab check gelu --file path/to/your/lab5_gelu.py --seed 3
"""

import math  # noqa: F401 (your code may use it)

import numpy as np  # noqa: F401 (your code will use it)

C = math.sqrt(2 / math.pi)
K = 0.044715


def gelu_backward(grad, x):
    """grad (...) = dL/dy, x (...) -> grad_x (...), for y = 0.5·x·(1 + tanh(C·(x + K·x³)))."""
    raise NotImplementedError("TODO: return grad_x, by the product rule and the chain rule")
