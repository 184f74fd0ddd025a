// Rungs 7 and 8 of the ladder: tensor cores, through the warp-wide matrix product mma.sync
// (mma.cuh), for every product of the layer.
//
// The rungs below this one do one multiply-add per instruction per thread. A tensor core does a
// whole 16 x 8 x 8 (TF32) or 16 x 8 x 16 (bf16) product per warp-instruction: on an A100 or H100
// about 8x (TF32) and 16x (bf16) the arithmetic rate of plain fp32. The catch is the operands:
//
//   "tf32x3"  TF32 keeps 10 of float32's 23 mantissa bits, so one TF32 product is only good to
//             about 1e-3 relative, far outside float32's rounding. Split each operand in two,
//             x = hi + lo with hi = tf32(x) and lo = tf32(x - hi): hi·hi + hi·lo + lo·hi is then
//             x·y to about 3·2^-22 (the lo·lo term and the two roundings are what is left), inside
//             float32's own error. Three tensor-core products for one: still ahead of plain fp32
//             where the tensor cores are 8x faster. The big products (hi·hi) and the small ones
//             (hi·lo, lo·hi) go to separate fp32 accumulators, added once at the end: the small
//             terms then never round the big sum, and the float32 rounding bound of accuracy.py
//             holds for the whole result (tests/test_emulated.py checks it; a single TF32 product
//             fails it, tests/test_emulated_mma.py).
//   "bf16"    every operand rounded to bf16 (8 mantissa bits, ties to even) as it is staged, one
//             m16n8k16 product, fp32 accumulators, fp32 output. The arrays stay float32 (NumPy and
//             CuPy have no bfloat16): the inputs are float32 arrays, rounded here; the intermediate
//             u and v are float32 too, and are rounded again where a product reads them.
//
// The kernel: a block of 4 warps owns a 64 x 64 tile of C, each warp a 32 x 32 piece of it (2 x 4
// products of 16 x 8). Per step the block copies 16 inner indices of L and R into shared memory
// (zero outside the operand, as in the tiled rung), then each warp loads its fragments from there
// (the lane's elements, mma.cuh), converts them, and issues its products. A warp whose 16 x 8 piece
// lies wholly outside C skips it: every lane of the warp decides alike, so the warp stays together.
// The LoRA term rides in the glued inner dimension as in every rung. All six products of the layer
// run here, skinny ones too, so that each rung is one precision throughout (the bf16 rung rounds u,
// v and dy where the products read them, as a bf16 layer would).
//
// Predicted, not measured on a GPU: this is the readable rung, single-buffered with two barriers
// per step, and its shared-memory loads of fragments are scalar (no ldmatrix); it should beat the
// fp32 rungs at large M and stay well short of cuBLAS (benchmarks/results/NOTES-tensor-cores.md).
#include "matmul.cuh"
#include "mma.cuh"

