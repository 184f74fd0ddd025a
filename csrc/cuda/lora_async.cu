// Rung 5 of the ladder, "async": the fused kernel with its tiles copied from device memory into
// shared memory by cp.async (async_copy.cuh), double-buffered, one __syncthreads per step.
//
// In the fused and vectorized rungs the next tile travels device memory -> registers -> shared
// memory: the thread issues the loads, multiplies, then stores what arrived into the other buffer.
// That costs registers to hold the tile in flight (4 per operand per thread here) and a store per
// element. cp.async copies device memory to shared memory directly: the thread starts the copy of
// step + 1 into the idle buffer and goes on multiplying step; nothing of it passes through its
// registers. One step of the loop:
//
//     wait for this thread's copies of tile `now`     async_copy_wait<0>
//     __syncthreads()                                 everyone's copies of `now` have landed, and
//                                                     everyone is done reading the other buffer
//     start the copies of step + 1 into the other     async_copy<...>, then async_copy_commit
//     multiply tile `now`
//
// The one barrier says both "tile `now` is complete" and "the other buffer is free", as in the
// fused rung. Where cp.async cannot copy an element (the scaled second array of a glued operand, s·u or
// s·v, which must be multiplied on the way; a zero past the operand's edge) the thread stores it
// with an ordinary store, in the same place of the loop: the barrier orders those too.
//
// Copy sizes: an operand contiguous along the tile's outer index (W in dx) is copied 16 bytes per
// cp.async where the run lies whole inside the operand's first array at an aligned address (as
// the vectorized rung's loads); an operand contiguous along the inner index (x, W, dy) goes into
// the tile transposed ([inner][outer], for the multiply's 16-byte reads), so its elements land 4 or
// 8 bytes apart in no run, and each is one cp.async of its own size.
//
// On sm_75 (a T4) cp.async does not exist: async_copy.cuh compiles the same calls to ordinary
// loads and stores, made at once. The rung stays correct there, but each thread then waits for a
// load before it stores it, so the copy no longer overlaps the multiply: on a T4 the vectorized
// rung, which overlaps by staging through registers, is the one to use.
//
// The blocking is the fused rung's (block_tiles.cuh: AsyncTiles), and every thread adds the same
// products in the same order, so its results are the fused rung's, bit for bit. The same kernel,
// with its threads grouped into warps, is rung 6 (lora_warp.cu). Predicted effect (not measured on
// a GPU): no registers tied up by the tile in flight (ptxas: the same 127 a thread as the fused
// rung, the cap of two blocks per multiprocessor, but no spill where the fused rung's dx has one)
// and no stall on the copy's arrival before the store, which helps where the loads' latency is
// exposed (a thin grid at small M); little at large M.
#include "async_copy.cuh"
#include "block_tiles.cuh"
#include "tile_pieces.cuh"

