// Rung "nf4": the shared-memory tiles of the tiled rung (lora_tiled.cu), with W stored in 4 bits.
//
// QLoRA keeps the frozen W in NF4: 4 bits a weight plus one absmax per block of 64 (lora_nf4.cuh
// has the layout). This kernel never makes a float copy of W in device memory. The loader of the
// right tile reads, for each element of W it needs, half a byte and its block's absmax, looks the
// 4-bit index up among the 16 levels (copied into shared memory once per block of threads) and
// stores level · absmax into the shared tile; the multiply loop, the bounds and the split sums are
// the tiled rung's, and never see a 4-bit number. The only float W is a 16 × 16 tile in shared
// memory at a time.
//
// What it costs against the tiled rung: for W, half a byte per element from device memory instead
// of 4 or 8 (two neighbouring threads read the same byte, and up to block_size neighbours the same
// absmax, so a warp still reads whole cache lines), plus a look-up and a multiply per element. The
// other operand and the LoRA part of the right one ([W | B] for y, [W ; A] for dx) load as in the
// tiled rung. It runs only the products that read W, y = x·Wᵀ + s·u·Bᵀ and dx = dy·W + s·v·A; the
// skinny products u, v, dA and dB run on the tiled kernel (lora_layer.cu).
//
// Not yet measured on a GPU: checked on the CPU emulator, against the float64 reference on W
// dequantized (tests/test_emulated_nf4.py).
#include "lora_nf4.cuh"
#include "lora_tiled.cuh"

namespace minilora::cuda {

constexpr int kLevels = 16;

// The right operand as the tiled block reads it: element (col, inner) of [W | B] (y) or [W ; A]
// (dx), with W dequantized from its 4 bits on the fly. `levels` is the code, in shared memory.
template <typename T, Contiguous LC, Contiguous RC>
struct Nf4Right {
  const Nf4Matmul<T, LC, RC>& p;
  const float* levels;

  __device__ __forceinline__ T at(int col, int inner) const {
    return inner < p.right.split ? weight(col, inner)       // W, dequantized
                                 : p.right.at(col, inner);  // B or A
  }

  // Element (outer, inner) of W, with inner < right.split: number i of the row-major W.
  __device__ __forceinline__ T weight(int outer, int inner) const {
    const int64_t i = Operand<T, RC>::offset(outer, inner, p.right.first_ld);
    const uint8_t byte = p.w.packed[i >> 1];
    const int index = (i & 1) ? (byte & 0x0F) : (byte >> 4);  // even numbers: the high nibble
    return T(levels[index] * p.w.absmax[i / p.w.block_size]);  // a float product, as dequantize()
  }
};

// The tiled rung's block (lora_tiled.cuh), once the levels are in shared memory.
template <typename T, Contiguous LC, Contiguous RC>
__global__ void __launch_bounds__(kTile * kTile)
    nf4_matmul_kernel(Nf4Matmul<T, LC, RC> p, int chunk) {
  __shared__ float levels[kLevels];
  const int thread = threadIdx.y * kTile + threadIdx.x;
  if (thread < kLevels) levels[thread] = p.w.code[thread];
  __syncthreads();  // the levels are in place before any element of W is dequantized
  tiled_block<T, LC, RC>(p, Nf4Right<T, LC, RC>{p, levels}, chunk);
}

template <typename T, Contiguous LC, Contiguous RC>
void nf4_matmul(const Matmul<T, LC, RC>& p, const Nf4Weights& w, const SplitPlan& plan,
                T* scratch, cudaStream_t stream, const char* product) {
  const Nf4Matmul<T, LC, RC> q{p, w};
  launch_split<T, LC, RC, Nf4Matmul<T, LC, RC>>(nf4_matmul_kernel<T, LC, RC>, "nf4_matmul_kernel",
                                                split_grid(p.rows, p.cols, tiled_tile(), plan),
                                                dim3(kTile, kTile), q, plan, scratch, stream,
                                                product);
}

// The products that read W: y (both operands Contiguous::Inner) and dx (right Outer).
#define MINILORA_NF4(T, LC, RC)                                                                \
  template void nf4_matmul<T, Contiguous::LC, Contiguous::RC>(                                \
      const Matmul<T, Contiguous::LC, Contiguous::RC>&, const Nf4Weights&, const SplitPlan&,  \
      T*, cudaStream_t, const char*);
MINILORA_NF4(float, Inner, Inner)
MINILORA_NF4(float, Inner, Outer)
MINILORA_NF4(double, Inner, Inner)
MINILORA_NF4(double, Inner, Outer)
#undef MINILORA_NF4

}  // namespace minilora::cuda
