// The sm_90 (Hopper) instructions the wgmma rung uses, each wrapped in one small device function:
// the tensor memory accelerator (TMA) that copies a whole 2-D box of a tensor into shared memory,
// the mbarrier a block waits on until such a copy has landed, and the warpgroup-wide matrix
// product wgmma.mma_async that reads both operands straight from shared memory.
//
// With nvcc for sm_90a each function is a PTX instruction or two. They exist on compute capability
// 9.0 only ("a": architecture-specific features, which newer GPUs do not promise): every other pass
// compiles them to a trap, and lora_layer.cu refuses the rung elsewhere before launching anything.
// The CPU emulator implements the same functions (csrc/emulation/hopper.h) with the semantics the
// PTX ISA gives them, the copies and products made as late as the ISA allows, and
// tests/test_emulated_hopper.py checks its layouts against the ISA's formulas written out apart.
//
// What the instructions want of shared memory (PTX ISA, "Tensor Memory Accelerator" and
// "Asynchronous Warpgroup Level Matrix Shared Memory Layout"), for the one layout used here: a
// tile of R rows of 64 bf16 values (128 bytes a row) stored K-major with the 128-byte swizzle.
// Row m sits at m·128 bytes; the 16-byte piece c of the row (8 values) sits at piece c ^ (m % 8)
// of it. TMA writes a box that way (CU_TENSOR_MAP_SWIZZLE_128B), wgmma reads it that way (the
// descriptor's swizzle mode 1), and both take the swizzle from address bits 4-9, so a tile starts
// on a 1024-byte boundary: 8 rows, one "swizzle atom", 1024 bytes apart (the descriptor's stride).
// The swizzle lets a warp read 8 rows of one 16-byte column without bank conflicts.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "mma.cuh"

#if defined(MINILORA_EMULATION)
#include "hopper.h"
#endif

namespace minilora::cuda {

constexpr int kSwizzleBytes = 128;       // one row of a tile: 64 bf16 values
constexpr int kSwizzleAtomBytes = 1024;  // 8 rows, the period of the swizzle
constexpr int kWarpgroupThreads = 4 * kWarpSize;

// Where thread `thread` (0..127) of a warpgroup holds its i-th accumulator (0 .. n/2 - 1) of the
// 64 x n tile D of a wgmma (PTX ISA, "Register Fragments", wgmma .m64nNk16): warp w owns rows
// 16w .. 16w + 15, and there its lanes hold 8 columns after 8 columns the way they hold an
// mma.sync accumulator (mma.cuh), four values a piece.
__host__ __device__ constexpr FragmentElement wgmma_accumulator_element(int thread, int i) {
  const FragmentElement e = accumulator_element(thread % kWarpSize, i % 4);
  return {16 * (thread / kWarpSize) + e.row, 8 * (i / 4) + e.col};
}

#if defined(MINILORA_EMULATION)

__device__ __forceinline__ unsigned char* dynamic_shared_memory() {
  return emulation::dynamic_shared_memory();
}
__device__ __forceinline__ uint32_t shared_address(const void* pointer) {
  return emulation::shared_address(pointer);
}
__device__ __forceinline__ void mbarrier_init(uint64_t* barrier, uint32_t arrivals) {
  emulation::mbarrier_init(barrier, arrivals);
}
__device__ __forceinline__ void fence_barrier_init() { emulation::fence_barrier_init(); }
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* barrier, uint32_t bytes) {
  emulation::mbarrier_arrive_expect_tx(barrier, bytes);
}
__device__ __forceinline__ void mbarrier_wait(uint64_t* barrier, uint32_t parity) {
  emulation::mbarrier_wait(barrier, parity);
}
__device__ __forceinline__ void tma_load_2d(void* shared, const CUtensorMap* map, int x, int y,
                                            uint64_t* barrier) {
  emulation::TensorMap2d emulated;
  std::memcpy(&emulated, map, sizeof emulated);
  emulation::tma_load_2d(shared, emulated, x, y, barrier);
}
__device__ __forceinline__ void wgmma_fence() { emulation::wgmma_fence(); }
__device__ __forceinline__ void wgmma_commit_group() { emulation::wgmma_commit_group(); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait_group() {
  emulation::wgmma_wait_group(kPending);
}
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float (&d)[64], uint64_t descriptor_a,
                                                      uint64_t descriptor_b) {
  emulation::wgmma_m64k16_bf16(d, 128, descriptor_a, descriptor_b);
}

#elif defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)

// The dynamic shared memory of the launch (its third <<<>>> argument).
__device__ __forceinline__ unsigned char* dynamic_shared_memory() {
  extern __shared__ __align__(16) unsigned char dynamic_shared[];
  return dynamic_shared;
}