namespace minilora::cuda {

// The (kOuterTile × step) piece of op at (outer0, inner0) into tile[inner][outer], each thread its
// share (piece_spot): by cp.async where it can, by ordinary stores where it cannot (zeros outside
// the operand, the scaled second array).
template <typename Tl, int kOuterTile, typename T, Contiguous C, int kPadded>
__device__ __forceinline__ void start_copy(const Operand<T, C>& op, int outer0, int outer_end,
                                           int inner0, int inner_end,
                                           T (&tile)[Tl::step][kPadded]) {
  constexpr int kVec = 16 / sizeof(T);
  constexpr int kCount = kOuterTile * Tl::step / Tl::threads;
  constexpr int kWidth = C == Contiguous::Outer ? kVec : 1;  // elements a run fills in the tile
  static_assert(kCount % kVec == 0, "whole 16-byte runs per thread");
#pragma unroll
  for (int e0 = 0; e0 < kCount; e0 += kWidth) {
    if constexpr (kWidth > 1) {
      const Spot s = piece_spot<Tl::threads, Tl::step, kOuterTile, C, kWidth>(e0);
      const int outer = outer0 + s.outer, inner = inner0 + s.inner;
      const T* src = op.first + op.offset(outer, inner, op.first_ld);
      if (outer + kWidth <= outer_end && inner < inner_end && inner < op.split &&
          reinterpret_cast<uintptr_t>(src) % 16 == 0) {
        async_copy<16>(&tile[s.inner][s.outer], src);
        continue;
      }
    }
#pragma unroll
    for (int e = e0; e < e0 + kWidth; ++e) {
      const Spot s = piece_spot<Tl::threads, Tl::step, kOuterTile, C, kWidth>(e);
      const int outer = outer0 + s.outer, inner = inner0 + s.inner;
      T* dst = &tile[s.inner][s.outer];
      const bool inside = outer < outer_end && inner < inner_end;
      if (inside && inner < op.split) {
        async_copy<sizeof(T)>(dst, op.first + op.offset(outer, inner, op.first_ld));
      } else {
        *dst = inside ? op.at(outer, inner) : T(0);
      }
    }
  }
}

// sum += (this thread's rows of the left tile) ⊗ (its columns of the right tile), over the step.
template <typename Tl, typename T, int kLeftPadded, int kRightPadded>
__device__ __forceinline__ void multiply_step(const T (&left)[Tl::step][kLeftPadded],
                                              const T (&right)[Tl::step][kRightPadded],
                                              const typename Tl::Place& at,
                                              T (&sum)[Tl::thread_rows][Tl::thread_cols]) {
  constexpr int kVec = 16 / sizeof(T);
#pragma unroll
  for (int i = 0; i < Tl::step; ++i) {
    alignas(16) T a[Tl::thread_rows];
    alignas(16) T b[Tl::thread_cols];
#pragma unroll
    for (int m = 0; m < Tl::thread_rows; m += kVec) {
      copy16(&a[m], &left[i][Tl::template row_of<kVec>(m, at)]);
    }
#pragma unroll
    for (int n = 0; n < Tl::thread_cols; n += kVec) {
      copy16(&b[n], &right[i][Tl::template col_of<kVec>(n, at)]);
    }
#pragma unroll
    for (int m = 0; m < Tl::thread_rows; ++m) {
#pragma unroll
      for (int n = 0; n < Tl::thread_cols; ++n) sum[m][n] += a[m] * b[n];
    }
  }
}

// float: two blocks per multiprocessor, as the fused rung asks (at most 128 registers a thread,
// which hold a thread's 8 × 8 sums). double: one, or a 256-thread block's 8 × 8 sums of doubles
// would spill to local memory.
template <typename T, Contiguous LC, Contiguous RC, typename Tl>
__global__ void __launch_bounds__(Tl::threads, sizeof(T) == 4 ? 2 : 1)
    async_matmul_kernel(Matmul<T, LC, RC> p, int chunk) {
  constexpr int kVec = 16 / sizeof(T);
  // Rows padded by 16 bytes: aligned for the 16-byte reads, and the transposed stores spread over
  // the banks.
  __shared__ __align__(16) T left_tiles[2][Tl::step][Tl::rows + kVec];
  __shared__ __align__(16) T right_tiles[2][Tl::step][Tl::cols + kVec];

  const typename Tl::Place at = Tl::template place<kVec>(threadIdx.x);
  const int row0 = blockIdx.x * Tl::rows;
  const int col0 = blockIdx.y * Tl::cols;
  const int begin = blockIdx.z * chunk;
  const int end = min(p.inner, begin + chunk);
  const int steps = ceil_div(end - begin, Tl::step);

  T sum[Tl::thread_rows][Tl::thread_cols] = {};
  start_copy<Tl, Tl::rows>(p.left, row0, p.rows, begin, end, left_tiles[0]);
  start_copy<Tl, Tl::cols>(p.right, col0, p.cols, begin, end, right_tiles[0]);
  async_copy_commit();

  for (int step = 0; step < steps; ++step) {
    const int now = step % 2;
    async_copy_wait<0>();  // this thread's copies of tile `now` have landed
    __syncthreads();       // everyone's have; and everyone is done reading tile 1 - now
    if (step + 1 < steps) {  // the next tile travels while we multiply this one
      const int inner0 = begin + (step + 1) * Tl::step;
      start_copy<Tl, Tl::rows>(p.left, row0, p.rows, inner0, end, left_tiles[1 - now]);
      start_copy<Tl, Tl::cols>(p.right, col0, p.cols, inner0, end, right_tiles[1 - now]);
      async_copy_commit();
    }
    multiply_step<Tl>(left_tiles[now], right_tiles[now], at, sum);
  }

  // Split z writes its own slice of the scratch buffer (p.out is the scratch then).
  T* out = p.out + blockIdx.z * (int64_t(p.rows) * p.cols);
#pragma unroll
  for (int m = 0; m < Tl::thread_rows; ++m) {
    const int row = row0 + Tl::template row_of<kVec>(m, at);
    if (row >= p.rows) continue;
#pragma unroll
    for (int n = 0; n < Tl::thread_cols; ++n) {
      const int col = col0 + Tl::template col_of<kVec>(n, at);
      if (col < p.cols) out[int64_t(row) * p.cols + col] = finish(p, col, sum[m][n]);
    }
  }
}

template <typename Tl, typename T, Contiguous LC, Contiguous RC>
void tiles_matmul(const Matmul<T, LC, RC>& p, const SplitPlan& plan, T* scratch,
                  cudaStream_t stream, const char* product, const char* kernel_name) {
  launch_split<T, LC, RC>(async_matmul_kernel<T, LC, RC, Tl>, kernel_name,
                          split_grid(p.rows, p.cols, Tl::block_tile, plan), dim3(Tl::threads), p, plan, scratch,
                          stream, product);
}

template <typename T>
BlockTile async_tile() {
  return AsyncTiles<T>::type::block_tile;
}

template <typename T, Contiguous LC, Contiguous RC>
void async_matmul(const Matmul<T, LC, RC>& p, const SplitPlan& plan, T* scratch,
                  cudaStream_t stream, const char* product) {
  tiles_matmul<typename AsyncTiles<T>::type>(p, plan, scratch, stream, product,
                                             "async_matmul_kernel");
}

// Every warp configuration, for both element types and both products the kernel computes: y (left
// and right Contiguous::Inner) and dx (right Outer). (The tile type comes last, as __VA_ARGS__,
// because its template arguments hold commas.)
#define MINILORA_TILES_FOR(T, LC, RC, ...)                                                     \
  template void tiles_matmul<__VA_ARGS__, T, Contiguous::LC, Contiguous::RC>(                 \
      const Matmul<T, Contiguous::LC, Contiguous::RC>&, const SplitPlan&, T*, cudaStream_t,   \
      const char*, const char*);
#define MINILORA_TILES(...)                                                                    \
  MINILORA_TILES_FOR(float, Inner, Inner, __VA_ARGS__)                                         \
  MINILORA_TILES_FOR(float, Inner, Outer, __VA_ARGS__)                                         \
  MINILORA_TILES_FOR(double, Inner, Inner, __VA_ARGS__)                                        \
  MINILORA_TILES_FOR(double, Inner, Outer, __VA_ARGS__)
#define MINILORA_WARP_CONFIG(name, ...) MINILORA_TILES(Tiles<__VA_ARGS__>)
MINILORA_WARP_TILES(MINILORA_WARP_CONFIG)
#undef MINILORA_WARP_CONFIG

template BlockTile async_tile<float>();
template BlockTile async_tile<double>();
#define MINILORA_ASYNC(T, LC, RC)                                                              \
  template void async_matmul<T, Contiguous::LC, Contiguous::RC>(                              \
      const Matmul<T, Contiguous::LC, Contiguous::RC>&, const SplitPlan&, T*, cudaStream_t,   \
      const char*);
MINILORA_ASYNC(float, Inner, Inner)
MINILORA_ASYNC(float, Inner, Outer)
MINILORA_ASYNC(double, Inner, Inner)
MINILORA_ASYNC(double, Inner, Outer)
#undef MINILORA_ASYNC
#undef MINILORA_TILES
#undef MINILORA_TILES_FOR

}  // namespace minilora::cuda
