// Entry points that run the instructions of csrc/cuda/mma.cuh on registers given from Python, for
// tests/test_emulated_mma.py, which builds the registers of every lane from known matrices with the
// PTX ISA's fragment formulas (written out there, independently of mma.cuh) and checks D, and which
// checks the conversions against exact rounding. Called through ctypes (minilora/kernels/emulated.py).
#include <cstdio>

#include "emulation.h"
#include "launch.cuh"
#include "mma.cuh"

namespace {

using namespace minilora::cuda;

// Every lane hands in a[lane][0..3], b[lane][0..1], c[lane][0..3] and stores d[lane][0..3]; lane
// `absent` (if 0 <= absent < 32) returns instead (at_barrier = 0) or waits at __syncthreads()
// (at_barrier = 1), which the emulator must report as divergence.
__global__ void mma_probe_kernel(int bf16, const uint32_t* a, const uint32_t* b, const float* c,
                                 float* d, int absent, int at_barrier) {
  const int lane = int(threadIdx.x);
  if (lane == absent) {
    if (at_barrier) __syncthreads();
    return;
  }
  uint32_t ra[4], rb[2];
  float rc[4], rd[4];
  for (int i = 0; i < 4; ++i) ra[i] = a[lane * 4 + i];
  for (int i = 0; i < 2; ++i) rb[i] = b[lane * 2 + i];
  for (int i = 0; i < 4; ++i) rc[i] = c[lane * 4 + i];
  if (bf16) {
    mma_m16n8k16_bf16(rd, ra, rb, rc);
  } else {
    mma_m16n8k8_tf32(rd, ra, rb, rc);
  }
  for (int i = 0; i < 4; ++i) d[lane * 4 + i] = rd[i];
  if (at_barrier) __syncthreads();
}

}  // namespace

// One warp-wide mma.sync (m16n8k16 bf16 if bf16, else m16n8k8 TF32) by a block of `threads`
// threads (32, or fewer to leave the warp incomplete). 0 on success; 2 with the emulator's message.
MINILORA_EXPORT int minilora_emulated_mma(int bf16, int threads, const uint32_t* a,
                                          const uint32_t* b, const float* c, float* d, int absent,
                                          int at_barrier, char* message, size_t message_bytes) {
  cudaGetLastError();
  MINILORA_LAUNCH(dim3(1), dim3(unsigned(threads)), nullptr, mma_probe_kernel)(bf16, a, b, c, d,
                                                                              absent, at_barrier);
  const cudaError_t error = cudaGetLastError();
  if (error == cudaSuccess) return 0;
  std::snprintf(message, message_bytes, "%s: %s", cudaGetErrorName(error),
                cudaGetErrorString(error));
  return 2;
}

// out[i] = the bits of to_tf32(in[i]) (bf16 = 0) or of to_bf16(in[i]) (bf16 = 1).
MINILORA_EXPORT void minilora_emulated_round(int bf16, const float* in, uint32_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16 ? to_bf16(in[i]) : to_tf32(in[i]);
}