namespace minilora::cuda {

constexpr int kMmaThreads = 4 * kWarpSize;
constexpr int kMmaTile = 64;   // a block's tile of C: 64 x 64
constexpr int kWarpTile = 32;  // a warp's piece: 32 x 32 = 2 x 4 products of 16 x 8
constexpr int kMmaStep = 16;   // inner indices per shared tile
constexpr int kTf32Inner = 8, kBf16Inner = 16;  // inner indices per instruction

BlockTile mma_tile() { return {kMmaTile, kMmaTile, kMmaStep}; }

// A tile stored [outer][inner]: a lane's fragment elements are then a few words of a row. The
// 4 floats of padding spread the 8 rows a warp reads at once over all 32 banks.
using MmaTile = float[kMmaTile][kMmaStep + 4];

// Each thread copies 8 elements of a 64 x 16 piece of the operand; consecutive threads walk the
// operand's contiguous index, so a warp reads whole cache lines.
template <Contiguous C>
__device__ __forceinline__ void copy_tile(const Operand<float, C>& op, int outer0, int outer_end,
                                          int inner0, int inner_end, MmaTile& tile) {
#pragma unroll
  for (int e = 0; e < kMmaTile * kMmaStep / kMmaThreads; ++e) {
    const int index = e * kMmaThreads + threadIdx.x;
    const int outer = C == Contiguous::Inner ? index / kMmaStep : index % kMmaTile;
    const int inner = C == Contiguous::Inner ? index % kMmaStep : index / kMmaTile;
    const int o = outer0 + outer, i = inner0 + inner;
    tile[outer][inner] = (o < outer_end && i < inner_end) ? op.at(o, i) : 0.0f;
  }
}

// Which of the warp's 2 x 4 pieces of 16 x 8 overlap C: the same answer in every lane.
struct WarpPieces {
  int row0, col0;  // of the warp's 32 x 32 piece, within the block's tile
  bool live[2][4];
};

// Which operand of the product a fragment belongs to: A (from `left`) or B (from `right`).
enum class Fragment { A, B };

// The value of fragment element e, read from a tile stored [outer][inner]: an element of A sits at
// (row, inner index), of B at (inner index, column), and rows of A and columns of B are the
// tiles' outer index. outer0: where the fragment's rows (A) or columns (B) start; k0: its first
// inner index.
template <Fragment kOf>
__device__ __forceinline__ float tile_value(const MmaTile& tile, int outer0, int k0,
                                            FragmentElement e) {
  if constexpr (kOf == Fragment::A) {
    return tile[outer0 + e.row][k0 + e.col];
  } else {
    return tile[outer0 + e.col][k0 + e.row];
  }
}

// x = hi + lo as two TF32 values (the top of this file). hi is x rounded to nearest, except where
// that rounds a finite x up to infinity (|x| within half a TF32 step of FLT_MAX): there hi is x
// rounded toward zero, so that lo = x - hi stays finite instead of x - inf = -inf (and the
// product NaN).
__device__ __forceinline__ void split_tf32(float x, uint32_t& hi, uint32_t& lo) {
  constexpr uint32_t kExponentBits = 0x7f800000u, kLow13Bits = 0x1fffu;
  hi = to_tf32(x);
  const bool rounded_to_infinity = (hi & ~0x80000000u) == kExponentBits &&
                                   (bits_of(x) & kExponentBits) != kExponentBits;
  if (rounded_to_infinity) hi = bits_of(x) & ~kLow13Bits;
  lo = to_tf32(x - float_from_bits(hi));
}

// The warp's fragments of one operand for one instruction: kPieces of them (2 of A, 16 rows each;
// 4 of B, 8 columns each), from outer index outer0, kRegs registers each. As TF32, every value
// split in two (split_tf32).
template <Fragment kOf, int kPieces, int kRegs>
__device__ __forceinline__ void load_tf32(const MmaTile& tile, int outer0, int k0, int lane,
                                          uint32_t (&hi)[kPieces][kRegs],
                                          uint32_t (&lo)[kPieces][kRegs]) {
  constexpr int kSpan = kOf == Fragment::A ? 16 : 8;
  const auto element = kOf == Fragment::A ? tf32_a_element : tf32_b_element;
#pragma unroll
  for (int piece = 0; piece < kPieces; ++piece) {
    const int start = outer0 + piece * kSpan;
#pragma unroll
    for (int j = 0; j < kRegs; ++j) {
      split_tf32(tile_value<kOf>(tile, start, k0, element(lane, j)), hi[piece][j], lo[piece][j]);
    }
  }
}

// The same as bf16, two values to a register: elements 2j (low half) and 2j + 1 (high half).
template <Fragment kOf, int kPieces, int kRegs>
__device__ __forceinline__ void load_bf16(const MmaTile& tile, int outer0, int k0, int lane,
                                          uint32_t (&regs)[kPieces][kRegs]) {
  constexpr int kSpan = kOf == Fragment::A ? 16 : 8;
  const auto element = kOf == Fragment::A ? bf16_a_element : bf16_b_element;
#pragma unroll
  for (int piece = 0; piece < kPieces; ++piece) {
    const int start = outer0 + piece * kSpan;
#pragma unroll
    for (int j = 0; j < kRegs; ++j) {
      const FragmentElement low = element(lane, 2 * j), high = element(lane, 2 * j + 1);
      regs[piece][j] = pack_bf16(tile_value<kOf>(tile, start, k0, low),
                                 tile_value<kOf>(tile, start, k0, high));
    }
  }
}

// The warp's piece += its rows of `left` times its columns of `right` over 8 inner indices from k0,
// each product as three TF32 products: the big one into `big`, the two small ones into `small`.
__device__ __forceinline__ void multiply_tf32x3(const MmaTile& left, const MmaTile& right, int k0,
                                                const WarpPieces& w, int lane,
                                                float (&big)[2][4][4], float (&small)[2][4][4]) {
  uint32_t a_hi[2][4], a_lo[2][4], b_hi[4][2], b_lo[4][2];
  load_tf32<Fragment::A>(left, w.row0, k0, lane, a_hi, a_lo);
  load_tf32<Fragment::B>(right, w.col0, k0, lane, b_hi, b_lo);
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      if (!w.live[mi][ni]) continue;
      mma_m16n8k8_tf32(small[mi][ni], a_hi[mi], b_lo[ni], small[mi][ni]);
      mma_m16n8k8_tf32(small[mi][ni], a_lo[mi], b_hi[ni], small[mi][ni]);
      mma_m16n8k8_tf32(big[mi][ni], a_hi[mi], b_hi[ni], big[mi][ni]);
    }
  }
}

