// The warp collectives of the emulator (warp.h): mma.sync for TF32 and bf16, and the device
// attributes that say the emulator has them.
//
// A collective keeps, per warp of the running block, the registers each lane handed in and how
// many lanes have arrived. The last lane computes D for the whole warp; the others wait (fibers:
// back to the scheduler until the warp's generation moves on; OS threads: on a condition variable).
// Registers and results are kept twice, by the parity of the generation, so that a lane that has
// already gone on to the next instruction cannot overwrite what a slower lane has yet to read.
//
// The arithmetic: a TF32 or bf16 product fits a float exactly (11 + 11 or 8 + 8 significant bits),
// so each product is exact, and the sum runs over the inner index in order, rounded to nearest in
// float after every addition. The hardware's order and rounding inside one instruction are not
// specified by the PTX ISA (some GPUs truncate); the kernel tests compare against rounding bounds
// (minilora/kernels/accuracy.py), not bits, so they allow for either.
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>

#include "cuda_runtime.h"
#include "mma.cuh"
#include "hopper.h"
#include "scheduler.h"
#include "warp.h"

namespace minilora::emulation {
namespace {

constexpr int kLanes = 32;
constexpr int kMaxWarps = 1024 / kLanes;

enum class Instruction { MmaTf32, MmaBf16 };

const char* name_of(Instruction instruction) {
  return instruction == Instruction::MmaTf32 ? "mma.sync.m16n8k8.tf32" : "mma.sync.m16n8k16.bf16";
}

struct Registers {
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
};

struct Warp {
  Instruction instruction = Instruction::MmaTf32;
  int arrived = 0;
  uint64_t generation = 0;
  Registers lanes[2][kLanes];
  float d[2][kLanes][4];
};

Warp warps[kMaxWarps];
uint64_t completed = 0;

#if MINILORA_EMULATION_THREADS
std::mutex mutex;
std::condition_variable released;
#endif

float tf32_value(uint32_t bits) {
  return cuda::float_from_bits(bits & ~0x1fffu);  // a TF32 operand's low 13 bits are not read
}

float bf16_value(uint32_t pair, int half) {
  return cuda::float_from_bits(half == 0 ? pair << 16 : pair & 0xffff0000u);
}

// D = A·B + C for the 16 x 8 tile, from every lane's registers (the layouts of mma.cuh).
template <int kInner>
void multiply(const Registers (&lanes)[kLanes], float (&d)[kLanes][4], bool tf32) {
  float A[16][kInner], B[kInner][8], C[16][8];
  for (int lane = 0; lane < kLanes; ++lane) {
    const Registers& r = lanes[lane];
    for (int i = 0; i < 4; ++i) {
      const cuda::FragmentElement c = cuda::accumulator_element(lane, i);
      C[c.row][c.col] = r.c[i];
    }
    if (tf32) {
      for (int i = 0; i < 4; ++i) {
        const cuda::FragmentElement e = cuda::tf32_a_element(lane, i);
        A[e.row][e.col] = tf32_value(r.a[i]);
      }
      for (int i = 0; i < 2; ++i) {
        const cuda::FragmentElement e = cuda::tf32_b_element(lane, i);
        B[e.row][e.col] = tf32_value(r.b[i]);
      }
    } else {
      for (int i = 0; i < 8; ++i) {
        const cuda::FragmentElement e = cuda::bf16_a_element(lane, i);
        A[e.row][e.col] = bf16_value(r.a[i / 2], i % 2);
      }
      for (int i = 0; i < 4; ++i) {
        const cuda::FragmentElement e = cuda::bf16_b_element(lane, i);
        B[e.row][e.col] = bf16_value(r.b[i / 2], i % 2);
      }
    }
  }
  for (int lane = 0; lane < kLanes; ++lane) {
    for (int i = 0; i < 4; ++i) {
      const cuda::FragmentElement e = cuda::accumulator_element(lane, i);
      float sum = C[e.row][e.col];
      for (int k = 0; k < kInner; ++k) sum += A[e.row][k] * B[k][e.col];
      d[lane][i] = sum;
    }
  }
}

Registers registers(const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  Registers r;
  std::memcpy(r.a, a, sizeof r.a);
  std::memcpy(r.b, b, sizeof r.b);
  std::memcpy(r.c, c, sizeof r.c);
  return r;
}

void poison(float (&d)[4]) {
  for (float& value : d) value = std::numeric_limits<float>::quiet_NaN();
}

std::string where(int warp) {
  return "block " + str(blockIdx) + ", warp " + std::to_string(warp);
}

void collective(Instruction instruction, const Registers& mine, float (&d)[4]) {
#if MINILORA_EMULATION_THREADS
  std::unique_lock<std::mutex> lock(mutex);
#endif
  const int64_t thread = linear(threadIdx, blockDim);
  const int64_t threads = int64_t(blockDim.x) * blockDim.y * blockDim.z;
  const int w = int(thread / kLanes), lane = int(thread % kLanes);
  if ((w + 1) * int64_t(kLanes) > threads) {
    fail(cudaErrorLaunchFailure, std::string(name_of(instruction)) + " in " + where(w) +
                                     ": the warp is not whole (the block has " +
                                     std::to_string(threads) + " threads); mma needs 32 lanes");
    poison(d);
    return;
  }
  Warp& warp = warps[w];
  if (warp.arrived > 0 && warp.instruction != instruction) {
    fail(cudaErrorLaunchFailure, "warp divergence in " + where(w) + ": lanes wait at " +
                                     name_of(warp.instruction) + ", lane " + std::to_string(lane) +
                                     " reached " + name_of(instruction));
    poison(d);
    return;
  }
  warp.instruction = instruction;
  const uint64_t generation = warp.generation;
  const int parity = int(generation % 2);
  warp.lanes[parity][lane] = mine;
  if (++warp.arrived == kLanes) {
    if (instruction == Instruction::MmaTf32) {
      multiply<8>(warp.lanes[parity], warp.d[parity], true);
    } else {
      multiply<16>(warp.lanes[parity], warp.d[parity], false);
    }
    warp.arrived = 0;
    ++warp.generation;
    ++completed;
#if MINILORA_EMULATION_THREADS
    released.notify_all();
#endif
  } else {
#if MINILORA_EMULATION_THREADS
    if (!released.wait_for(lock, std::chrono::seconds(10),
                           [&] { return warp.generation != generation; })) {
      fail(cudaErrorLaunchFailure, "warp divergence in " + where(w) + ": lanes waited 10 s at " +
                                       name_of(instruction) + " for lanes that never came");
      poison(d);
      return;
    }
#else
    while (warp.generation == generation) wait_at_warp();
#endif
  }
  std::memcpy(d, warp.d[parity][lane], sizeof d);
}

}  // namespace

void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                      const float (&c)[4]) {
  collective(Instruction::MmaTf32, registers(a, b, c), d);
}

void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                       const float (&c)[4]) {
  collective(Instruction::MmaBf16, registers(a, b, c), d);
}

void reset_warps() {
  for (Warp& warp : warps) warp.arrived = 0;
  start_block_of_hopper_state();
}

uint64_t collectives_completed() { return completed; }
void count_completed_collective() { ++completed; }

int incomplete_warp() {
  for (int w = 0; w < kMaxWarps; ++w) {
    if (warps[w].arrived > 0) return w;
  }
  return -1;
}

}  // namespace minilora::emulation

// The emulator has what compute capability 9.0 has and the kernels use: mma.sync on TF32 and bf16
// (here), TMA, mbarrier and wgmma (tma.cpp, wgmma.cpp).
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int) {
  *value = attribute == cudaDevAttrComputeCapabilityMajor ? 9 : 0;
  return cudaSuccess;
}
