// The emulator's runtime: what every launch does, whichever way its threads run (fibers.cpp, or
// os_threads.cpp for ThreadSanitizer), and the bits of the CUDA runtime API the host code calls.
//
// A launch is checked against CUDA's limits on grid and block sizes, then runs its blocks one after
// another, in index order or shuffled (minilora_emulation_schedule). Errors are kept as CUDA keeps
// them: the first one, until cudaGetLastError reads it.
#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda_runtime.h"
#include "emulation.h"
#include "hopper.h"
#include "scheduler.h"

MINILORA_PER_CUDA_THREAD uint3 threadIdx;
MINILORA_PER_CUDA_THREAD uint3 blockIdx;
MINILORA_PER_CUDA_THREAD dim3 blockDim;
MINILORA_PER_CUDA_THREAD dim3 gridDim;

namespace minilora::emulation {
namespace {

cudaError_t last_error = cudaSuccess;
std::string last_message;
int64_t launch_count = 0;
bool shuffle = false;
std::mt19937_64 random_order;

// The limits of every CUDA GPU since compute capability 3.0; anything else fails to launch.
bool check_configuration(dim3 grid, dim3 block) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  const bool ok = threads >= 1 && threads <= 1024 && block.x <= 1024 && block.y <= 1024 &&
                  block.z <= 64 && grid.x >= 1 && grid.y >= 1 && grid.z >= 1 &&
                  grid.x <= 2147483647u && grid.y <= 65535 && grid.z <= 65535;
  if (!ok) {
    fail(cudaErrorInvalidConfiguration,
         "grid " + str(grid) + " with blocks " + str(block) +
             " is outside CUDA's limits (at most 1024 threads a block, 1024 x 1024 x 64; a grid "
             "at most 2^31 - 1 x 65535 x 65535)");
  }
  return ok;
}

// Dynamic shared memory: 48 KiB a block unless the kernel's attribute allows more, and at most what
// an H100 gives one block.
constexpr int kDefaultDynamicShared = 48 * 1024;
constexpr int kMaxDynamicShared = 227 * 1024;
std::map<const void*, int> max_dynamic_shared;

bool check_shared_bytes(const void* kernel, size_t bytes) {
  const auto found = max_dynamic_shared.find(kernel);
  const int allowed = found == max_dynamic_shared.end() ? kDefaultDynamicShared : found->second;
  if (bytes <= size_t(allowed)) return true;
  fail(cudaErrorInvalidValue,
       "a launch asks for " + std::to_string(bytes) + " bytes of dynamic shared memory, the "
       "kernel is allowed " + std::to_string(allowed) + " (cudaFuncSetAttribute with "
       "cudaFuncAttributeMaxDynamicSharedMemorySize raises it, to at most " +
       std::to_string(kMaxDynamicShared) + ")");
  return false;
}

}  // namespace

cudaError_t set_max_dynamic_shared_bytes(const void* kernel, int bytes) {
  if (bytes < 0 || bytes > kMaxDynamicShared) return cudaErrorInvalidValue;
  max_dynamic_shared[kernel] = bytes;
  return cudaSuccess;
}

void fail(cudaError_t error, const std::string& message) {
  if (last_error == cudaSuccess) {  // the first error is the one worth reading
    last_error = error;
    last_message = message;
  }
}

std::string str(uint3 v) {
  return "(" + std::to_string(v.x) + ", " + std::to_string(v.y) + ", " + std::to_string(v.z) + ")";
}
std::string str(dim3 v) { return str(uint3{v.x, v.y, v.z}); }

uint3 unravel(int64_t i, dim3 extent) {
  return {unsigned(i % extent.x), unsigned(i / extent.x % extent.y),
          unsigned(i / (int64_t(extent.x) * extent.y))};
}

int64_t linear(uint3 index, dim3 extent) {
  return index.x + int64_t(extent.x) * (index.y + int64_t(extent.y) * index.z);
}

bool shuffled() { return shuffle; }
std::mt19937_64& order_random() { return random_order; }

void run_grid(dim3 grid, dim3 block, const void* kernel, void (*run)(void*), void* context,
              size_t shared_bytes) {
  if (!check_configuration(grid, block) || !check_shared_bytes(kernel, shared_bytes)) return;
  set_dynamic_shared_bytes(shared_bytes);
  ++launch_count;
  gridDim = grid;
  blockDim = block;
  std::vector<int64_t> order(size_t(grid.x) * grid.y * grid.z);
  std::iota(order.begin(), order.end(), 0);
  maybe_shuffle(order);
  run_blocks(grid, block, order, Body{run, context});
}

}  // namespace minilora::emulation

namespace emu = minilora::emulation;

void __syncthreads() { emu::sync_threads(); }

cudaError_t cudaGetLastError() {
  const cudaError_t error = emu::last_error;
  emu::last_error = cudaSuccess;
  return error;
}

cudaError_t cudaPeekAtLastError() { return emu::last_error; }

cudaError_t cudaStreamSynchronize(cudaStream_t) { return emu::last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : emu::last_message.c_str();
}

void minilora_emulation_schedule(int shuffle, uint64_t seed) {
  emu::shuffle = shuffle != 0;
  emu::random_order.seed(seed);
}

int64_t minilora_emulation_launches() { return emu::launch_count; }

int minilora_emulation_os_threads() { return MINILORA_EMULATION_THREADS ? 1 : 0; }
