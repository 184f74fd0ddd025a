"""Backend "cupy": the reference's matrix products on CuPy arrays, the GPU baseline.

Where it sits: `minilora.kernels.lora_forward` / `lora_backward` with backend "cupy" call `forward`
and `backward` here. The arithmetic is reference.py's, run by CuPy: every `@` is a separate cuBLAS
call, and the intermediates (x·Wᵀ, u·Bᵀ, dy·W, v·A) go to device memory and come back to be added:
exactly the extra passes over the output that the fused kernels (backend "cuda") avoid. The
benchmark (minilora/bench.py) times the kernels against it.
"""

from minilora.kernels import checks, reference


def forward(x, W, A, B, scaling, bias=None):
    """``u = x·Aᵀ`` (M, r) and ``y = x·Wᵀ + scaling·u·Bᵀ (+ bias)`` (M, N); returns ``(y, u)``.

    x (M, K), W (N, K), A (r, K), B (N, r), bias (N,) or None: CuPy arrays of one float dtype.
    """
    named = {"x": x, "W": W, "A": A, "B": B} | ({} if bias is None else {"bias": bias})
    checks.check_arrays(named, device="cuda")
    checks.lora_sizes(x, W, A, B, bias)
    return reference.lora_forward(x, W, A, B, checks.check_scaling(scaling), bias)


def backward(dy, x, W, A, B, u, scaling):
    """With ``v = dy·B``: ``dx = dy·W + scaling·v·A`` (M, K), ``dA = scaling·vᵀ·x`` (r, K),
    ``dB = scaling·dyᵀ·u`` (N, r); returns ``(dx, dA, dB)``.
    """
    checks.check_arrays({"dy": dy, "x": x, "W": W, "A": A, "B": B, "u": u}, device="cuda")
    _, _, N, r = checks.lora_sizes(x, W, A, B)
    checks.check_backward_shapes(dy, x, u, N, r)
    return reference.lora_backward(dy, x, W, A, B, u, checks.check_scaling(scaling))
