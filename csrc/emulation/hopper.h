// The sm_90 instructions on the emulator: what csrc/cuda/hopper.cuh calls in place of PTX.
//
//   dynamic shared memory  one buffer per block (the launch's byte count), 1024-byte aligned and
//                          poisoned with NaN before every block; shared addresses (what PTX
//                          operands and wgmma descriptors hold) are offsets into it
//   mbarrier               kept beside shared memory, keyed by the barrier's address: the arrivals
//                          still expected, the transaction bytes still expected, the phases done
//   cp.async.bulk.tensor   (TMA) a 2-D box copy, remembered on its mbarrier and made as late as the
//                          PTX ISA allows: when a thread waits on that barrier's phase
//   wgmma.mma_async        a warpgroup collective (128 threads, 4 whole warps): every thread hands
//                          in the address of its accumulators; the product is remembered and made
//                          (shared memory read, accumulators written) only when wgmma.wait_group
//                          retires its group, as late as the ISA allows
//
// Defined in tma.cpp (dynamic shared memory, mbarrier, TMA) and wgmma.cpp.
#pragma once

#include <cstddef>
#include <cstdint>

namespace minilora::emulation {

// ---- dynamic shared memory and shared addresses ----------------------------------------------------
unsigned char* dynamic_shared_memory();
uint32_t shared_address(const void* pointer);  // fails the launch outside dynamic shared memory
void* shared_pointer(uint32_t address);

// For the scheduler: the launch's dynamic shared memory (bytes), and the poison before a block
// (which also forgets every mbarrier, pending copy and pending product of the block before).
void set_dynamic_shared_bytes(size_t bytes);
size_t dynamic_shared_bytes();
void start_block_of_hopper_state();

// ---- mbarrier ------------------------------------------------------------------------------------
void mbarrier_init(uint64_t* barrier, uint32_t arrivals);
// fence.mbarrier_init: the barriers initialised so far become visible to TMA, which refuses others.
void fence_barrier_init();
void mbarrier_arrive_expect_tx(uint64_t* barrier, uint32_t bytes);
void mbarrier_wait(uint64_t* barrier, uint32_t parity);

// ---- TMA: cp.async.bulk.tensor.2d, global -> shared, completing on an mbarrier -----------------------
// The emulator's CUtensorMap (csrc/emulation/cuda.h) holds what cuTensorMapEncodeTiled was given.
struct TensorMap2d {
  const unsigned char* global;
  uint64_t dims[2];      // elements: dims[0] along the contiguous index, dims[1] rows
  uint64_t row_stride;   // bytes between rows
  uint32_t box[2];       // the box copied: box[0] contiguous elements, box[1] rows
  uint32_t element_bytes;
  uint32_t swizzle_bytes;  // 0 (none) or 128
};
void tma_load_2d(void* shared, const TensorMap2d& map, int x, int y, uint64_t* barrier);

// The copy itself (tests/test_emulated_hopper.py calls it through hopper_probe.cpp): the box at
// column x, row y into `shared` (1024-byte aligned), zeros where the box leaves the tensor, the
// 16-byte pieces of every 128-byte row swizzled as SWIZZLE_128B puts them. false when `shared` is
// not aligned as TMA requires.
bool land_tma_box(void* shared, const TensorMap2d& map, int x, int y);

// ---- wgmma ---------------------------------------------------------------------------------------
// D (64 x n, fp32) += A (64 x 16, bf16) · B (16 x n, bf16), A and B in shared memory as the
// descriptors say (K-major, 128-byte swizzle); `d` is the calling thread's n / 2 accumulators.
// wgmma.fence: the calling thread's registers are settled; a thread's first wgmma in a block must
// come after one.
void wgmma_fence();
void wgmma_m64k16_bf16(float* d, int n, uint64_t descriptor_a, uint64_t descriptor_b);
void wgmma_commit_group();
void wgmma_wait_group(int pending);

// Between tma.cpp and wgmma.cpp: whether a product not yet retired reads any byte of
// [begin, end) of shared memory (offsets), and the wgmma state forgotten before a block.
bool wgmma_pending_reads(uint64_t begin, uint64_t end);
void start_block_of_wgmma_state();

// The product itself, for the probe too: every thread's accumulators d[thread][i] (128 x n / 2)
// plus A·B, A and B read through the descriptors, shared addresses being offsets from `window`
// (window_bytes long). An empty string on success, else what is wrong with a descriptor.
const char* multiply_wgmma(const unsigned char* window, size_t window_bytes, uint64_t descriptor_a,
                           uint64_t descriptor_b, int n, float* const* d);

}  // namespace minilora::emulation