// The 32-bit shared-memory address PTX operands take, of a generic pointer into shared memory.
__device__ __forceinline__ uint32_t shared_address(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// A barrier that completes a phase when `arrivals` threads have arrived and every byte they said
// to expect has landed. Phases alternate parity 0, 1, 0, ...; a wait names the parity it waits out.
__device__ __forceinline__ void mbarrier_init(uint64_t* barrier, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(barrier)),
               "r"(arrivals));
}

// Makes the initialised barriers visible to the TMA unit (then a __syncthreads() to the threads).
__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// One arrival, and `bytes` more to expect from copies before the phase may complete.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* barrier, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(
                   shared_address(barrier)),
               "r"(bytes)
               : "memory");
}

// Wait until the phase of this parity has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t* barrier, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred ready;\n"
        " mbarrier.try_wait.parity.shared::cta.b64 ready, [%1], %2;\n"
        " selp.u32 %0, 1, 0, ready;\n}"
        : "=r"(done)
        : "r"(shared_address(barrier)), "r"(parity)
        : "memory");
  }
}

// Copy the box at element (x, y) of the tensor `map` describes into `shared`; the bytes count
// towards `barrier`'s expected transactions (zeros where the box leaves the tensor count too).
__device__ __forceinline__ void tma_load_2d(void* shared, const CUtensorMap* map, int x, int y,
                                            uint64_t* barrier) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4}], [%2];" ::"r"(shared_address(shared)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(shared_address(barrier)), "r"(x), "r"(y)
      : "memory");
}

// The registers a wgmma reads and writes are settled: before the first wgmma after other code
// wrote the accumulators.
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}

// Close the group of wgmma issued since the last commit.
__device__ __forceinline__ void wgmma_commit_group() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}

// Wait until at most kPending groups are still running: the others have read their shared memory
// and written their accumulators.
template <int kPending>
__device__ __forceinline__ void wgmma_wait_group() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}

// d (the thread's 64 of the 64 x 128 fp32 accumulators) += A (64 x 16) · B (16 x 128), bf16 from
// shared memory, both K-major (the two trailing 0s: neither transposed), neither negated (1, 1);
// `accumulate` true adds to d (false would overwrite it).
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float (&d)[64], uint64_t descriptor_a,
                                                      uint64_t descriptor_b) {
  asm volatile(
      "{\n .reg .pred accumulate;\n setp.ne.b32 accumulate, %66, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, accumulate, 1, 1, 0, 0;\n}"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]),
        "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]),
        "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),
        "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]),
        "+f"(d[62]), "+f"(d[63])
      : "l"(descriptor_a), "l"(descriptor_b), "r"(1));
}

#else

__device__ __forceinline__ unsigned char* dynamic_shared_memory() {
  __trap();
  return nullptr;
}
__device__ __forceinline__ uint32_t shared_address(const void*) {
  __trap();
  return 0;
}
__device__ __forceinline__ void mbarrier_init(uint64_t*, uint32_t) { __trap(); }
__device__ __forceinline__ void fence_barrier_init() { __trap(); }
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t*, uint32_t) { __trap(); }
__device__ __forceinline__ void mbarrier_wait(uint64_t*, uint32_t) { __trap(); }
__device__ __forceinline__ void tma_load_2d(void*, const CUtensorMap*, int, int, uint64_t*) {
  __trap();
}
__device__ __forceinline__ void wgmma_fence() { __trap(); }
__device__ __forceinline__ void wgmma_commit_group() { __trap(); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait_group() {
  __trap();
}
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float (&)[64], uint64_t, uint64_t) {
  __trap();
}

#endif

// The wgmma descriptor of a K-major tile with the 128-byte swizzle that starts at `tile` (PTX ISA,
// "Matrix Descriptor Format"): bits 0-13 the start address / 16, bits 16-29 the leading byte
// offset / 16 (not used by this layout: a k16 slice lies within one 128-byte row), bits 32-45 the
// stride byte offset / 16 (from one 8-row atom to the next), bits 62-63 the swizzle (1: 128 bytes).
// The k-th slice of 16 values of a row starts k·32 bytes further: the same descriptor with the
// start address moved on, the swizzle then applied to the moved addresses.
__device__ __forceinline__ uint64_t wgmma_descriptor(const void* tile) {
  const uint64_t start = (shared_address(tile) & 0x3ffff) >> 4;
  const uint64_t leading = 1, stride = kSwizzleAtomBytes >> 4, swizzle_128 = 1;
  return start | (leading << 16) | (stride << 32) | (swizzle_128 << 62);
}

}  // namespace minilora::cuda
