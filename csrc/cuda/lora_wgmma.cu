// Rung 9 of the ladder, for compute capability 9.0 (H100, H200) only: the wide products y and dx
// on Hopper's own tensor-core path, bf16 operands and fp32 accumulators like the bf16 rung
// (lora_mma.cu), which runs the skinny products u, v, dA and dB of this rung too.
//
// What changes from mma.sync (hopper.cuh has the instructions):
//   TMA       one thread asks the tensor memory accelerator for a whole 128 x 64 tile of an operand
//             at a time; the copy runs in the background, zero-fills whatever lies outside the
//             operand, lays the tile out swizzled, and signals an mbarrier when its bytes have
//             landed. No thread computes an address or a bound per element.
//   wgmma     a warpgroup (4 warps, 128 threads) multiplies a 64 x 16 slice of A by a 16 x 128
//             slice of B read straight from shared memory (a descriptor says where and how it is
//             laid out): no fragments loaded into registers first, and one instruction does what
//             64 bf16 mma.sync would (16 per warp). It runs asynchronously: issued, committed as a
//             group, waited for.
//   pipeline  4 stages of shared memory: while the tensor cores work on stage s, the copies for
//             the next stages are already on their way.
//
// TMA copies bytes, it does not convert them, and the arrays are float32 (minilora/kernels/bf16.py
// says why). So each wide product first stages its two glued operands as bf16, K-major (the
// layout wgmma reads without transposing), into the workspace: L as rows x inner and R as
// cols x inner, rounded to nearest even as the bf16 rung rounds them, s·u and s·v included. That
// pass reads each operand once and writes half its bytes; for dx it also transposes [W ; A].
//
// A block: 2 warpgroups, a 128 x 128 tile of C, each warpgroup 64 rows of it in 64 accumulators
// per thread. Thread 0 starts the copies; every thread waits on the stage's mbarrier, the two
// warpgroups issue 4 wgmma each (64 inner indices), commit, and wait until the products of the
// stage before have finished reading it; after a __syncthreads() thread 0 refills that stage.
// Split along the inner dimension at small M, as every rung (matmul.cuh).
//
// Predicted, not measured on a GPU: see benchmarks/results/NOTES-tensor-cores.md.
#include <cuda.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "hopper.cuh"
#include "matmul.cuh"

namespace minilora::cuda {

constexpr int kWgmmaRows = 128;  // a block's tile of C: 128 x 128
constexpr int kWgmmaCols = 128;
constexpr int kWgmmaStep = kSwizzleBytes / 2;  // inner indices per stage: one 128-byte row of bf16
constexpr int kWgmmaInner = 16;                // inner indices per wgmma
constexpr int kWarpgroupRows = 64;             // rows of C per warpgroup (m64)
constexpr int kWgmmaThreads = kWgmmaRows / kWarpgroupRows * kWarpgroupThreads;
constexpr int kStages = 4;
constexpr int kTileBytes = kWgmmaRows * kSwizzleBytes;  // 128 rows of 64 bf16, L's or R's
constexpr int kStageBytes = 2 * kTileBytes;
// The stages, their mbarriers, and room to move the start to a 1024-byte boundary.
constexpr int kWgmmaSharedBytes = kStages * kStageBytes + kStages * 8 + kSwizzleAtomBytes;
static_assert(kWgmmaRows == kWgmmaCols, "one TMA box shape serves L and R");

BlockTile wgmma_tile() { return {kWgmmaRows, kWgmmaCols, kWgmmaStep}; }

// The wide product as the kernel reads it: both operands staged as bf16, behind tensor maps.
struct WgmmaProblem {
  int rows, cols, inner;
  CUtensorMap left, right;  // L (rows x inner) and R (cols x inner), bf16, K-major
  float alpha;
  const float* bias;
  float* out;
};

// ---- staging: a glued float32 operand as a bf16 matrix, K-major --------------------------------
constexpr int kStageTile = 32;
constexpr int kStagingThreads = 256;

// out[o·ld + i] = bf16(op(o, i)) for o < outer, i < inner, a 32 x 32 tile per step of the block's
// grid-stride loop: read with neighbouring threads along the operand's contiguous index, written
// with neighbouring threads along i, through shared memory when the two differ (dx's [W ; A]).
template <Contiguous C>
__global__ void __launch_bounds__(kStagingThreads)
    stage_bf16_kernel(Operand<float, C> op, int outer, int inner, int64_t ld, uint16_t* out) {
  __shared__ uint16_t tile[kStageTile][kStageTile + 1];  // [o][i]
  const int64_t tiles_across = ceil_div(inner, kStageTile);
  const int64_t tiles = tiles_across * ceil_div(outer, kStageTile);
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int outer0 = int(t / tiles_across) * kStageTile, inner0 = int(t % tiles_across) * kStageTile;
    for (int e = threadIdx.x; e < kStageTile * kStageTile; e += kStagingThreads) {
      const int along = e % kStageTile, across = e / kStageTile;
      const int o = C == Contiguous::Inner ? across : along;
      const int i = C == Contiguous::Inner ? along : across;
      if (outer0 + o < outer && inner0 + i < inner) {
        tile[o][i] = to_bf16(op.at(outer0 + o, inner0 + i));
      }
    }
    __syncthreads();  // the tile is complete
    for (int e = threadIdx.x; e < kStageTile * kStageTile; e += kStagingThreads) {
      const int o = e / kStageTile, i = e % kStageTile;
      if (outer0 + o < outer && inner0 + i < inner) {
        out[int64_t(outer0 + o) * ld + inner0 + i] = tile[o][i];
      }
    }
    __syncthreads();  // everyone has written it out before the next tile overwrites it
  }
}

