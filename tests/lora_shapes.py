"""Awkward shapes (M, N, K, r) of a LoRA layer, for the CUDA kernel tests on a GPU
(test_kernels_cuda.py) and on the CPU emulator (test_emulated.py).

Ones, a prime K, r larger than K (256 and 300), odd N, tile sizes and tile + 1 (16 for the naive and
tiled rungs, 128 / 64 for fused float32 / float64), the cancellation shape of
minilora/kernels/accuracy.py, and shapes that make the kernels split a long inner dimension into
partial sums (u and y at small M with K + r >= 512; dA and dB at large M).
"""

SHAPES = [
    (1, 1, 1, 1),
    (1, 5, 3, 1),
    (4, 1, 3, 2),
    (5, 7, 1, 1),
    (2, 3, 3, 256),
    (3, 2, 5, 300),
    (16, 16, 16, 16),
    (17, 33, 17, 5),
    (66, 1, 1, 18),
    (65, 64, 63, 8),
    (129, 128, 19, 3),
    (8, 40, 530, 4),
    (3, 9, 1030, 2),
    (530, 20, 24, 3),
]

# Larger ones, for the GPU only: each would take the emulator tens of seconds.
GPU_SHAPES = SHAPES + [
    (129, 128, 127, 3),
    (257, 129, 515, 16),
    (8, 600, 1030, 4),
    (700, 20, 40, 3),
]
