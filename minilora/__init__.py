"""minilora: Low-Rank Adaptation from scratch, every line readable.

    import minilora
    x = minilora.tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()
    x.grad            # array([[2., 4.]], dtype=float32)
"""

from minilora import functional, kernels, labs, lora, nn, optim
from minilora.backend import cuda_available
from minilora.creation import arange, ones, randn, zeros
from minilora.gradcheck import assert_gradcheck, gradcheck
from minilora.random import manual_seed
from minilora.tensor import Tensor, is_grad_enabled, no_grad, tensor

F = functional

__all__ = ["F", "Tensor", "arange", "assert_gradcheck", "cuda_available", "functional", "gradcheck",
           "is_grad_enabled", "kernels", "lora", "manual_seed", "nn", "no_grad", "ones", "optim", "randn",
           "tensor", "zeros"]
__version__ = "0.1.0"
