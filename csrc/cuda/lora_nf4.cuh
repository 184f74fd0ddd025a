// The "nf4" rung of the ladder: W stored in NF4 (QLoRA's 4-bit base), dequantized by the tile
// loader of the kernel in lora_nf4.cu. lora_layer.cu runs it for the products that read W.
#pragma once

#include "lora_layer.cuh"  // Nf4Weights
#include "matmul.cuh"

namespace minilora::cuda {

// A product whose right operand's first array is W in NF4: right.first is not read, while
// right.first_ld and right.split still say how W is laid out and where it ends.
template <typename T, Contiguous LC, Contiguous RC>
struct Nf4Matmul : Matmul<T, LC, RC> {
  Nf4Weights w;
};

// The plans and grids are the tiled rung's (tiled_tile): the same 16 × 16 tiles.
template <typename T, Contiguous LC, Contiguous RC>
void nf4_matmul(const Matmul<T, LC, RC>& p, const Nf4Weights& w, const SplitPlan& plan,
                T* scratch, cudaStream_t stream, const char* product);

}  // namespace minilora::cuda
