// The block of the tiled rung (lora_tiled.cu says what it does and why), shared with the nf4
// rung (lora_nf4.cu): the same tiles, the same loop, the same bounds and split sums. The right
// operand is read through `right.at(col, inner)`: an Operand for the tiled rung, a reader that
// dequantizes W for the nf4 rung. Nothing else differs between the two.
#pragma once

#include "matmul.cuh"

namespace minilora::cuda {

constexpr int kTile = 16;

// Tiles are stored [inner][outer] so that the multiply loop reads a row of each. The +1 column
// keeps the copy, whose warps write down a column when the operand is Contiguous::Inner, free of
// shared-memory bank conflicts.
template <typename T>
using Tile = T[kTile][kTile + 1];

// Thread (tx, ty) copies element (outer0 + ·, inner0 + ·) of the operand (anything with
// `T at(outer, inner)`, laid out as C says) into the tile; tx, which varies fastest across a warp,
// walks the operand's contiguous index.
template <Contiguous C, typename T, typename Op>
__device__ __forceinline__ void copy_tile_element(const Op& op, int outer0, int outer_end,
                                                  int inner0, int inner_end, Tile<T>& tile) {
  const int along_outer = C == Contiguous::Inner ? threadIdx.y : threadIdx.x;
  const int along_inner = C == Contiguous::Inner ? threadIdx.x : threadIdx.y;
  const int outer = outer0 + along_outer;
  const int inner = inner0 + along_inner;
  tile[along_inner][along_outer] =
      (outer < outer_end && inner < inner_end) ? op.at(outer, inner) : T(0);
}

// What one block of 16 × 16 threads computes: its 16 × 16 tile of C, summed over its split's share
// [blockIdx.z·chunk, ...) of the inner dimension. `p` gives the sizes, the left operand, alpha, the
// bias and the output; `right` the right operand.
template <typename T, Contiguous LC, Contiguous RC, typename Problem, typename Right>
__device__ __forceinline__ void tiled_block(const Problem& p, const Right& right, int chunk) {
  __shared__ Tile<T> left_tile, right_tile;
  const int row0 = blockIdx.x * kTile;
  const int col0 = blockIdx.y * kTile;
  const int begin = blockIdx.z * chunk;
  const int end = min(p.inner, begin + chunk);

  T sum = 0;
  for (int inner0 = begin; inner0 < end; inner0 += kTile) {
    copy_tile_element<LC, T>(p.left, row0, p.rows, inner0, end, left_tile);
    copy_tile_element<RC, T>(right, col0, p.cols, inner0, end, right_tile);
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

}  // namespace minilora::cuda
