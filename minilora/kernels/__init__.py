"""minilora.kernels: the fused LoRA op on plain arrays, y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ and its backward.

    y, u = lora_forward(x, W, A, B, scaling, bias=None, backend=None, variant=None)
    dx, dA, dB = lora_backward(dy, x, W, A, B, u, scaling, backend=None, variant=None)

The one op F.lora_linear is built on. Four backends compute the same thing: "numpy" (the
reference, reference.py), "cpp" (C++, csrc/lora_cpu.cpp), "cuda" (the CUDA kernel ladder,
csrc/cuda/) and "cupy" (the GPU baseline). dispatch.py says how one is picked; `use_backend`
and MINILORA_BACKEND choose one by hand; `backend_status(name)` says why one cannot run here.
"""

from minilora.kernels.dispatch import (  # noqa: F401
    BACKENDS,
    available_backends,
    backend_status,
    default_backend,
    lora_backward,
    lora_forward,
    use_backend,
)

__all__ = ["BACKENDS", "available_backends", "backend_status", "default_backend", "lora_backward",
           "lora_forward", "use_backend"]
