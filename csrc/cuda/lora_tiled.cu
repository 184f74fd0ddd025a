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
#include "lora_tiled.cuh"

namespace minilora::cuda {

BlockTile tiled_tile() { return {kTile, kTile, kTile}; }

// The block's work, tiles and loop, is tiled_block (lora_tiled.cuh), which the nf4 rung shares.
template <typename T, Contiguous LC, Contiguous RC>
__global__ void __launch_bounds__(kTile * kTile)
    tiled_matmul_kernel(Matmul<T, LC, RC> p, int chunk) {
  tiled_block<T, LC, RC>(p, p.right, chunk);
}

template <typename T, Contiguous LC, Contiguous RC>
void tiled_matmul(const Matmul<T, LC, RC>& p, const SplitPlan& plan, T* scratch,
                  cudaStream_t stream, const char* product) {
  const dim3 block(kTile, kTile);
  launch_split<T, LC, RC>(tiled_matmul_kernel<T, LC, RC>, "tiled_matmul_kernel",
                          split_grid(p.rows, p.cols, tiled_tile(), plan), block, p, plan, scratch, stream, product);
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
