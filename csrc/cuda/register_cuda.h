// The CUDA half of the pybind11 module minilora._C (defined in register_cuda.cpp, compiled by the C++ compiler: it holds no device code).
//
// csrc/bindings.cpp calls register_cuda(m) when the module is built with CUDA (MINILORA_WITH_CUDA).
// It adds these functions, all thin: Python (minilora/kernels/cuda.py) validates the arrays,
// allocates every output and scratch buffer with CuPy, and passes raw device pointers
// (`array.data.ptr`, as ints) and CuPy's current stream (`cupy.cuda.get_current_stream().ptr`).
//
//   cuda_device_status() -> (device_count, error_message)
//       Never throws: without a driver or a GPU it returns (0, "<why>"); otherwise (count, "").
//
//   lora_workspace_size(variant, dtype, M, N, K, r, backward) -> int
//       Elements of scratch (of `dtype`) the forward (backward=False) or backward (True) of
//       `variant` needs: partial sums of products split along their inner dimension, and in the
//       backward v = dy·B (M, r). May be 0.
//
//   lora_warp_tiles(rows=1, cols=1) -> (names, chosen)
//       The warp rung's tile configurations, largest block tile first, and the one it runs a
//       rows × cols product with: $MINILORA_WARP_TILES when set (ValueError if it names none),
//       else the choice per shape (lora_warp.cu).
//
//   lora_forward_cuda(variant, dtype, x, W, A, B, bias, y, u, workspace, workspace_size,
//                     M, N, K, r, scaling, stream)
//       u = x·Aᵀ (M, r), y = x·Wᵀ + scaling·u·Bᵀ (+ bias) (M, N). bias = 0 means no bias.
//
//   lora_backward_cuda(variant, dtype, dy, x, W, A, B, u, dx, dA, dB, workspace, workspace_size,
//                      M, N, K, r, scaling, stream)
//       v = dy·B, dx = dy·W + scaling·v·A (M, K), dA = scaling·vᵀ·x (r, K),
//       dB = scaling·dyᵀ·u (N, r).
//
//   lora_forward_nf4_cuda(dtype, x, packed, absmax, code, block_size, A, B, bias, y, u, workspace,
//                         workspace_size, M, N, K, r, scaling, stream)
//   lora_backward_nf4_cuda(dtype, dy, x, packed, absmax, code, block_size, A, B, u, dx, dA, dB,
//                          workspace, workspace_size, M, N, K, r, scaling, stream)
//       The same on the "nf4" rung (its workspace: lora_workspace_size("nf4", ...)), with W in
//       NF4: packed (ceil(N·K / 2) bytes), absmax (float32 per block of block_size numbers) and
//       code (the 16 float32 levels) instead of W (csrc/cuda/lora_nf4.cuh).
//
// Shapes: x (M, K), W (N, K), A (r, K), B (N, r), bias (N,), dy (M, N); every array C-contiguous
// (row-major) on the current device. variant is "naive", "tiled", "fused", "vectorized", "async",
// "warp", "tf32x3" or "bf16" (the last two: float32 only, compute capability 8.0 or newer; "nf4"
// only in lora_workspace_size, for the nf4 entry points); dtype is "float32" or "float64". Every
// output element is written, never accumulated into. Kernels are queued on `stream` and the call
// returns without waiting for them (the GIL is released meanwhile).
//
// Errors: an unknown variant or dtype, a size < 1, too small a workspace, a null address (0) for
// any array but bias, an output or the workspace overlapping another array, a product too large
// for one grid, or a tensor-core rung on float64 or on a GPU before compute capability 8.0 raise
// ValueError before any kernel is launched; a failed launch raises RuntimeError
// naming the kernel and the product it was computing. With the
// environment variable MINILORA_CUDA_SYNC=1 every launch is followed by a stream synchronize, so an
// error raised while a kernel runs (an illegal address, say) is also reported against that kernel.
#pragma once

#include <pybind11/pybind11.h>

void register_cuda(pybind11::module_& m);