// The same over 16 inner indices from k0 with bf16 operands, two to a register.
__device__ __forceinline__ void multiply_bf16(const MmaTile& left, const MmaTile& right, int k0,
                                              const WarpPieces& w, int lane,
                                              float (&sum)[2][4][4]) {
  uint32_t a[2][4], b[4][2];
  load_bf16<Fragment::A>(left, w.row0, k0, lane, a);
  load_bf16<Fragment::B>(right, w.col0, k0, lane, b);
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      if (w.live[mi][ni]) mma_m16n8k16_bf16(sum[mi][ni], a[mi], b[ni], sum[mi][ni]);
    }
  }
}

template <Contiguous LC, Contiguous RC, TensorCores kCores>
__global__ void __launch_bounds__(kMmaThreads) mma_matmul_kernel(Matmul<float, LC, RC> p, int chunk) {
  __shared__ __align__(16) MmaTile left_tile, right_tile;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int row0 = blockIdx.x * kMmaTile;
  const int col0 = blockIdx.y * kMmaTile;
  const int begin = blockIdx.z * chunk;
  const int end = min(p.inner, begin + chunk);

  WarpPieces w{(warp / 2) * kWarpTile, (warp % 2) * kWarpTile, {}};
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      w.live[mi][ni] = row0 + w.row0 + mi * 16 < p.rows && col0 + w.col0 + ni * 8 < p.cols;
    }
  }

  float sum[2][4][4] = {};
  float small[2][4][4] = {};  // 3xTF32's hi·lo and lo·hi products
  for (int inner0 = begin; inner0 < end; inner0 += kMmaStep) {
    copy_tile(p.left, row0, p.rows, inner0, end, left_tile);
    copy_tile(p.right, col0, p.cols, inner0, end, right_tile);
    __syncthreads();  // the tiles are complete
    if constexpr (kCores == TensorCores::Tf32x3) {
      for (int k0 = 0; k0 < kMmaStep && inner0 + k0 < end; k0 += kTf32Inner) {
        multiply_tf32x3(left_tile, right_tile, k0, w, lane, sum, small);
      }
    } else {
      for (int k0 = 0; k0 < kMmaStep; k0 += kBf16Inner) {
        multiply_bf16(left_tile, right_tile, k0, w, lane, sum);
      }
    }
    __syncthreads();  // everyone is done reading before the next copy overwrites the tiles
  }

  // Split z writes its own slice of the scratch buffer (p.out is the scratch then).
  float* out = p.out + blockIdx.z * (int64_t(p.rows) * p.cols);
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const FragmentElement e = accumulator_element(lane, i);
        const int row = row0 + w.row0 + mi * 16 + e.row;
        const int col = col0 + w.col0 + ni * 8 + e.col;
        const float value = kCores == TensorCores::Tf32x3 ? sum[mi][ni][i] + small[mi][ni][i]
                                                          : sum[mi][ni][i];
        if (row < p.rows && col < p.cols) out[int64_t(row) * p.cols + col] = finish(p, col, value);
      }
    }
  }
}

const char* mma_kernel_name(TensorCores cores) {
  return cores == TensorCores::Tf32x3 ? "mma_matmul_kernel (3xTF32)" : "mma_matmul_kernel (bf16)";
}

template <Contiguous LC, Contiguous RC>
void mma_matmul(const Matmul<float, LC, RC>& p, const SplitPlan& plan, float* scratch,
                cudaStream_t stream, const char* product, TensorCores cores) {
  auto* kernel = cores == TensorCores::Tf32x3 ? mma_matmul_kernel<LC, RC, TensorCores::Tf32x3>
                                              : mma_matmul_kernel<LC, RC, TensorCores::Bf16>;
  launch_split<float, LC, RC>(kernel, mma_kernel_name(cores), split_grid(p.rows, p.cols, mma_tile(), plan),
                              dim3(kMmaThreads), p, plan, scratch, stream, product);
}

// Every product of the layer: y, u (Inner, Inner); v, dx (Inner, Outer); dA, dB (Outer, Outer).
#define MINILORA_MMA(LC, RC)                                                                   \
  template void mma_matmul<Contiguous::LC, Contiguous::RC>(                                   \
      const Matmul<float, Contiguous::LC, Contiguous::RC>&, const SplitPlan&, float*,         \
      cudaStream_t, const char*, TensorCores);
MINILORA_MMA(Inner, Inner)
MINILORA_MMA(Inner, Outer)
MINILORA_MMA(Outer, Outer)
#undef MINILORA_MMA

}  // namespace minilora::cuda
