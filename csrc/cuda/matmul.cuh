// What every LoRA kernel computes: one matrix product C = alpha·(L·R) (+ bias), where L and R are
// *logical* matrices read through small views (Operand) over the arrays in device memory.
//
// Why views: each of the six products of a LoRA layer is a matrix product, but its operands are
// stored in different orders, and two of them are really two products summed. Take y:
//
//     y[m, n] = sum_k x[m, k]·W[n, k]  +  sum_j (s·u[m, j])·B[n, j]
//
// Glue [x | s·u] side by side (M × (K + r)) and [W | B] side by side (N × (K + r)), and y is ONE
// product over an inner dimension of length K + r: the LoRA term rides in the same accumulator as
// x·Wᵀ, and no pass over y is made for it. (At small M a plan may still cut that one sum into
// pieces, for more blocks than the output alone gives; then a second pass adds up the pieces'
// partial sums: SplitPlan below.) An Operand is such a glued matrix, never built in memory:
// element (outer, inner) comes from the first array while inner < split and from the second
// (times a scale) after it. The kernels (lora_naive.cu, lora_tiled.cu, lora_fused.cu, lora_mma.cu)
// know nothing about LoRA; lora_layer.cu describes the six products with Operands.
//
// Indexing: C is rows × cols, row-major. The left operand L is read as L(row, i), the right one as
// R(col, i), with i along the inner (summed) dimension. "outer" below means row for L, col for R.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "launch.cuh"

namespace minilora::cuda {

// Which index of an operand is contiguous in memory. A kernel reading a tile of the operand lets
// neighbouring threads walk along the contiguous index, so a warp reads consecutive addresses.
enum class Contiguous {
  Inner,  // element (outer, i) at outer·ld + i: e.g. x (M, K) read as L(m, k)
  Outer,  // element (outer, i) at i·ld + outer: e.g. W (N, K) read as R(k, n) in dx = dy·W
};

// A logical matrix that is `first` for inner indices [0, split) and `scale·second` after.
// A plain matrix has split = kNoSplit and no second array.
template <typename T, Contiguous C>
struct Operand {
  const T* first;
  int64_t first_ld;  // elements between consecutive rows of the stored array
  int split;         // inner index where `second` starts
  const T* second;
  int64_t second_ld;
  T second_scale;

  __device__ __forceinline__ T at(int outer, int inner) const {
    if (inner < split) return first[offset(outer, inner, first_ld)];
    return second_scale * second[offset(outer, inner - split, second_ld)];
  }

