// A stand-in for <cuda_runtime.h> that lets g++ compile the unchanged kernel sources of csrc/cuda/
// into an ordinary CPU library, the emulator (README.md in this folder). minilora/kernels/emulated.py
// builds it with `-I csrc/emulation`, so `#include <cuda_runtime.h>` finds this file.
//
// What each CUDA feature the kernels use becomes:
//   __global__, __device__, __host__, __launch_bounds__   nothing (every function is host code)
//   __forceinline__, __align__(n)                          inline, __attribute__((aligned(n)))
//   threadIdx, blockIdx, blockDim, gridDim                 variables the scheduler sets before it
//                                                          resumes a CUDA thread (scheduler.cpp)
//   __shared__                                             storage that every thread of the running
//                                                          block sees, poisoned with NaN per block
//   __syncthreads()                                        a barrier: the thread waits until every
//                                                          thread of its block has reached one
//   kernel<<<grid, block, 0, stream>>>(args)               MINILORA_LAUNCH(grid, block, stream,
//                                                          kernel)(args): every block, every thread
//   kernel<<<grid, block, bytes, stream>>>(args)           MINILORA_LAUNCH_WITH_SHARED(...): the
//                                                          same with dynamic shared memory (hopper.h)
//   __grid_constant__                                      nothing (a parameter is a copy anyway)
//   float4, double2, min, max, atomicAdd                   plain C++ equivalents
//   cudaGetLastError & co.                                 the emulator's own error state
//   mma.sync, cvt to TF32 / bf16 (csrc/cuda/mma.cuh)       warp collectives (warp.h)
//   TMA, mbarrier, wgmma (csrc/cuda/hopper.cuh)            hopper.h, and a device of compute
//                                                          capability 9.0 that has them all
//   cuTensorMapEncodeTiled (through the driver entry       a CUtensorMap that holds its arguments
//   point, cuda.h in this folder)                          (hopper.h)
#pragma once

#include <cstddef>
#include <cstdint>
#include <tuple>
#include <utility>

#define MINILORA_EMULATION 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__

// One OS thread per CUDA thread (the ThreadSanitizer build) or one fiber per CUDA thread, all on the
// calling OS thread (every other build). With fibers, the thread-local storage of the emulator's
// library holds exactly the kernels' __shared__ arrays, so the scheduler can poison all of it at once
// before each block; that is why the index variables are plain globals there (one OS thread runs
// every fiber, and the scheduler sets them before it resumes one). With OS threads the roles swap.
#ifndef MINILORA_EMULATION_THREADS
#define MINILORA_EMULATION_THREADS 0
#endif
#if MINILORA_EMULATION_THREADS
#define __shared__ static
#define MINILORA_PER_CUDA_THREAD thread_local
#else
#define __shared__ static thread_local
#define MINILORA_PER_CUDA_THREAD
#endif

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x = 1, unsigned y = 1, unsigned z = 1) : x(x), y(y), z(z) {}
};

struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) double2 {
  double x, y;
};

extern MINILORA_PER_CUDA_THREAD uint3 threadIdx;
extern MINILORA_PER_CUDA_THREAD uint3 blockIdx;
extern MINILORA_PER_CUDA_THREAD dim3 blockDim;
extern MINILORA_PER_CUDA_THREAD dim3 gridDim;

void __syncthreads();

inline int min(int a, int b) { return b < a ? b : a; }
inline int max(int a, int b) { return a < b ? b : a; }
inline int64_t min(int64_t a, int64_t b) { return b < a ? b : a; }
inline int64_t max(int64_t a, int64_t b) { return a < b ? b : a; }
inline unsigned min(unsigned a, unsigned b) { return b < a ? b : a; }
inline unsigned max(unsigned a, unsigned b) { return a < b ? b : a; }

