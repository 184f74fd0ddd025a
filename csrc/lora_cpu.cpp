// The fused LoRA op on the CPU (see lora_cpu.h for the shapes and the math).
//
// Every product is written so that its innermost loop runs over contiguous memory of row-major
// arrays, with no transposed copies:
//   - forward, y[i, n] = x[i, :]·W[n, :] + s·u[i, :]·B[n, :]: dot products of two rows;
//   - backward, dx[i, :] = Σn dy[i, n]·W[n, :] + Σj s·v[i, j]·A[j, :]: sums of scaled rows.
// Threads split independent outputs (rows of y and dx, columns of dA, rows of dB), so no two
// threads ever write the same element and no atomics or locks are needed.
#include "lora_cpu.h"

#include <algorithm>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace minilora {
namespace {

// Rows of x (and of y, dx) that one thread takes at a time.
constexpr int64_t kRowBlock = 8;
// Rows of W visited while one block of x rows is processed: 64 rows of K = 1024 floats are
// 256 KiB, small enough to stay in cache while each row of the block reads them again.
// A multiple of 4, so only the last block has a remainder for the four-row helpers below.
constexpr int64_t kColBlock = 64;
// Columns of dA per thread task: r rows of 64 columns stay in the L1 cache while all M rows of
// x stream past.
constexpr int64_t kDepthBlock = 64;

// acc + a·b over n elements. `omp simd` lets the compiler keep several partial sums in one
// vector register (it may reorder the additions, which a plain loop must not).
template <typename T>
T dot(T acc, const T* a, const T* b, int64_t n) {
#pragma omp simd reduction(+ : acc)
  for (int64_t k = 0; k < n; ++k) acc += a[k] * b[k];
  return acc;
}

// acc[b] += a·rows[b, :] for four consecutive rows (row stride ld): one pass over `a` serves
// four outputs, so each element of `a` is loaded once instead of four times.
template <typename T>
void dot4(T acc[4], const T* a, const T* rows, int64_t ld, int64_t n) {
  const T *r0 = rows, *r1 = rows + ld, *r2 = rows + 2 * ld, *r3 = rows + 3 * ld;
  T s0 = acc[0], s1 = acc[1], s2 = acc[2], s3 = acc[3];
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t k = 0; k < n; ++k) {
    s0 += a[k] * r0[k];
    s1 += a[k] * r1[k];
    s2 += a[k] * r2[k];
    s3 += a[k] * r3[k];
  }
  acc[0] = s0, acc[1] = s1, acc[2] = s2, acc[3] = s3;
}

// y += a·x over n elements.
template <typename T>
void axpy(T* y, T a, const T* x, int64_t n) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) y[k] += a * x[k];
}

// y += Σb alpha[b]·rows[b, :] over `count` rows (row stride ld) of n elements. Four rows at a
// time, so y is loaded and stored once per four rows rather than once per row.
template <typename T>
void add_scaled_rows(T* y, const T* alpha, const T* rows, int64_t ld, int64_t count, int64_t n) {
  int64_t b = 0;
  for (; b + 4 <= count; b += 4) {
    const T a0 = alpha[b], a1 = alpha[b + 1], a2 = alpha[b + 2], a3 = alpha[b + 3];
    const T* r0 = rows + b * ld;
    const T *r1 = r0 + ld, *r2 = r0 + 2 * ld, *r3 = r0 + 3 * ld;
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) y[k] += a0 * r0[k] + a1 * r1[k] + a2 * r2[k] + a3 * r3[k];
  }
  for (; b < count; ++b) axpy(y, alpha[b], rows + b * ld, n);
}

}  // namespace

