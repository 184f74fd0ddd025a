// What the two ways of running a block share (scheduler.cpp, and fibers.cpp or os_threads.cpp,
// whichever MINILORA_EMULATION_THREADS selects; the other compiles to nothing).
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cuda_runtime.h"

namespace minilora::emulation {

// The kernel with its arguments, run once by every CUDA thread.
struct Body {
  void (*run)(void*);
  void* context;
};

// Record a failed launch (the first one is kept until cudaGetLastError reads it).
void fail(cudaError_t error, const std::string& message);

std::string str(uint3 v);
std::string str(dim3 v);

// Index i (x fastest) of an extent as (x, y, z), and back.
uint3 unravel(int64_t i, dim3 extent);
int64_t linear(uint3 index, dim3 extent);

// The order of the schedule: shuffled or in index order (minilora_emulation_schedule).
bool shuffled();
std::mt19937_64& order_random();

template <typename Items>
void maybe_shuffle(Items& items) {
  if (shuffled()) std::shuffle(items.begin(), items.end(), order_random());
}

// Run every block of the grid in `order`; false (with fail() called) if one fails.
bool run_blocks(dim3 grid, dim3 block, const std::vector<int64_t>& order, const Body& body);

// What __syncthreads() does.
void sync_threads();

}  // namespace minilora::emulation
