// Rungs 3 and 4 of the ladder: register blocking ("fused", the kernel the LoRA layer runs by
// default), and the same kernel reading device memory 16 bytes at a time ("vectorized", below).
//
// In the tiled rung each thread owns one element of C and does one multiply-add per two values it
// reads from shared memory. Here a block of 256 threads owns a 128 × 128 tile of C (64 × 64 for
// double) and each thread an 8 × 8 block of it (4 × 4 for double), kept in registers. At every
// inner index the thread reads 8 values of L and 8 of R from shared memory and does 64
// multiply-adds with them: 8x the arithmetic per shared-memory read of the tiled rung (64 per 16
// reads, against 1 per 2), and each value brought from device memory serves 128 outputs, not 16.
// Two more habits of fast matrix products:
//   - double buffering: two copies of the shared tiles; while the threads multiply out of one,
//     the next piece of L and R is already on its way from device memory into registers, and is
//     stored into the other copy afterwards. One __syncthreads per step instead of two.
//   - 16-byte shared-memory reads: a thread's 8 rows are two runs of 4 consecutive rows, 64 apart
//     (its 8 columns likewise), so each run is one float4 load, and the 8 threads that the
//     hardware serves together read 128 consecutive bytes: no bank conflicts.
//
// The LoRA term costs next to nothing here: for y, the glued inner dimension is K + r long
// ([x | s·u]·[W | B]ᵀ, matmul.cuh), so a rank-16 adapter on K = 4096 adds 16 / 4096 = 0.4% to
// the loop, and needs no pass of its own over y. y is written once where the output has enough
// tiles to fill the GPU; at small M (e.g. M <= 512 for N = 4096) the plan cuts the glued sum into
// pieces, each block writes its piece's partial sums to scratch, and sum_splits adds them into y.
// dx = [dy | s·v]·[W ; A] is the same kernel with R read along its other index. The skinny
// products u, v, dA, dB (one side r wide) run on the tiled kernel.
//
// Rung 4, "vectorized": the fused kernel with one change, in `fetch`. The fused rung brings each
// element of a tile from device memory with a load of its own (4 or 8 bytes); the vectorized rung
// brings a run of 16 bytes (4 floats, 2 doubles) consecutive along the operand's contiguous index in
// one load, where the run lies whole inside the operand, inside one of its two glued arrays, and at
// a 16-byte aligned address. Anywhere else (the operand's edges, the seam between x and s·u, a row
// length such as K = 3 that leaves rows unaligned) it falls back to the element-by-element loads.
// Predicted, not yet measured on a GPU: a quarter (float) or half (double) of the load instructions
// for the tiles, the same bytes moved and the same arithmetic; so fewer instructions to issue and
// more bytes in flight per load, which helps where the loads' latency is not hidden (few blocks per
// multiprocessor, a thin grid at small M), and should change little where the kernel is bound by
// arithmetic and shared memory (large M).
//
// Bounds: any rows, cols, inner >= 1. Elements of L or R outside the operand are stored in shared
// memory as zero; outputs outside C are computed but not stored.
#include "matmul.cuh"
#include "tile_pieces.cuh"

namespace minilora::cuda {

constexpr int kThreads = 256;
constexpr int kStep = 8;  // inner indices per shared-memory tile

// A block's tile of C and a thread's block of it, per element type (double needs twice the
// registers per value, so its blocks are half as tall and wide).
template <typename T>
struct Blocking;
template <>
struct Blocking<float> {
  static constexpr int rows = 128, cols = 128, thread_rows = 8, thread_cols = 8;
};
template <>
struct Blocking<double> {
  static constexpr int rows = 64, cols = 64, thread_rows = 4, thread_cols = 4;
};

template <typename T>
struct Fused : Blocking<T> {
  using Blocking<T>::rows;
  using Blocking<T>::cols;
  using Blocking<T>::thread_rows;
  using Blocking<T>::thread_cols;
  static constexpr int vec = 16 / sizeof(T);               // values per 16-byte load
  static constexpr int threads_x = cols / thread_cols;     // threads along a row of C
  static constexpr int threads_y = rows / thread_rows;
  static constexpr int row_run_stride = threads_y * vec;   // rows between a thread's runs
  static constexpr int col_run_stride = threads_x * vec;
  static_assert(threads_x * threads_y == kThreads, "one thread per block of C");
  static_assert(thread_rows % vec == 0 && thread_cols % vec == 0, "whole 16-byte runs");
  static_assert(rows * kStep % kThreads == 0 && cols * kStep % kThreads == 0, "even copies");

