// Rung 2 of the ladder: shared-memory tiles.
//
// A block of 16 × 16 threads owns a 16 × 16 tile of C. It walks the inner dimension 16 indices at
// a time: the block copies a 16 × 16 piece of L and one of R into shared memory (each thread one
// element of each), waits, and then every thread adds 16 products from shared memory. Each value
// read from device memory now serves 16 threads instead of one, so device-memory traffic falls by
// 16x against the naive rung; and the copy lets the threads of a warp walk along whichever index
// of the operand is contiguous (Contiguous in matmul.cuh), so every warp reads whole cache lines.
// The inner dimension is still the glued one, K + r long for y: the last tiles simply come from
// [s·u] and [B], and the LoRA term lands in the same accumulator.
//
// Bounds: C, K and r need not be multiples of 16. A tile element outside the operand is stored as
// zero, so it adds nothing; threads outside C compute but do not store.
//
// This rung also serves the fused rung for the skinny products (u, v, dA, dB: one side is only r
// wide). Those have few output tiles but a long inner dimension, so blockIdx.z splits the inner
// dimension (SplitPlan in matmul.cuh) and sum_splits adds the pieces.
//
// What is left: each thread still does one multiply-add per two shared-memory reads, and shared
// memory, not arithmetic, sets the pace. The fused rung (lora_fused.cu) gives each thread an 8 × 8
// block of C so that the values it reads are reused from registers.
#include "matmul.cuh"

namespace minilora::cuda {

constexpr int kTile = 16;

SplitPlan tiled_plan(int rows, int cols, int inner) {
  return plan_splits(rows, cols, inner, kTile, kTile, kTile);
}

// Tiles are stored [inner][outer] so that the multiply loop reads a row of each. The +1 column
// keeps the copy, whose warps write down a column when the operand is Contiguous::Inner, free of
// shared-memory bank conflicts.
template <typename T>
using Tile = T[kTile][kTile + 1];

// Thread (tx, ty) copies element (outer0 + ·, inner0 + ·) of the operand into the tile; tx, which
// varies fastest across a warp, walks the operand's contiguous index.
template <typename T, Contiguous C>
__device__ __forceinline__ void copy_tile_element(const Operand<T, C>& op, int outer0,
                                                  int outer_end, int inner0, int inner_end,
                                                  Tile<T>& tile) {
  const int along_outer = C == Contiguous::Inner ? threadIdx.y : threadIdx.x;
  const int along_inner = C == Contiguous::Inner ? threadIdx.x : threadIdx.y;
  const int outer = outer0 + along_outer;
  const int inner = inner0 + along_inner;
  tile[along_inner][along_outer] =
      (outer < outer_end && inner < inner_end) ? op.at(outer, inner) : T(0);
}

template <typename T, Contiguous LC, Contiguous RC>
__global__ void __launch_bounds__(kTile * kTile)
    tiled_matmul_kernel(Matmul<T, LC, RC> p, int chunk) {
  __shared__ Tile<T> left_tile, right_tile;
  const int row0 = blockIdx.x * kTile;
  const int col0 = blockIdx.y * kTile;
  const int begin = blockIdx.z * chunk;
  const int end = min(p.inner, begin + chunk);

  T sum = 0;
  for (int inner0 = begin; inner0 < end; inner0 += kTile) {
    copy_tile_element(p.left, row0, p.rows, inner0, end, left_tile);
    copy_tile_element(p.right, col0, p.cols, inner0, end, right_tile);
    __syncthreads();  // the tiles are complete
#pragma unroll
    for (int i = 0; i < kTile; ++i) sum += left_tile[i][threadIdx.y] * right_tile[i][threadIdx.x];
    __syncthreads();  // everyone is done reading before the next copy overwrites the tiles
  }

  const int row = row0 + threadIdx.y;
  const int col = col0 + threadIdx.x;
  if (row < p.rows && col < p.cols) {
    // Split z writes its own slice of the scratch buffer (p.out is the scratch then).
    const int64_t count = int64_t(p.rows) * p.cols;
    p.out[blockIdx.z * count + int64_t(row) * p.cols + col] = finish(p, col, sum);
  }
}

dim3 tiled_grid(int rows, int cols, const SplitPlan& plan) {
  return dim3(ceil_div(rows, kTile), ceil_div(cols, kTile), plan.splits);
}

template <typename T, Contiguous LC, Contiguous RC>
void tiled_matmul(const Matmul<T, LC, RC>& p, const SplitPlan& plan, T* scratch,
                  cudaStream_t stream, const char* product) {
  const dim3 block(kTile, kTile);
  launch_split<T, LC, RC>(tiled_matmul_kernel<T, LC, RC>, "tiled_matmul_kernel",
                          tiled_grid(p.rows, p.cols, plan), block, p, plan, scratch, stream, product);
}

#define MINILORA_TILED(T, LC, RC)                                                              \
  template void tiled_matmul<T, Contiguous::LC, Contiguous::RC>(                              \
      const Matmul<T, Contiguous::LC, Contiguous::RC>&, const SplitPlan&, T*, cudaStream_t,   \
      const char*);
MINILORA_TILED(float, Inner, Inner)
MINILORA_TILED(float, Inner, Outer)
MINILORA_TILED(float, Outer, Outer)
MINILORA_TILED(double, Inner, Inner)
MINILORA_TILED(double, Inner, Outer)
MINILORA_TILED(double, Outer, Outer)
#undef MINILORA_TILED

}  // namespace minilora::cuda