template <typename T>
void lora_forward_cpu(const T* x, const T* W, const T* A, const T* B, const T* bias, T scaling,
                      T* y, T* u, int64_t M, int64_t K, int64_t N, int64_t r) {
  // s·u: the r extra "input features" of the fused product [x, s·u]·[Wᵀ; Bᵀ].
  std::vector<T> su(M * r);

#pragma omp parallel for schedule(static)
  for (int64_t i0 = 0; i0 < M; i0 += kRowBlock) {
    const int64_t i1 = std::min(i0 + kRowBlock, M);

    // u = x·Aᵀ for this block of rows (r dot products per row).
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t j = 0; j < r; ++j) {
        u[i * r + j] = dot(T(0), x + i * K, A + j * K, K);
        su[i * r + j] = scaling * u[i * r + j];
      }
    }

    // y = x·Wᵀ + s·u·Bᵀ (+ bias): the LoRA term continues the same sums, so y is written once.
    for (int64_t n0 = 0; n0 < N; n0 += kColBlock) {
      const int64_t n1 = std::min(n0 + kColBlock, N);
      for (int64_t i = i0; i < i1; ++i) {
        const T* x_i = x + i * K;
        const T* su_i = su.data() + i * r;
        int64_t n = n0;
        for (; n + 4 <= n1; n += 4) {
          T acc[4];
          for (int b = 0; b < 4; ++b) acc[b] = bias ? bias[n + b] : T(0);
          dot4(acc, x_i, W + n * K, K, K);
          dot4(acc, su_i, B + n * r, r, r);
          std::copy(acc, acc + 4, y + i * N + n);
        }
        for (; n < n1; ++n) {  // the last N % 4 columns
          T acc = bias ? bias[n] : T(0);
          acc = dot(acc, x_i, W + n * K, K);
          acc = dot(acc, su_i, B + n * r, r);
          y[i * N + n] = acc;
        }
      }
    }
  }
}

template <typename T>
void lora_backward_cpu(const T* dy, const T* x, const T* W, const T* A, const T* B, const T* u,
                       T scaling, T* dx, T* dA, T* dB, int64_t M, int64_t K, int64_t N, int64_t r) {
  // s·v = s·dy·B: the r extra rows of the fused product [dy, s·v]·[W; A], also needed by dA.
  std::vector<T> sv(M * r);

  // dx = dy·W + s·v·A, rows split across threads.
#pragma omp parallel for schedule(static)
  for (int64_t i0 = 0; i0 < M; i0 += kRowBlock) {
    const int64_t i1 = std::min(i0 + kRowBlock, M);

    for (int64_t i = i0; i < i1; ++i) {
      T* sv_i = sv.data() + i * r;
      std::fill(sv_i, sv_i + r, T(0));
      add_scaled_rows(sv_i, dy + i * N, B, r, N, r);  // v[i, :] = Σn dy[i, n]·B[n, :]
      for (int64_t j = 0; j < r; ++j) sv_i[j] *= scaling;
      std::fill(dx + i * K, dx + (i + 1) * K, T(0));
    }

    for (int64_t n0 = 0; n0 < N; n0 += kColBlock) {
      const int64_t n1 = std::min(n0 + kColBlock, N);
      for (int64_t i = i0; i < i1; ++i) {
        add_scaled_rows(dx + i * K, dy + i * N + n0, W + n0 * K, K, n1 - n0, K);
      }
    }
    // The LoRA rows of the extended inner dimension, added to the same rows of dx.
    for (int64_t i = i0; i < i1; ++i) {
      add_scaled_rows(dx + i * K, sv.data() + i * r, A, K, r, K);
    }
  }

  // dA = s·vᵀ·x, a sum over all M rows; threads split the K columns of dA.
#pragma omp parallel for schedule(static)
  for (int64_t k0 = 0; k0 < K; k0 += kDepthBlock) {
    const int64_t width = std::min(kDepthBlock, K - k0);
    for (int64_t j = 0; j < r; ++j) std::fill(dA + j * K + k0, dA + j * K + k0 + width, T(0));
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < r; ++j) axpy(dA + j * K + k0, sv[i * r + j], x + i * K + k0, width);
    }
  }

  // dB = s·dyᵀ·u, a sum over all M rows; threads split the N rows of dB.
#pragma omp parallel for schedule(static)
  for (int64_t n0 = 0; n0 < N; n0 += kColBlock) {
    const int64_t n1 = std::min(n0 + kColBlock, N);
    std::fill(dB + n0 * r, dB + n1 * r, T(0));
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t n = n0; n < n1; ++n) axpy(dB + n * r, scaling * dy[i * N + n], u + i * r, r);
    }
  }
}

int cpu_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

template void lora_forward_cpu<float>(const float*, const float*, const float*, const float*,
                                      const float*, float, float*, float*, int64_t, int64_t,
                                      int64_t, int64_t);
template void lora_forward_cpu<double>(const double*, const double*, const double*, const double*,
                                       const double*, double, double*, double*, int64_t, int64_t,
                                       int64_t, int64_t);
template void lora_backward_cpu<float>(const float*, const float*, const float*, const float*,
                                       const float*, const float*, float, float*, float*, float*,
                                       int64_t, int64_t, int64_t, int64_t);
template void lora_backward_cpu<double>(const double*, const double*, const double*,
                                        const double*, const double*, const double*, double,
                                        double*, double*, double*, int64_t, int64_t, int64_t,
                                        int64_t);

}  // namespace minilora
