// Rung 3 of the ladder: register blocking, the kernel the LoRA layer runs by default.
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
// Bounds: any rows, cols, inner >= 1. Elements of L or R outside the operand are stored in shared
// memory as zero; outputs outside C are computed but not stored.
#include "matmul.cuh"

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
SplitPlan fused_plan(int rows, int cols, int inner) {
  return plan_splits(rows, cols, inner, Fused<T>::rows, Fused<T>::cols, kStep);
}

// Each thread copies `kOuterTile · kStep / kThreads` elements of a (kOuterTile × kStep) piece of an
// operand. Element e of this thread sits at (outer, inner) in the piece; consecutive threads take
// consecutive addresses along the operand's contiguous index, so a warp reads whole cache lines.
struct Spot {
  int outer, inner;
};

template <int kOuterTile, Contiguous C>
__device__ __forceinline__ Spot spot(int e) {
  const int index = e * kThreads + threadIdx.x;
  if (C == Contiguous::Inner) return {index / kStep, index % kStep};
  return {index % kOuterTile, index / kOuterTile};
}

// Device memory -> registers (zero outside the operand).
template <int kOuterTile, int kCount, typename T, Contiguous C>
__device__ __forceinline__ void fetch(const Operand<T, C>& op, int outer0, int outer_end,
                                      int inner0, int inner_end, T (&regs)[kCount]) {
#pragma unroll
  for (int e = 0; e < kCount; ++e) {
    const Spot s = spot<kOuterTile, C>(e);
    const int outer = outer0 + s.outer;
    const int inner = inner0 + s.inner;
    regs[e] = (outer < outer_end && inner < inner_end) ? op.at(outer, inner) : T(0);
  }
}

// Registers -> shared tile, stored [inner][outer] so the multiply reads runs along outer. Rows are
// padded by 16 bytes: that keeps them 16-byte aligned and spreads the stores over the banks.
template <int kOuterTile, Contiguous C, int kCount, int kPadded, typename T>
__device__ __forceinline__ void stash(const T (&regs)[kCount], T (&tile)[kStep][kPadded]) {
#pragma unroll
  for (int e = 0; e < kCount; ++e) {
    const Spot s = spot<kOuterTile, C>(e);
    tile[s.inner][s.outer] = regs[e];
  }
}

template <typename T>
struct Vector16;  // 16 bytes of T, read by one instruction
template <>
struct Vector16<float> {
  using type = float4;
};
template <>
struct Vector16<double> {
  using type = double2;
};

template <typename T>
__device__ __forceinline__ void copy16(T* dst, const T* src) {
  using V = typename Vector16<T>::type;
  *reinterpret_cast<V*>(dst) = *reinterpret_cast<const V*>(src);
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

template <typename T, Contiguous LC, Contiguous RC>
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
  T left_next[kLeftCount];
  T right_next[kRightCount];

  fetch<S::rows>(p.left, row0, p.rows, begin, end, left_next);
  fetch<S::cols>(p.right, col0, p.cols, begin, end, right_next);
  stash<S::rows, LC>(left_next, left_tiles[0]);
  stash<S::cols, RC>(right_next, right_tiles[0]);
  __syncthreads();

  for (int step = 0; step < steps; ++step) {
    const int now = step % 2;
    const bool more = step + 1 < steps;
    if (more) {  // issue the loads of the next step; they travel while we multiply
      const int inner0 = begin + (step + 1) * kStep;
      fetch<S::rows>(p.left, row0, p.rows, inner0, end, left_next);
      fetch<S::cols>(p.right, col0, p.cols, inner0, end, right_next);
    }
    multiply_tiles(left_tiles[now], right_tiles[now], tx, ty, sum);
    if (more) {  // the other copy was last read in the previous step, before its __syncthreads
      stash<S::rows, LC>(left_next, left_tiles[1 - now]);
      stash<S::cols, RC>(right_next, right_tiles[1 - now]);
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

template <typename T>
dim3 fused_grid(int rows, int cols, const SplitPlan& plan) {
  return dim3(ceil_div(rows, Fused<T>::rows), ceil_div(cols, Fused<T>::cols), plan.splits);
}

template <typename T, Contiguous LC, Contiguous RC>
void fused_matmul(const Matmul<T, LC, RC>& p, const SplitPlan& plan, T* scratch,
                  cudaStream_t stream, const char* product) {
  launch_split<T, LC, RC>(fused_matmul_kernel<T, LC, RC>, "fused_matmul_kernel",
                          fused_grid<T>(p.rows, p.cols, plan), dim3(kThreads), p, plan, scratch,
                          stream, product);
}

template SplitPlan fused_plan<float>(int, int, int);
template SplitPlan fused_plan<double>(int, int, int);
template dim3 fused_grid<float>(int, int, const SplitPlan&);
template dim3 fused_grid<double>(int, int, const SplitPlan&);

// The fused kernel computes y (left and right both Contiguous::Inner) and dx (right Outer).
#define MINILORA_FUSED(T, LC, RC)                                                              \
  template void fused_matmul<T, Contiguous::LC, Contiguous::RC>(                              \
      const Matmul<T, Contiguous::LC, Contiguous::RC>&, const SplitPlan&, T*, cudaStream_t,   \
      const char*);
MINILORA_FUSED(float, Inner, Inner)
MINILORA_FUSED(float, Inner, Outer)
MINILORA_FUSED(double, Inner, Inner)
MINILORA_FUSED(double, Inner, Outer)
#undef MINILORA_FUSED

}  // namespace minilora::cuda