  __device__ __forceinline__ static int64_t offset(int outer, int inner, int64_t ld) {
    return C == Contiguous::Inner ? outer * ld + inner : inner * ld + outer;
  }
};

constexpr int kNoSplit = 0x7fffffff;

template <Contiguous C, typename T>
Operand<T, C> plain(const T* data, int64_t ld) {
  return {data, ld, kNoSplit, nullptr, 0, T(1)};
}

template <Contiguous C, typename T>
Operand<T, C> glued(const T* first, int64_t first_ld, int split, const T* second, int64_t second_ld,
                    T second_scale) {
  return {first, first_ld, split, second, second_ld, second_scale};
}

// C (rows × cols, row-major) = alpha·(L·R) + bias, summed over `inner`.
template <typename T, Contiguous LC, Contiguous RC>
struct Matmul {
  int rows, cols, inner;
  Operand<T, LC> left;   // L(row, i), rows × inner
  Operand<T, RC> right;  // R(col, i), cols × inner
  T alpha;
  const T* bias;  // (cols,) or nullptr
  T* out;
};

// The value stored for one element of C, given its sum over the inner dimension. `Problem` is a
// Matmul, or what a kernel takes in its place with the same alpha and bias (lora_wgmma.cu).
template <typename Problem, typename T>
__device__ __forceinline__ T finish(const Problem& p, int col, T sum) {
  const T value = p.alpha * sum;
  return p.bias ? value + p.bias[col] : value;
}

// How a product is cut along its inner dimension: `splits` pieces of `chunk` indices each (the last
// may be shorter). Block z of the grid sums [z·chunk, min(inner, (z+1)·chunk)). With splits > 1
// each piece writes partial sums to a scratch buffer and sum_splits adds them up in a fixed order,
// so the result is the same on every run (no atomics).
struct SplitPlan {
  int splits;
  int chunk;
};

// About two blocks for each multiprocessor of a large GPU (an H100 has 132): below that, a product
// leaves most of the GPU idle and is worth splitting.
constexpr int kTargetBlocks = 256;

// What a rung's plan and grid follow from: the rows × cols tile of C that one of its blocks owns,
// and how many inner indices the block takes per step.
struct BlockTile {
  int rows, cols, step;
};

// Cut the inner dimension only when the output alone has too few tiles to fill the GPU (a small
// u = x·Aᵀ, or dA = s·vᵀ·x with its long sum over M). The plan depends on the shapes alone, so
// Python can size the scratch buffer before the launch and results do not depend on the GPU model.
SplitPlan plan_splits(int rows, int cols, int inner, const BlockTile& tile);

// The grid of a rung that tiles C: one block per tile, plan.splits deep along z.
dim3 split_grid(int rows, int cols, const BlockTile& tile, const SplitPlan& plan);

// Elements of scratch a plan needs (0 when the product is not split).
int64_t split_scratch(const SplitPlan& plan, int rows, int cols);

// out = alpha·(sum over z of partial[z]) + bias: the second pass of a split product.
template <typename T>
void sum_splits(const T* partial, int splits, int rows, int cols, T alpha, const T* bias, T* out,
                cudaStream_t stream, const char* product);

// Raise a std::runtime_error naming the kernel and the product if the launch just made failed (and,
// with MINILORA_CUDA_SYNC=1, if the kernel failed while running).
void check_launch(const char* kernel, const char* product, cudaStream_t stream);

// Raise a std::invalid_argument when a grid has more blocks along y or z than CUDA allows.
void check_grid(const dim3& grid, const char* kernel, const char* product);

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Launch a tiled or fused matmul kernel over `grid`: straight into p.out when the plan does not split
// the inner dimension, else as plain partial sums into `scratch` (alpha and bias applied once, by
// the second pass, sum_splits). `kernel_name` is what an error message calls the kernel. `Problem`
// is what the kernel takes: the Matmul, a type derived from it that adds to it (lora_nf4.cuh), or
// one with the same rows, cols, alpha, bias and out (lora_wgmma.cu). `shared_bytes`: the kernel's
// dynamic shared memory.
template <typename T, Contiguous LC, Contiguous RC, typename Problem = Matmul<T, LC, RC>>
void launch_split(void (*kernel)(Problem, int), const char* kernel_name, dim3 grid,
                  dim3 block, const Problem& p, const SplitPlan& plan, T* scratch,
                  cudaStream_t stream, const char* product, int shared_bytes = 0) {
  check_grid(grid, kernel_name, product);
  if (plan.splits == 1) {
    MINILORA_LAUNCH_WITH_SHARED(grid, block, shared_bytes, stream, kernel)(p, plan.chunk);
    check_launch(kernel_name, product, stream);
    return;
  }
  Problem partial = p;
  partial.alpha = T(1);
  partial.bias = nullptr;
  partial.out = scratch;
  MINILORA_LAUNCH_WITH_SHARED(grid, block, shared_bytes, stream, kernel)(partial, plan.chunk);
  check_launch(kernel_name, product, stream);
  sum_splits(scratch, plan.splits, p.rows, p.cols, p.alpha, p.bias, p.out, stream, product);
}

// The rungs of the ladder, each in its own file (fused and vectorized share lora_fused.cu, tf32x3
// and bf16 lora_mma.cu; wgmma has lora_wgmma.cu for its wide products and lora_mma.cu's bf16 for
// the rest). `scratch` holds the partial sums of a split
// product (split_scratch elements); the naive rung never splits. Every other rung's *_tile is the
// block tile its launcher plans and grids with (plan_splits, split_grid), so that a caller can
// plan and check a whole sequence of products before launching any.
template <typename T, Contiguous LC, Contiguous RC>
void naive_matmul(const Matmul<T, LC, RC>& p, cudaStream_t stream, const char* product);
dim3 naive_grid(int rows, int cols);

BlockTile tiled_tile();
template <typename T, Contiguous LC, Contiguous RC>
void tiled_matmul(const Matmul<T, LC, RC>& p, const SplitPlan& plan, T* scratch,
                  cudaStream_t stream, const char* product);

// The fused kernel reads device memory one element per load (the fused rung) or, where the operand
// allows, 16 bytes per load (the vectorized rung); the two share their tiles.
enum class Loads { Scalar, Vector16 };
template <typename T>
BlockTile fused_tile();
const char* fused_kernel_name(Loads loads);
template <typename T, Contiguous LC, Contiguous RC>
void fused_matmul(const Matmul<T, LC, RC>& p, const SplitPlan& plan, T* scratch,
                  cudaStream_t stream, const char* product, Loads loads);

// The async rung: the fused blocking, tiles copied by cp.async (lora_async.cu).
template <typename T>
BlockTile async_tile();
template <typename T, Contiguous LC, Contiguous RC>
void async_matmul(const Matmul<T, LC, RC>& p, const SplitPlan& plan, T* scratch,
                  cudaStream_t stream, const char* product);

// The warp rung: the async kernel with warp tiles, one configuration per product chosen by
// warp_tiles_for (lora_layer.cuh, lora_warp.cu).
const char* warp_kernel_name(int rows, int cols);
BlockTile warp_tile(int rows, int cols);
template <typename T, Contiguous LC, Contiguous RC>
void warp_matmul(const Matmul<T, LC, RC>& p, const SplitPlan& plan, T* scratch,
                 cudaStream_t stream, const char* product);

// The tensor-core rungs (lora_mma.cu, float32 only): mma.sync on 3xTF32 or on bf16 operands.
enum class TensorCores { Tf32x3, Bf16 };
BlockTile mma_tile();
const char* mma_kernel_name(TensorCores cores);
template <Contiguous LC, Contiguous RC>
void mma_matmul(const Matmul<float, LC, RC>& p, const SplitPlan& plan, float* scratch,
                cudaStream_t stream, const char* product, TensorCores cores);

// The wgmma rung's wide products (lora_wgmma.cu, float32 arrays, bf16 operands, compute capability
// 9.0): TMA and wgmma. Its scratch holds the partial sums of a split product and, after them, the
// two operands staged as bf16 (wgmma_staging_scratch more elements).
BlockTile wgmma_tile();
int64_t wgmma_staging_scratch(int rows, int cols, int inner);
template <Contiguous LC, Contiguous RC>
void wgmma_matmul(const Matmul<float, LC, RC>& p, const SplitPlan& plan, float* scratch,
                  cudaStream_t stream, const char* product);

}  // namespace minilora::cuda
