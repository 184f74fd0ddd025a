// The LoRA layer on the GPU: forward and backward of y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ (+ bias), each a short
// sequence of matrix products (matmul.cuh) run by one rung of the kernel ladder.
//
// Shapes (M rows of input, K input features, N output features, rank r), all row-major:
//     x (M, K)   W (N, K)   A (r, K)   B (N, r)   bias (N,) or nullptr
//     y (M, N)   u = x·Aᵀ (M, r), kept for the backward
//     dy (M, N)  dx (M, K)  dA (r, K)  dB (N, r)
//
// The workspace is scratch of the same element type, at least forward_workspace or
// backward_workspace elements, allocated by the caller (Python, with CuPy): nothing here allocates
// device memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace minilora::cuda {

enum class Variant { Naive, Tiled, Fused, Vectorized, Async, Warp, Tf32x3, Bf16, Wgmma, Nf4 };

// "naive", "tiled", "fused", "vectorized", "async", "warp", "tf32x3", "bf16", "wgmma" or "nf4";
// std::invalid_argument for anything else. tf32x3, bf16 and wgmma run on tensor cores (float32
// only; compute capability 8.0 or newer, wgmma 9.0 exactly). "nf4" is the rung for W stored in NF4
// (lora_nf4.cuh): it needs W_nf4 below, the others W.
Variant variant_named(const std::string& name);

// The warp rung's tile configurations (lora_warp.cu), largest block tile first: their count, the
// name of one, and the one a rows × cols product runs with (the environment variable
// MINILORA_WARP_TILES when set, else the choice per shape; std::invalid_argument when it names none).
int warp_tile_count();
const char* warp_tile_name(int index);
int warp_tiles_for(int rows, int cols);

struct LoraShape {
  int64_t M, N, K, r;  // checked against the kernels' int indices before any use
};

// W (N, K) in NF4 in device memory (minilora/quant/nf4.py), read by the nf4 rung (lora_nf4.cuh):
// number i of the row-major W is
//     code[index_i] · absmax[i / block_size]
// with index_i the high nibble of packed[i / 2] when i is even and the low nibble when i is odd.
struct Nf4Weights {
  const uint8_t* packed;  // ceil(N·K / 2) bytes
  const float* absmax;    // ceil(N·K / block_size) block scales, float32
  const float* code;      // the 16 levels (NF4_CODE)
  int block_size;         // >= 1
};

// W_nf4: for the "nf4" rung, W in NF4 (then W is null and not read); nullptr for the others.
template <typename T>
struct ForwardArrays {
  const T *x, *W, *A, *B, *bias;
  T *y, *u;
  const Nf4Weights* W_nf4 = nullptr;
};

template <typename T>
struct BackwardArrays {
  const T *dy, *x, *W, *A, *B, *u;
  T *dx, *dA, *dB;
  const Nf4Weights* W_nf4 = nullptr;
};

template <typename T>
int64_t forward_workspace(Variant variant, const LoraShape& shape);

template <typename T>
int64_t backward_workspace(Variant variant, const LoraShape& shape);

// Both queue their kernels on `stream` and return. They throw std::invalid_argument, before any
// launch, for bad sizes, too small a workspace, a null pointer, an output (or the workspace) that
// overlaps another array, or a product too large for one grid; std::runtime_error when a launch
// fails.
template <typename T>
void lora_forward(Variant variant, const LoraShape& shape, const ForwardArrays<T>& arrays,
                  T scaling, T* workspace, int64_t workspace_size, cudaStream_t stream);

template <typename T>
void lora_backward(Variant variant, const LoraShape& shape, const BackwardArrays<T>& arrays,
                   T scaling, T* workspace, int64_t workspace_size, cudaStream_t stream);

}  // namespace minilora::cuda
