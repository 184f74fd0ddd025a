// cp.async: copies from device memory straight into shared memory that run in the background
// (compute capability 8.0 and later), behind three small device functions so that the emulator can
// put its own in their place (csrc/emulation/emulated_async_copy.h).
//
//   async_copy<kBytes>(shared, global)   start copying kBytes (4, 8 or 16) from global to shared;
//                                        both addresses aligned to kBytes
//   async_copy_commit()                  close the group of copies this thread started since the
//                                        last commit
//   async_copy_wait<kPending>()          wait until all but the newest kPending committed groups of
//                                        this thread have landed in shared memory
//
// The wait covers only the calling thread's own copies: before reading a tile that other threads
// copied, a block needs the wait *and* a __syncthreads() after it.
//
// Why: an ordinary copy goes device memory -> registers -> shared memory, so the registers that
// hold the next tile are tied up until it arrives and the thread must issue the store itself.
// cp.async needs no registers for the data, and the thread goes on multiplying while it travels.
//
// Before sm_80 (the T4's sm_75) there is no cp.async: the same calls compile to an ordinary load
// and store, done at once, and commit and wait do nothing. The kernels stay correct (the copy has
// landed by the time the wait returns), they just lose the overlap.
#pragma once

#include <cuda_runtime.h>

#ifdef MINILORA_EMULATION
#include "emulated_async_copy.h"
#else

namespace minilora::cuda {

template <int kBytes>
struct alignas(kBytes) CopyChunk {
  unsigned char bytes[kBytes];
};

template <int kBytes>
__device__ __forceinline__ void async_copy(void* shared, const void* global) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  if constexpr (kBytes == 16) {
    // .cg: 16-byte copies may skip L1 (the data is used once, from shared memory)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(address), "l"(global)
                 : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(address), "l"(global),
                 "n"(kBytes)
                 : "memory");
  }
#else
  *static_cast<CopyChunk<kBytes>*>(shared) = *static_cast<const CopyChunk<kBytes>*>(global);
#endif
}

__device__ __forceinline__ void async_copy_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int kPending>
__device__ __forceinline__ void async_copy_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

}  // namespace minilora::cuda

#endif  // MINILORA_EMULATION
