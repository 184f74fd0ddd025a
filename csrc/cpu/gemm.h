// The matrix product under the C++ fused LoRA op: a BLIS-style GEMM for sums of products
//     C = Σt scale_t · L_t · R_t  (+ bias, one value per column of C)
// with every operand read through strides, so that a transpose is a view, never a copy.
//
// Why a sum of products: the LoRA layer's output y = x·Wᵀ + s·u·Bᵀ is one product over the
// extended inner dimension, [x, s·u]·[Wᵀ; Bᵀ]. Writing it as two terms lets the GEMM walk the K
// columns of x and then the r columns of s·u in the same accumulators, so y is written once.
//
// The ladder, one file per rung (read them in this order):
//   gemm.h          this interface: strided views, the terms of a sum, the instruction sets
//   gemm_pack.h     packing: copying blocks of L and R into the order the micro-kernel reads
//                   (gemm_pack_nf4.h: a W stored in NF4 is dequantized as it is packed)
//   gemm_kernel.h   the register-blocked micro-kernel: an MR × NR tile of C in vector registers
//   gemm_blocked.h  the five loops around it (cache blocking) and the threads
//   gemm_<isa>.cpp  the ladder compiled for one instruction set (AVX-512, AVX2 + FMA, baseline)
//   isa.cpp         which compiled copy runs on this CPU, and the reusable work buffers
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu/nf4.h"

namespace minilora {
namespace cpu {

// A read-only matrix view: element (i, j) is data[i * row_stride + j * col_stride].
// A row-major (rows × cols) array has strides (cols, 1); its transpose is the same memory with the
// strides swapped.
template <typename T>
struct Matrix {
  const T* data;
  int64_t rows, cols;
  int64_t row_stride, col_stride;
  // A matrix stored in NF4 (cpu/nf4.h) instead of at data: only a right operand may be one.
  const Nf4Matrix* nf4 = nullptr;

  T at(int64_t i, int64_t j) const { return data[i * row_stride + j * col_stride]; }
  Matrix transposed() const { return {data, cols, rows, col_stride, row_stride, nf4}; }
};

// The same for the output.
template <typename T>
struct OutMatrix {
  T* data;
  int64_t rows, cols;
  int64_t row_stride, col_stride;
};

// A row-major (rows × cols) array as a view.
template <typename T>
Matrix<T> row_major(const T* data, int64_t rows, int64_t cols) {
  return {data, rows, cols, cols, 1};
}
template <typename T>
OutMatrix<T> row_major_out(T* data, int64_t rows, int64_t cols) {
  return {data, rows, cols, cols, 1};
}

// One term scale · left · right of the sum: left (m × k_t), right (k_t × n).
template <typename T>
struct Product {
  Matrix<T> left, right;
  T scale;
};

// Below this many multiply-adds (m·n·k), gemm runs on the calling thread: starting threads costs
// more than it saves. (A batch of such products is split over the threads instead: op_matmul.cpp.)
constexpr int64_t kThreadedWork = int64_t(1) << 20;

// The most terms one GEMM call sums (the LoRA op needs two).
constexpr int kMaxTerms = 2;

// The LoRA fusion's second half: the left operand of term 1 made on the way, out = L0 · factor,
// with L0 = terms[0].left (m × k0) and factor (k0 × r). gemm computes it from the packed blocks of
// L0 that it reads for term 0 anyway, so x (or dy) is read once for u = x·Aᵀ and y together (or v
// = dy·B and dx). out is row-major (m × r), and terms[1].left must be a view of it.
template <typename T>
struct MadeOnTheWay {
  Matrix<T> factor;
  T* out;
};

// ---- instruction sets ------------------------------------------------------------------------
enum class Isa { baseline, avx2, avx512 };

// "baseline", "avx2", "avx512".
const char* isa_name(Isa isa);
// Can this CPU run `isa` (and does this build have code for it)?
bool isa_supported(Isa isa);
// The best instruction set this CPU runs.
Isa best_isa();

// C = Σt terms[t].scale · terms[t].left · terms[t].right (+ bias[j] on column j when bias is not
// null), with the code compiled for `isa` (which must be supported). Every element of C is
// written, never read first. Terms share m (C.rows) and n (C.cols); their inner sizes may differ.
// With `made` (and two terms), terms[1].left is first computed as MadeOnTheWay says.
template <typename T>
void gemm(Isa isa, const OutMatrix<T>& C, const Product<T>* terms, int count, const T* bias,
          const MadeOnTheWay<T>* made = nullptr);

// The same GEMM compiled once per instruction set (gemm_<isa>.cpp), each in its own namespace so
// that code built with AVX-512 instructions is never linked in where the baseline is expected.
#define MINILORA_DECLARE_GEMM(ns)                                                           \
  namespace ns {                                                                            \
  void gemm(const OutMatrix<float>& C, const Product<float>* terms, int count,              \
            const float* bias, const MadeOnTheWay<float>* made);                            \
  void gemm(const OutMatrix<double>& C, const Product<double>* terms, int count,            \
            const double* bias, const MadeOnTheWay<double>* made);                          \
  }
MINILORA_DECLARE_GEMM(baseline)
// (x86-64 with GCC or Clang: the compilers whose flags CMakeLists.txt gives the per-ISA files.)
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MINILORA_X86 1
MINILORA_DECLARE_GEMM(avx2)
MINILORA_DECLARE_GEMM(avx512)
#endif
#undef MINILORA_DECLARE_GEMM

// Work memory for packed blocks, kept per calling thread and reused between calls (a fresh
// allocation of a few MiB each call costs page faults worth more than a small product).
// `slot` 0, 1 and 2 are separate buffers; the pointer is aligned to 64 bytes.
void* workspace(int slot, size_t bytes);

}  // namespace cpu
}  // namespace minilora
