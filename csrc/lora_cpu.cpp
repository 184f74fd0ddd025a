// The fused LoRA op on the CPU (see lora_cpu.h for the shapes and the math), written as calls of
// the GEMM in csrc/cpu/ on strided views of the arrays: a transpose such as Wᵀ or xᵀ is the same
// memory read with its strides swapped, never a copy.
//
// The fusion is in the terms: y = [x, s·u]·[Wᵀ; Bᵀ] is one GEMM of two terms, x·Wᵀ and s·u·Bᵀ,
// summed over the extended inner dimension in the same registers; so is dx = [dy, s·v]·[W; A].
// No pass over y or dx adds the LoRA term afterwards, and u = x·Aᵀ (v = dy·B) comes out of the same
// GEMM, from the blocks of x (dy) it packs for y (dx).
#include "lora_cpu.h"

#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace minilora {

using cpu::Matrix;
using cpu::OutMatrix;
using cpu::Product;
using cpu::row_major;
using cpu::row_major_out;

template <typename T>
void lora_forward_cpu(cpu::Isa isa, const T* x, const T* W, const T* A, const T* B, const T* bias,
                      T scaling, T* y, T* u, int64_t M, int64_t K, int64_t N, int64_t r,
                      const cpu::Nf4Matrix* W_nf4) {
  const Matrix<T> x_ = row_major(x, M, K), u_ = row_major<T>(u, M, r);
  Matrix<T> W_ = row_major(W, N, K);
  W_.nf4 = W_nf4;

  // y = x·Wᵀ + s·u·Bᵀ (+ bias) (M × N): inner dimension K, then r; u = x·Aᵀ (M × r) is made on
  // the way from the same packed blocks of x, so x is read once for both.
  const Product<T> terms[] = {{x_, W_.transposed(), T(1)},
                              {u_, row_major(B, N, r).transposed(), scaling}};
  const cpu::MadeOnTheWay<T> u_from_x{row_major(A, r, K).transposed(), u};
  cpu::gemm<T>(isa, row_major_out(y, M, N), terms, 2, bias, &u_from_x);
}

template <typename T>
void lora_backward_cpu(cpu::Isa isa, const T* dy, const T* x, const T* W, const T* A, const T* B,
                       const T* u, T scaling, T* dx, T* dA, T* dB, int64_t M, int64_t K,
                       int64_t N, int64_t r, const cpu::Nf4Matrix* W_nf4) {
  const Matrix<T> dy_ = row_major(dy, M, N), x_ = row_major(x, M, K), u_ = row_major(u, M, r);
  Matrix<T> W_ = row_major(W, N, K);
  W_.nf4 = W_nf4;
  std::vector<T> v(M * r);
  const Matrix<T> v_ = row_major<T>(v.data(), M, r);

  // dx = dy·W + s·v·A (M × K): inner dimension N, then r; v = dy·B (M × r) is made on the way
  // from the same packed blocks of dy.
  const Product<T> dx_terms[] = {{dy_, W_, T(1)}, {v_, row_major(A, r, K), scaling}};
  const cpu::MadeOnTheWay<T> v_from_dy{row_major(B, N, r), v.data()};
  cpu::gemm<T>(isa, row_major_out(dx, M, K), dx_terms, 2, nullptr, &v_from_dy);

  // dA = s·vᵀ·x (r × K), computed as its transpose xᵀ·(s·v) (K × r) written through swapped
  // strides: then the long side K is the one split into blocks and threads, the short r the width.
  const Product<T> dA_terms[] = {{x_.transposed(), v_, scaling}};
  cpu::gemm<T>(isa, OutMatrix<T>{dA, K, r, 1, K}, dA_terms, 1, nullptr);

  // dB = s·dyᵀ·u (N × r)
  const Product<T> dB_terms[] = {{dy_.transposed(), u_, scaling}};
  cpu::gemm<T>(isa, row_major_out(dB, N, r), dB_terms, 1, nullptr);
}

int cpu_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

template void lora_forward_cpu<float>(cpu::Isa, const float*, const float*, const float*,
                                      const float*, const float*, float, float*, float*, int64_t,
                                      int64_t, int64_t, int64_t, const cpu::Nf4Matrix*);
template void lora_forward_cpu<double>(cpu::Isa, const double*, const double*, const double*,
                                       const double*, const double*, double, double*, double*,
                                       int64_t, int64_t, int64_t, int64_t, const cpu::Nf4Matrix*);
template void lora_backward_cpu<float>(cpu::Isa, const float*, const float*, const float*,
                                       const float*, const float*, const float*, float, float*,
                                       float*, float*, int64_t, int64_t, int64_t, int64_t,
                                       const cpu::Nf4Matrix*);
template void lora_backward_cpu<double>(cpu::Isa, const double*, const double*, const double*,
                                        const double*, const double*, const double*, double,
                                        double*, double*, double*, int64_t, int64_t, int64_t,
                                        int64_t, const cpu::Nf4Matrix*);

}  // namespace minilora