// ---- the product ------------------------------------------------------------------------------
__global__ void __launch_bounds__(kWgmmaThreads)
    wgmma_matmul_kernel(const __grid_constant__ WgmmaProblem p, int chunk) {
  unsigned char* shared = dynamic_shared_memory();
  shared += (kSwizzleAtomBytes - shared_address(shared) % kSwizzleAtomBytes) % kSwizzleAtomBytes;
  uint64_t* full = reinterpret_cast<uint64_t*>(shared + kStages * kStageBytes);  // one per stage
  const auto left_tile = [shared](int stage) { return shared + stage * kStageBytes; };
  const auto right_tile = [shared](int stage) { return shared + stage * kStageBytes + kTileBytes; };

  const int row0 = blockIdx.x * kWgmmaRows;
  const int col0 = blockIdx.y * kWgmmaCols;
  const int begin = blockIdx.z * chunk;
  const int steps = ceil_div(min(p.inner, begin + chunk) - begin, kWgmmaStep);
  const bool leader = threadIdx.x == 0;
  const int warpgroup = threadIdx.x / kWarpgroupThreads;

  if (leader) {
    for (int stage = 0; stage < kStages; ++stage) mbarrier_init(&full[stage], 1);
    fence_barrier_init();
  }
  __syncthreads();  // the barriers are initialised before anyone waits on them

  // Thread 0: the copies of one step into its stage. A chunk is whole steps (the plan's tile
  // step), so a step crosses no other split's inner indices; past the operand TMA gives zeros.
  const auto load = [&](int step) {
    const int stage = step % kStages, inner0 = begin + step * kWgmmaStep;
    mbarrier_arrive_expect_tx(&full[stage], kStageBytes);
    tma_load_2d(left_tile(stage), &p.left, inner0, row0, &full[stage]);
    tma_load_2d(right_tile(stage), &p.right, inner0, col0, &full[stage]);
  };
  if (leader) {
    for (int step = 0; step < min(kStages, steps); ++step) load(step);
  }

  float sum[64] = {};  // this thread's share of the warpgroup's 64 x 128 (wgmma_accumulator_element)
  for (int step = 0; step < steps; ++step) {
    const int stage = step % kStages;
    mbarrier_wait(&full[stage], (step / kStages) % 2);  // the stage's copies have landed
    wgmma_fence();  // the accumulators (zeroed, or last step's) are settled before wgmma reads them
    const unsigned char* a = left_tile(stage) + warpgroup * kWarpgroupRows * kSwizzleBytes;
    const unsigned char* b = right_tile(stage);
    for (int k = 0; k < kWgmmaStep / kWgmmaInner; ++k) {
      const int offset = k * kWgmmaInner * 2;  // bytes into every row
      wgmma_m64n128k16_bf16(sum, wgmma_descriptor(a + offset), wgmma_descriptor(b + offset));
    }
    wgmma_commit_group();
    wgmma_wait_group<1>();  // this warpgroup's products of the step before have read their stage
    __syncthreads();        // ... and the other warpgroup's
    if (leader && step >= 1 && step - 1 + kStages < steps) load(step - 1 + kStages);
  }
  wgmma_wait_group<0>();

  // Split z writes its own slice of the scratch buffer (p.out is the scratch then).
  float* out = p.out + blockIdx.z * (int64_t(p.rows) * p.cols);
  const int thread = threadIdx.x % kWarpgroupThreads;
#pragma unroll
  for (int i = 0; i < 64; ++i) {
    const FragmentElement e = wgmma_accumulator_element(thread, i);
    const int row = row0 + warpgroup * kWarpgroupRows + e.row, col = col0 + e.col;
    if (row < p.rows && col < p.cols) out[int64_t(row) * p.cols + col] = finish(p, col, sum[i]);
  }
}

