// How the register-blocked kernel of rungs 5 and 6 (lora_async.cu, lora_warp.cu) cuts C:
// block tile -> group tile -> thread tile, all sizes template parameters.
//
//   a block of `threads` threads owns a rows × cols tile of C and walks the inner dimension
//   `step` indices at a time;
//   its threads come in groups of `lanes` consecutive threads, each group owning a
//   group_rows × group_cols part of the block's tile;
//   each thread owns thread_rows × thread_cols elements of its group's part, as runs of `vec`
//   (16 bytes: 4 floats, 2 doubles) consecutive rows and columns, the runs lanes_y·vec rows
//   (lanes_x·vec columns) apart.
//
// With one group of 256 threads (16 × 16 lanes, the async rung) this is exactly the fused rung's
// layout. With groups of 32 lanes, a group is a warp (the warp rung): the sub-tile each warp reads
// from shared memory, and so the traffic it makes there, is then explicit and chosen (the top of
// lora_warp.cu says why that matters).
#pragma once

#include "matmul.cuh"

namespace minilora::cuda {

template <int kRows, int kCols, int kStep, int kGroupRows, int kGroupCols, int kThreadRows,
          int kThreadCols>
struct Tiles {
  static constexpr int rows = kRows, cols = kCols, step = kStep;
  static constexpr int group_rows = kGroupRows, group_cols = kGroupCols;
  static constexpr int thread_rows = kThreadRows, thread_cols = kThreadCols;
  static constexpr int lanes_y = group_rows / thread_rows;  // a group's threads down its rows
  static constexpr int lanes_x = group_cols / thread_cols;  // ... and along its columns
  static constexpr int lanes = lanes_y * lanes_x;
  static constexpr int groups_x = cols / group_cols;
  static constexpr int groups = (rows / group_rows) * groups_x;
  static constexpr int threads = groups * lanes;
  static_assert(rows % group_rows == 0 && cols % group_cols == 0, "whole groups in a block");
  static_assert(group_rows % thread_rows == 0 && group_cols % thread_cols == 0,
                "whole threads in a group");
  static_assert(threads <= 1024, "at most 1024 threads a block");
  static constexpr BlockTile block_tile{rows, cols, step};

  // Where a thread's first run of rows and of columns starts in the block's tile; the m-th of its
  // rows is row + (m / vec)·lanes_y·vec + m % vec (columns alike).
  struct Place {
    int row, col;
  };
  template <int kVec>
  __device__ __forceinline__ static Place place(int thread) {
    const int group = thread / lanes, lane = thread % lanes;
    return {(group / groups_x) * group_rows + (lane / lanes_x) * kVec,
            (group % groups_x) * group_cols + (lane % lanes_x) * kVec};
  }
  template <int kVec>
  __device__ __forceinline__ static int row_of(int m, const Place& at) {
    return at.row + (m / kVec) * (lanes_y * kVec) + m % kVec;
  }
  template <int kVec>
  __device__ __forceinline__ static int col_of(int n, const Place& at) {
    return at.col + (n / kVec) * (lanes_x * kVec) + n % kVec;
  }
};

// The async rung's tiles: the fused rung's blocking (one group of 16 × 16 threads).
template <typename T>
struct AsyncTiles;
template <>
struct AsyncTiles<float> {
  using type = Tiles<128, 128, 8, 128, 128, 8, 8>;
};
template <>
struct AsyncTiles<double> {
  using type = Tiles<64, 64, 8, 64, 64, 4, 4>;
};

// The warp rung's configurations, largest block tile first (lora_warp.cu says how one is chosen):
// X(name, rows, cols, step, group_rows, group_cols, thread_rows, thread_cols). Every group is a
// warp of 4 × 8 lanes.
#define MINILORA_WARP_TILES(X)                   \
  X("128x128x8/32x64/8x8", 128, 128, 8, 32, 64, 8, 8) \
  X("128x64x8/32x64/8x8", 128, 64, 8, 32, 64, 8, 8)   \
  X("64x128x8/32x64/8x8", 64, 128, 8, 32, 64, 8, 8)   \
  X("64x64x8/32x32/8x4", 64, 64, 8, 32, 32, 8, 4)

// A product run on the kernel of lora_async.cu with tiles Tl (defined there, for AsyncTiles and
// every MINILORA_WARP_TILES configuration), planned and gridded with Tl::block_tile.
template <typename Tl, typename T, Contiguous LC, Contiguous RC>
void tiles_matmul(const Matmul<T, LC, RC>& p, const SplitPlan& plan, T* scratch,
                  cudaStream_t stream, const char* product, const char* kernel_name);

}  // namespace minilora::cuda
