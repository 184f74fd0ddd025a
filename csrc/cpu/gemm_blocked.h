// Rung 3 of the GEMM ladder: the loops around the micro-kernel (cache blocking) and the threads.
//
// The five loops of a BLIS-style GEMM, each blocking for one level of the memory hierarchy:
//
//   for jc in blocks of NC columns of C          pack R[:, jc] once, shared by every thread (L3)
//     for ic in blocks of MC rows of C           one thread per block
//       for pc in blocks of KC inner positions   pack L[ic, pc]: it stays in L2
//         for jr in slivers of NR columns        one right sliver (kc × NR) stays in L1
//           for ir in slivers of MR rows         the micro-kernel: an MR × NR tile in registers
//
// (BLIS puts pc outside ic and packs one kc × nc panel of R at a time; packing all of R[:, jc]
// before the threads split the rows means one barrier per column block instead of two per inner
// block, which matters when another process holds a core and every barrier waits for it.)
// No two threads ever write the same element of C. Block sizes are split evenly (1000 columns in
// blocks of at most 512 become two blocks of 500, not 512 + 488), so the last block of the inner
// dimension is never a sliver: with K = 512 and r = 16, the LoRA columns ride along in the last
// block instead of costing a pass of their own over C.
//
// This header is the whole GEMM for one instruction set: gemm_<isa>.cpp defines kVectorBytes and
// the tile heights, opens the namespace of its instruction set and includes it.
#include <algorithm>
#include <cstdint>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/gemm.h"

namespace minilora {
namespace cpu {
namespace MINILORA_ISA {

#include "cpu/gemm_kernel.h"
#include "cpu/gemm_pack_nf4.h"
#include "cpu/gemm_pack.h"

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// `total` split into the fewest blocks of at most `largest`, all of one size (a multiple of
// `unit`, the last one possibly shorter).
inline int64_t even_block(int64_t total, int64_t largest, int64_t unit) {
  return std::min(largest, round_up(ceil_div(total, ceil_div(total, largest)), unit));
}

// Cache budgets (bytes) the block sizes are derived from: a right sliver in L1 next to a few left
// slivers (L1 holds 32-48 KiB), a left block in half of a 1-2 MiB L2 and the rows of C it updates
// in half of that again, the packed right block in a share of L3.
constexpr int64_t kL1Budget = 32 * 1024;
constexpr int64_t kL2Budget = 1024 * 1024;
constexpr int64_t kCBudget = 512 * 1024;
constexpr int64_t kL3Budget = 8 * 1024 * 1024;

template <typename T, int MR, int NV>
void gemm_blocked(const OutMatrix<T>& C, const Product<T>* terms, int count, const T* bias,
                  const MadeOnTheWay<T>* made) {
  constexpr int64_t NR = NV * kLanes<T>;
  const int64_t m = C.rows, n = C.cols;
  int64_t k = 0;
  for (int t = 0; t < count; ++t) k += terms[t].left.cols;
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: C is the bias, or zeros
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) C.data[i * C.row_stride + j * C.col_stride] = bias ? bias[j] : T(0);
    }
    return;
  }

  int threads = 1;
#ifdef _OPENMP
  if (m * n * k >= kThreadedWork) threads = omp_get_max_threads();
#endif
  const int64_t kc = even_block(k, std::clamp<int64_t>(kL1Budget / (NR * sizeof(T)), 64, 512), 8);
  const int64_t k_blocks = ceil_div(k, kc);
  const int64_t nc = even_block(n, std::max<int64_t>(NR, kL3Budget / (k * sizeof(T)) / NR * NR), NR);
  // Rows: at most what fits in L2, both the left block and its rows of C (every inner block reads
  // and writes them again: from L3, the micro-kernel waits for them; 512 × 1024 × 1024 on one
  // thread ran 10% faster with blocks of 120 rows than of 516); and with several threads at least
  // two blocks per thread where m allows, so that a thread slowed down by another process on its
  // core leaves its remaining block to the others (one thread takes the largest blocks: each block
  // has a ragged last tile). Not more: every block reads the whole packed right block from L3
  // again (512 × 1024 × 1024 on two threads: 0.97-1.01 of NumPy with two blocks a thread, 1.00-1.05
  // with four).
  const int64_t mc_largest =
      std::max<int64_t>(MR, std::min(kL2Budget / (kc * sizeof(T)), kCBudget / (nc * sizeof(T))) / MR * MR);
  const int64_t mc = threads == 1 ? std::min(mc_largest, round_up(m, MR))
                                  : std::min(mc_largest, round_up(ceil_div(m, 2 * threads), MR));
  const int64_t m_blocks = ceil_div(m, mc);

  // The packed right block: inner block p of sliver q at (p·kc)·round_up(nc, NR) + q·depth·NR.
  const int64_t right_stride = kc * round_up(nc, NR);
  T* right = static_cast<T*>(workspace(0, sizeof(T) * right_stride * k_blocks));
  T* left_all = static_cast<T*>(workspace(1, sizeof(T) * threads * kc * round_up(mc, MR)));