// ---- host side --------------------------------------------------------------------------------
namespace {

// bf16 values between consecutive rows of a staged operand: TMA wants a multiple of 16 bytes.
int64_t staged_ld(int inner) { return (int64_t(inner) + 7) / 8 * 8; }

template <Contiguous C>
void stage_bf16(const Operand<float, C>& op, int outer, int inner, uint16_t* out,
                cudaStream_t stream, const char* product) {
  const int64_t tiles = int64_t(ceil_div(outer, kStageTile)) * ceil_div(inner, kStageTile);
  const int blocks = int(std::min<int64_t>(tiles, 1 << 20));
  MINILORA_LAUNCH(blocks, kStagingThreads, stream, stage_bf16_kernel<C>)(op, outer, inner,
                                                                         staged_ld(inner), out);
  check_launch("stage_bf16_kernel", product, stream);
}

// A tensor map over a staged operand (outer x inner bf16), read in boxes of 128 rows x 64 values,
// 128-byte swizzled. cuTensorMapEncodeTiled is a driver function: the runtime hands it over, so
// that _C links no libcuda.
CUtensorMap tensor_map(const uint16_t* staged, int outer, int inner, const char* product) {
  using Encode = decltype(&cuTensorMapEncodeTiled);
  static const Encode encode = [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult status = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t error = cudaGetDriverEntryPointByVersion(
        "cuTensorMapEncodeTiled", &function, 12000, cudaEnableDefault, &status);
    return error == cudaSuccess && status == cudaDriverEntryPointSuccess
               ? reinterpret_cast<Encode>(function)
               : nullptr;
  }();
  if (!encode) {
    throw std::runtime_error(std::string("minilora CUDA kernel wgmma_matmul_kernel (") + product +
                             "): the CUDA driver has no cuTensorMapEncodeTiled (TMA needs a "
                             "driver for CUDA 12.0 or newer)");
  }
  const cuuint64_t dims[2] = {cuuint64_t(inner), cuuint64_t(outer)};
  const cuuint64_t strides[1] = {cuuint64_t(staged_ld(inner) * 2)};
  const cuuint32_t box[2] = {kWgmmaStep, kWgmmaRows};
  const cuuint32_t element_strides[2] = {1, 1};
  CUtensorMap map;
  const CUresult result = encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
                                 const_cast<uint16_t*>(staged), dims, strides, box,
                                 element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                 CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (result != CUDA_SUCCESS) {
    throw std::runtime_error(std::string("minilora CUDA kernel wgmma_matmul_kernel (") + product +
                             "): cuTensorMapEncodeTiled failed with CUresult " +
                             std::to_string(int(result)));
  }
  return map;
}

}  // namespace

int64_t wgmma_staging_scratch(int rows, int cols, int inner) {
  const int64_t bytes = (int64_t(rows) + cols) * staged_ld(inner) * 2;
  return (bytes + 16) / int64_t(sizeof(float)) + 1;  // and room to start on a 16-byte boundary
}

template <Contiguous LC, Contiguous RC>
void wgmma_matmul(const Matmul<float, LC, RC>& p, const SplitPlan& plan, float* scratch,
                  cudaStream_t stream, const char* product) {
  // The scratch: the split's partial sums, then the two staged operands (16-byte aligned for TMA).
  const auto staging = reinterpret_cast<uintptr_t>(scratch + split_scratch(plan, p.rows, p.cols));
  auto* left = reinterpret_cast<uint16_t*>((staging + 15) / 16 * 16);
  uint16_t* right = left + int64_t(p.rows) * staged_ld(p.inner);
  stage_bf16(p.left, p.rows, p.inner, left, stream, product);
  stage_bf16(p.right, p.cols, p.inner, right, stream, product);

  const WgmmaProblem w{p.rows,     p.cols,  p.inner, tensor_map(left, p.rows, p.inner, product),
                       tensor_map(right, p.cols, p.inner, product), p.alpha, p.bias, p.out};
  // More than the 48 KiB of dynamic shared memory a kernel gets without asking.
  const cudaError_t error = cudaFuncSetAttribute(
      wgmma_matmul_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kWgmmaSharedBytes);
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("minilora CUDA kernel wgmma_matmul_kernel (") + product +
                             "): cudaFuncSetAttribute(" + std::to_string(kWgmmaSharedBytes) +
                             " bytes of dynamic shared memory) failed: " + cudaGetErrorName(error) +
                             ": " + cudaGetErrorString(error));
  }
  launch_split<float, LC, RC, WgmmaProblem>(
      wgmma_matmul_kernel, "wgmma_matmul_kernel", split_grid(p.rows, p.cols, wgmma_tile(), plan),
      dim3(kWgmmaThreads), w, plan, scratch, stream, product, kWgmmaSharedBytes);
}

// The wide products: y (Inner, Inner) and dx (Inner, Outer).
template void wgmma_matmul<Contiguous::Inner, Contiguous::Inner>(
    const Matmul<float, Contiguous::Inner, Contiguous::Inner>&, const SplitPlan&, float*,
    cudaStream_t, const char*);
template void wgmma_matmul<Contiguous::Inner, Contiguous::Outer>(
    const Matmul<float, Contiguous::Inner, Contiguous::Outer>&, const SplitPlan&, float*,
    cudaStream_t, const char*);

}  // namespace minilora::cuda