// atomicAdd returns the old value, like CUDA's. A compare-and-swap loop, so it is atomic with OS
// threads too (fibers never interrupt each other between barriers anyway).
template <typename T>
T atomicAdd(T* address, T value) {
  T old;
  __atomic_load(address, &old, __ATOMIC_RELAXED);
  T sum = old + value;
  while (!__atomic_compare_exchange(address, &old, &sum, false, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
    sum = old + value;
  }
  return old;
}

// ---- the runtime API the host code calls --------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};
using cudaStream_t = struct CUstream_st*;

cudaError_t cudaGetLastError();  // the last error, which it clears
cudaError_t cudaPeekAtLastError();
cudaError_t cudaStreamSynchronize(cudaStream_t stream);  // launches run to the end: the last error
const char* cudaGetErrorName(cudaError_t error);
const char* cudaGetErrorString(cudaError_t error);  // what went wrong, with block and thread
enum cudaDeviceAttr { cudaDevAttrComputeCapabilityMajor = 75, cudaDevAttrComputeCapabilityMinor = 76 };
cudaError_t cudaGetDevice(int* device);  // device 0, compute capability 8.0 (warp.cpp)
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device);

// Dynamic shared memory past 48 KiB needs the kernel's attribute raised first, as on a GPU.
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
namespace minilora::emulation {
cudaError_t set_max_dynamic_shared_bytes(const void* kernel, int bytes);  // scheduler.cpp
}
template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel* kernel, cudaFuncAttribute, int value) {
  return minilora::emulation::set_max_dynamic_shared_bytes(reinterpret_cast<const void*>(kernel),
                                                           value);
}

// The driver's functions the host code asks the runtime for: cuTensorMapEncodeTiled (cuda.h).
enum cudaDriverEntryPointQueryResult {
  cudaDriverEntryPointSuccess = 0,
  cudaDriverEntryPointSymbolNotFound = 1,
};
constexpr unsigned long long cudaEnableDefault = 0;
cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** function,
                                             unsigned int version, unsigned long long flags,
                                             cudaDriverEntryPointQueryResult* status);

// ---- launches -----------------------------------------------------------------------------------
namespace minilora::emulation {

// Run `body` once for every thread of every block of the grid (scheduler.cpp), with
// `shared_bytes` of dynamic shared memory. `kernel` identifies the kernel (its attributes, and in
// messages).
void run_grid(dim3 grid, dim3 block, const void* kernel, void (*body)(void*), void* context,
              size_t shared_bytes);

template <typename... Params>
class Launch {
 public:
  Launch(dim3 grid, dim3 block, size_t shared_bytes, void (*kernel)(Params...))
      : grid_(grid), block_(block), shared_bytes_(shared_bytes), kernel_(kernel) {}

  // The arguments are converted to the kernel's parameter types once, as a launch copies them, and
  // every thread receives its own copy, as every CUDA thread does.
  template <typename... Args>
  void operator()(Args&&... args) const {
    struct Call {
      void (*kernel)(Params...);
      std::tuple<Params...> args;
    } call{kernel_, std::tuple<Params...>(std::forward<Args>(args)...)};
    run_grid(grid_, block_, reinterpret_cast<const void*>(kernel_),
             [](void* c) {
               Call& call = *static_cast<Call*>(c);
               std::apply(call.kernel, call.args);
             },
             &call, shared_bytes_);
  }

 private:
  dim3 grid_, block_;
  size_t shared_bytes_;
  void (*kernel_)(Params...);
};

template <typename... Params>
Launch<Params...> launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t,
                         void (*kernel)(Params...)) {
  return Launch<Params...>(grid, block, shared_bytes, kernel);
}

}  // namespace minilora::emulation

#define MINILORA_LAUNCH_WITH_SHARED(grid, block, shared_bytes, stream, ...) \
  ::minilora::emulation::launch(grid, block, shared_bytes, stream, __VA_ARGS__)
#define MINILORA_LAUNCH(grid, block, stream, ...) \
  MINILORA_LAUNCH_WITH_SHARED(grid, block, 0, stream, __VA_ARGS__)
