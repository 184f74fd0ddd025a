"""minilora: Low-Rank Adaptation from scratch, every line readable.

    import minilora
    x = minilora.tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()
    x.grad            # array([[2., 4.]], dtype=float32)
"""

from minilora import functional
from minilora.backend import cuda_available
from minilora.tensor import Tensor, is_grad_enabled, no_grad, tensor

F = functional

__all__ = ["F", "Tensor", "cuda_available", "functional", "is_grad_enabled", "no_grad", "tensor"]
__version__ = "0.1.0"
