// Rung 1 of the ladder: one thread per output element.
//
// Thread (row, col) walks the whole inner dimension and sums L(row, i)·R(col, i) in one register.
// For y that inner dimension is K + r long, [x | s·u]·[W | B]ᵀ (see matmul.cuh): the LoRA term is
// just the last r steps of the same loop, so y is written once, already complete (this rung never
// splits the inner dimension, unlike the other two at small M).
//
// What it costs: every product of two numbers reads both from device memory (through the caches),
// so the kernel moves about 2·rows·cols·inner values for 2·rows·cols·inner flops, and the GPU's
// arithmetic units mostly wait. Neighbouring threads (consecutive col) read R at addresses `inner`
// apart for the y of a LoRA layer, so even the cache lines are poorly used. It is here because it
// is obviously right: the tiled rung (lora_tiled.cu) is checked against the same reference.
#include "matmul.cuh"

namespace minilora::cuda {

constexpr int kNaiveBlock = 16;  // 16 × 16 threads, one output element each

template <typename T, Contiguous LC, Contiguous RC>
__global__ void naive_matmul_kernel(Matmul<T, LC, RC> p) {
  // threadIdx.x runs along a row of C, so a warp writes consecutive addresses.
  const int col = blockIdx.y * kNaiveBlock + threadIdx.x;
  const int row = blockIdx.x * kNaiveBlock + threadIdx.y;
  if (row >= p.rows || col >= p.cols) return;

  T sum = 0;
  for (int i = 0; i < p.inner; ++i) sum += p.left.at(row, i) * p.right.at(col, i);
  p.out[int64_t(row) * p.cols + col] = finish(p, col, sum);
}

dim3 naive_grid(int rows, int cols) {
  return dim3(ceil_div(rows, kNaiveBlock), ceil_div(cols, kNaiveBlock));
}

template <typename T, Contiguous LC, Contiguous RC>
void naive_matmul(const Matmul<T, LC, RC>& p, cudaStream_t stream, const char* product) {
  const dim3 block(kNaiveBlock, kNaiveBlock);
  const dim3 grid = naive_grid(p.rows, p.cols);
  check_grid(grid, "naive_matmul_kernel", product);
  MINILORA_LAUNCH(grid, block, stream, naive_matmul_kernel<T, LC, RC>)(p);
  check_launch("naive_matmul_kernel", product, stream);
}

#define MINILORA_NAIVE(T, LC, RC)                                                              \
  template void naive_matmul<T, Contiguous::LC, Contiguous::RC>(                              \
      const Matmul<T, Contiguous::LC, Contiguous::RC>&, cudaStream_t, const char*);
MINILORA_NAIVE(float, Inner, Inner)
MINILORA_NAIVE(float, Inner, Outer)
MINILORA_NAIVE(float, Outer, Outer)
MINILORA_NAIVE(double, Inner, Inner)
MINILORA_NAIVE(double, Inner, Outer)
MINILORA_NAIVE(double, Outer, Outer)
#undef MINILORA_NAIVE

}  // namespace minilora::cuda