  // Row (within the block's tile) of the m-th of a thread's thread_rows rows.
  __device__ __forceinline__ static int row_of(int m, int ty) {
    return (m / vec) * row_run_stride + ty * vec + m % vec;
  }
  __device__ __forceinline__ static int col_of(int n, int tx) {
    return (n / vec) * col_run_stride + tx * vec + n % vec;
  }
};

template <typename T>
BlockTile fused_tile() {
  return {Fused<T>::rows, Fused<T>::cols, kStep};
}

// Where element e of this thread's share of a tile copy lies (tile_pieces.cuh), for this rung's
// 256 threads and steps of kStep.
template <int kOuterTile, Contiguous C, int kWidth>
__device__ __forceinline__ Spot spot(int e) {
  return piece_spot<kThreads, kStep, kOuterTile, C, kWidth>(e);
}

// The run of 16 bytes of op starting at (outer, inner), into dst with one load, when the run lies
// whole inside the operand (outer < outer_end, inner < inner_end), inside one of its two arrays, at
// a 16-byte aligned address. Returns false, having loaded nothing, otherwise.
template <typename T, Contiguous C>
__device__ __forceinline__ bool load16(const Operand<T, C>& op, int outer, int outer_end, int inner,
                                       int inner_end, T* dst) {
  constexpr int kWidth = 16 / sizeof(T);
  const bool along_inner = C == Contiguous::Inner;
  const int last_outer = along_inner ? outer : outer + kWidth - 1;
  const int last_inner = along_inner ? inner + kWidth - 1 : inner;
  if (last_outer >= outer_end || last_inner >= inner_end) return false;
  const bool in_first = last_inner < op.split;
  if (!in_first && inner < op.split) return false;  // the run straddles the seam of the two arrays
  const T* src = in_first ? op.first + op.offset(outer, inner, op.first_ld)
                          : op.second + op.offset(outer, inner - op.split, op.second_ld);
  if (reinterpret_cast<uintptr_t>(src) % 16 != 0) return false;
  copy16(dst, src);
  if (!in_first) {
#pragma unroll
    for (int j = 0; j < kWidth; ++j) dst[j] *= op.second_scale;
  }
  return true;
}

// Device memory -> registers (zero outside the operand): a run at a time, with one 16-byte load
// where load16 can, element by element where it cannot.
template <int kOuterTile, int kWidth, int kCount, typename T, Contiguous C>
__device__ __forceinline__ void fetch(const Operand<T, C>& op, int outer0, int outer_end,
                                      int inner0, int inner_end, T (&regs)[kCount]) {
  static_assert(kCount % kWidth == 0, "whole runs");
#pragma unroll
  for (int e0 = 0; e0 < kCount; e0 += kWidth) {
    if constexpr (kWidth > 1) {
      const Spot s = spot<kOuterTile, C, kWidth>(e0);
      if (load16(op, outer0 + s.outer, outer_end, inner0 + s.inner, inner_end, &regs[e0])) continue;
    }
#pragma unroll
    for (int e = e0; e < e0 + kWidth; ++e) {
      const Spot s = spot<kOuterTile, C, kWidth>(e);
      const int outer = outer0 + s.outer;
      const int inner = inner0 + s.inner;
      regs[e] = (outer < outer_end && inner < inner_end) ? op.at(outer, inner) : T(0);
    }
  }
}

// Registers -> shared tile, stored [inner][outer] so the multiply reads runs along outer. Rows are
// padded by 16 bytes: that keeps them 16-byte aligned and spreads the stores over the banks. A run
// along outer (an operand contiguous along outer, 16-byte loads) is a run in the tile too, stored
// with one 16-byte store: a warp then writes consecutive addresses, without bank conflicts.
template <int kOuterTile, Contiguous C, int kWidth, int kCount, int kPadded, typename T>
__device__ __forceinline__ void stash(const T (&regs)[kCount], T (&tile)[kStep][kPadded]) {
#pragma unroll
  for (int e0 = 0; e0 < kCount; e0 += kWidth) {
    if constexpr (kWidth > 1 && C == Contiguous::Outer) {
      const Spot s = spot<kOuterTile, C, kWidth>(e0);
      copy16(&tile[s.inner][s.outer], &regs[e0]);
    } else {
#pragma unroll
      for (int e = e0; e < e0 + kWidth; ++e) {
        const Spot s = spot<kOuterTile, C, kWidth>(e);
        tile[s.inner][s.outer] = regs[e];
      }
    }
  }
}

// sum += (this thread's rows of the left tile) ⊗ (its columns of the right tile), over kStep.
template <typename T, int kLeftPadded, int kRightPadded, typename S = Fused<T>>
__device__ __forceinline__ void multiply_tiles(const T (&left)[kStep][kLeftPadded],
                                               const T (&right)[kStep][kRightPadded], int tx,
                                               int ty, T (&sum)[S::thread_rows][S::thread_cols]) {
#pragma unroll
  for (int i = 0; i < kStep; ++i) {
    alignas(16) T a[S::thread_rows];
    alignas(16) T b[S::thread_cols];
#pragma unroll
    for (int m = 0; m < S::thread_rows; m += S::vec) copy16(&a[m], &left[i][S::row_of(m, ty)]);
#pragma unroll
    for (int n = 0; n < S::thread_cols; n += S::vec) copy16(&b[n], &right[i][S::col_of(n, tx)]);
#pragma unroll
    for (int m = 0; m < S::thread_rows; ++m) {
#pragma unroll
      for (int n = 0; n < S::thread_cols; ++n) sum[m][n] += a[m] * b[n];
    }
  }
}

// kWidth: elements per load from device memory, 1 (fused) or 16 / sizeof(T) (vectorized).
template <typename T, Contiguous LC, Contiguous RC, int kWidth>
__global__ void __launch_bounds__(kThreads, 2) fused_matmul_kernel(Matmul<T, LC, RC> p, int chunk) {
  using S = Fused<T>;
  constexpr int kLeftCount = S::rows * kStep / kThreads;
  constexpr int kRightCount = S::cols * kStep / kThreads;
  __shared__ __align__(16) T left_tiles[2][kStep][S::rows + S::vec];
  __shared__ __align__(16) T right_tiles[2][kStep][S::cols + S::vec];

  const int tx = threadIdx.x % S::threads_x;
  const int ty = threadIdx.x / S::threads_x;
  const int row0 = blockIdx.x * S::rows;
  const int col0 = blockIdx.y * S::cols;
  const int begin = blockIdx.z * chunk;
  const int end = min(p.inner, begin + chunk);
  const int steps = ceil_div(end - begin, kStep);

  T sum[S::thread_rows][S::thread_cols] = {};
  alignas(16) T left_next[kLeftCount];  // aligned: load16 writes 16 bytes at a time into them
  alignas(16) T right_next[kRightCount];

  fetch<S::rows, kWidth>(p.left, row0, p.rows, begin, end, left_next);
  fetch<S::cols, kWidth>(p.right, col0, p.cols, begin, end, right_next);
  stash<S::rows, LC, kWidth>(left_next, left_tiles[0]);
  stash<S::cols, RC, kWidth>(right_next, right_tiles[0]);
  __syncthreads();

  for (int step = 0; step < steps; ++step) {
    const int now = step % 2;
    const bool more = step + 1 < steps;
    if (more) {  // issue the loads of the next step; they travel while we multiply
      const int inner0 = begin + (step + 1) * kStep;
      fetch<S::rows, kWidth>(p.left, row0, p.rows, inner0, end, left_next);
      fetch<S::cols, kWidth>(p.right, col0, p.cols, inner0, end, right_next);
    }
    multiply_tiles(left_tiles[now], right_tiles[now], tx, ty, sum);
    if (more) {  // the other copy was last read in the previous step, before its __syncthreads
      stash<S::rows, LC, kWidth>(left_next, left_tiles[1 - now]);
      stash<S::cols, RC, kWidth>(right_next, right_tiles[1 - now]);
    }
    __syncthreads();
  }

  // Split z writes its own slice of the scratch buffer (p.out is the scratch then).
  T* out = p.out + blockIdx.z * (int64_t(p.rows) * p.cols);
#pragma unroll
  for (int m = 0; m < S::thread_rows; ++m) {
    const int row = row0 + S::row_of(m, ty);
    if (row >= p.rows) continue;
#pragma unroll
    for (int n = 0; n < S::thread_cols; ++n) {
      const int col = col0 + S::col_of(n, tx);
      if (col < p.cols) out[int64_t(row) * p.cols + col] = finish(p, col, sum[m][n]);
    }
  }
}

const char* fused_kernel_name(Loads loads) {
  return loads == Loads::Vector16 ? "fused_matmul_kernel (16-byte loads)" : "fused_matmul_kernel";
}

template <typename T, Contiguous LC, Contiguous RC>
void fused_matmul(const Matmul<T, LC, RC>& p, const SplitPlan& plan, T* scratch,
                  cudaStream_t stream, const char* product, Loads loads) {
  constexpr int kVector = Fused<T>::vec;
  auto* kernel = loads == Loads::Vector16 ? fused_matmul_kernel<T, LC, RC, kVector>
                                          : fused_matmul_kernel<T, LC, RC, 1>;
  launch_split<T, LC, RC>(kernel, fused_kernel_name(loads), split_grid(p.rows, p.cols, fused_tile<T>(), plan),
                          dim3(kThreads), p, plan, scratch, stream, product);
}

template BlockTile fused_tile<float>();
template BlockTile fused_tile<double>();

// The fused kernel computes y (left and right both Contiguous::Inner) and dx (right Outer).
#define MINILORA_FUSED(T, LC, RC)                                                              \
  template void fused_matmul<T, Contiguous::LC, Contiguous::RC>(                              \
      const Matmul<T, Contiguous::LC, Contiguous::RC>&, const SplitPlan&, T*, cudaStream_t,   \
      const char*, Loads);
MINILORA_FUSED(float, Inner, Inner)
MINILORA_FUSED(float, Inner, Outer)
MINILORA_FUSED(double, Inner, Inner)
MINILORA_FUSED(double, Inner, Outer)
#undef MINILORA_FUSED

}  // namespace minilora::cuda
