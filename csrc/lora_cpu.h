// The fused LoRA op on the CPU: forward and backward of
//     y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ (+ bias)
// for float and double, on raw pointers to C-contiguous (row-major) arrays.
//
// Shapes (M rows of input, K input features, N output features, rank r):
//     x (M, K)   W (N, K)   A (r, K)   B (N, r)   bias (N) or nullptr
//     y (M, N)   u = x·Aᵀ (M, r), kept for the backward
//     dy (M, N)  dx (M, K)  dA (r, K)  dB (N, r)
//
// Where it sits: Python (minilora/kernels/cpp.py) validates the arrays, allocates the outputs and
// calls these through the pybind11 module minilora._C (csrc/bindings.cpp). Nothing here checks or
// allocates user-visible memory; every output element is written (never accumulated into). The
// products run on the GEMM of csrc/cpu/ compiled for instruction set `isa` (cpu/gemm.h).
#pragma once

#include <cstdint>

#include "cpu/gemm.h"

namespace minilora {

// Forward: u = x·Aᵀ, then y = [x, s·u]·[Wᵀ; Bᵀ] (+ bias): one product over the extended inner
// dimension K + r, so each element of y is summed in one accumulator and written once; u is made
// on the way from the same packed blocks of x (cpu::MadeOnTheWay).
//
// W_nf4: W stored in NF4 (QLoRA's 4-bit base, cpu/nf4.h), read instead of W (which is then
// unused): the GEMM dequantizes W's panels as it packs them, never holding a float W.
template <typename T>
void lora_forward_cpu(cpu::Isa isa, const T* x, const T* W, const T* A, const T* B, const T* bias,
                      T scaling, T* y, T* u, int64_t M, int64_t K, int64_t N, int64_t r,
                      const cpu::Nf4Matrix* W_nf4 = nullptr);

// Backward with W frozen: v = dy·B, dx = [dy, s·v]·[W; A] (v made on the way, as u is),
// dA = s·vᵀ·x, dB = s·dyᵀ·u. W_nf4 as for the forward.
template <typename T>
void lora_backward_cpu(cpu::Isa isa, const T* dy, const T* x, const T* W, const T* A, const T* B,
                       const T* u, T scaling, T* dx, T* dA, T* dB, int64_t M, int64_t K,
                       int64_t N, int64_t r, const cpu::Nf4Matrix* W_nf4 = nullptr);

// Number of threads the products use (1 when built without OpenMP).
int cpu_threads();

}  // namespace minilora