  // Made on the way: out = L0 · factor, one vector of columns per sliver, factor packed whole.
  constexpr int64_t NRm = kLanes<T>;
  const int64_t k0 = terms[0].left.cols, r = made ? made->factor.cols : 0;
  const int64_t r_slivers = ceil_div(r, NRm);
  T* factor = nullptr;
  if (made) {
    factor = static_cast<T*>(workspace(2, sizeof(T) * r_slivers * k0 * NRm));
    const Product<T> just_factor{terms[0].left, made->factor, T(1)};
    pack_right<T, NRm>(factor, &just_factor, 1, 0, r, 0, k0, 0, r_slivers);
  }

#pragma omp parallel num_threads(threads) if (threads > 1)
  {
#ifdef _OPENMP
    T* left = left_all + omp_get_thread_num() * kc * round_up(mc, MR);
#else
    T* left = left_all;
#endif
    for (int64_t jc = 0; jc < n; jc += nc) {
      const int64_t cols = std::min(nc, n - jc);
      const int64_t slivers = ceil_div(cols, NR);

#pragma omp for schedule(static)
      for (int64_t task = 0; task < k_blocks * slivers; ++task) {  // sliver q of inner block p
        const int64_t p = task / slivers, q = task % slivers;
        const int64_t pc = p * kc, depth = std::min(kc, k - pc);
        pack_right<T, NR>(right + p * right_stride, terms, count, jc, cols, pc, depth, q, q + 1);
      }
      // (the implicit barrier: the right block is complete before anyone reads it)

#pragma omp for schedule(dynamic, 1)
      for (int64_t block = 0; block < m_blocks; ++block) {
        const int64_t ic = block * mc, rows = std::min(mc, m - ic);
        for (int64_t p = 0; p < k_blocks; ++p) {
          const int64_t pc = p * kc, depth = std::min(kc, k - pc);
          const T* right_block = right + p * right_stride;
          if (!made) {
            pack_left<T, MR>(left, terms, 0, count, ic, rows, pc, depth);
          } else {
            // Term 0's part of the block, then its share of out for these rows (computed in the
            // first column block only), then term 1's part, which reads those rows of out: they
            // are complete, since term 0's inner positions all come before term 1's.
            pack_left<T, MR>(left, terms, 0, 1, ic, rows, pc, depth);
            const int64_t own = std::clamp<int64_t>(k0 - pc, 0, depth);
            for (int64_t ir = 0; jc == 0 && own > 0 && ir < rows; ir += MR) {
              for (int64_t q = 0; q < r_slivers; ++q) {
                const Tile<T> tile{made->out + (ic + ir) * r + q * NRm, r, 1,
                                   std::min<int64_t>(MR, rows - ir), std::min(NRm, r - q * NRm),
                                   nullptr, pc > 0};
                micro_kernel<T, MR, 1>(own, left + ir * depth, factor + (q * k0 + pc) * NRm, tile);
              }
            }
            if (own < depth) pack_left<T, MR>(left, terms, 1, 2, ic, rows, pc, depth);
          }
          for (int64_t jr = 0; jr < cols; jr += NR) {
            for (int64_t ir = 0; ir < rows; ir += MR) {
              const Tile<T> tile{C.data + (ic + ir) * C.row_stride + (jc + jr) * C.col_stride,
                                 C.row_stride,
                                 C.col_stride,
                                 std::min<int64_t>(MR, rows - ir),
                                 std::min<int64_t>(NR, cols - jr),
                                 bias ? bias + jc + jr : nullptr,
                                 pc > 0};
              micro_kernel<T, MR, NV>(depth, left + ir * depth, right_block + jr * depth, tile);
            }
          }
        }
      }
      // (the implicit barrier: nobody reads the right block while the next one is packed)
    }
  }
}

// Wide tiles (NV = 2 vectors per row) in general; for a C of at most one vector of columns (u, v,
// dB and dAᵀ, with n = r), a tile one vector wide and twice as tall, so fewer lanes compute zeros.
template <typename T>
void gemm_any(const OutMatrix<T>& C, const Product<T>* terms, int count, const T* bias,
              const MadeOnTheWay<T>* made) {
  if (C.cols <= kLanes<T>) {
    gemm_blocked<T, kTallRows, 1>(C, terms, count, bias, made);
  } else {
    gemm_blocked<T, kWideRows, 2>(C, terms, count, bias, made);
  }
}

void gemm(const OutMatrix<float>& C, const Product<float>* terms, int count, const float* bias,
          const MadeOnTheWay<float>* made) {
  gemm_any(C, terms, count, bias, made);
}
void gemm(const OutMatrix<double>& C, const Product<double>* terms, int count, const double* bias,
          const MadeOnTheWay<double>* made) {
  gemm_any(C, terms, count, bias, made);
}

}  // namespace MINILORA_ISA
}  // namespace cpu
}  // namespace minilora
