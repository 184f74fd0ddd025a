// One OS thread per CUDA thread: the ThreadSanitizer build (MINILORA_EMULATION_THREADS=1).
//
// The threads of a block really run at the same time, and __syncthreads() is a barrier made of a
// mutex and a condition variable, which TSan understands: two threads touching the same memory
// between two barriers, one of them writing, is a race TSan reports. __shared__ arrays are plain
// statics here (cuda_runtime.h), shared by all threads, and not poisoned.
#if MINILORA_EMULATION_THREADS

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "emulation.h"
#include "scheduler.h"
#include "warp.h"

namespace minilora::emulation {
namespace {

// A barrier that never deadlocks: a thread that returns while others wait, or a thread that waits
// after another returned, breaks it (barrier divergence) and releases everyone.
class Barrier {
 public:
  explicit Barrier(int threads) : threads_(threads) {}

  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (returned_ > 0) broken_ = true;
    if (broken_) {
      released_.notify_all();
      return;
    }
    const uint64_t generation = generation_;
    if (++waiting_ == threads_) {
      waiting_ = 0;
      ++generation_;
      released_.notify_all();
      return;
    }
    released_.wait(lock, [&] { return generation_ != generation || broken_; });
  }

  void thread_returned() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++returned_;
    if (waiting_ > 0) {
      broken_ = true;
      released_.notify_all();
    }
  }

  bool broken() {
    std::lock_guard<std::mutex> lock(mutex_);
    return broken_;
  }

  // Ready for the next block (every thread has returned from this one).
  void reset() {
    std::lock_guard<std::mutex> lock(mutex_);
    waiting_ = returned_ = 0;
    broken_ = false;
  }

 private:
  std::mutex mutex_;
  std::condition_variable released_;
  const int threads_;
  int waiting_ = 0, returned_ = 0;
  uint64_t generation_ = 0;
  bool broken_ = false;
};

thread_local Barrier* block_barrier = nullptr;

}  // namespace

// One OS thread per CUDA thread of a block, made once per launch: each runs its thread of every
// block in `order`, and all of them meet between two blocks.
bool run_blocks(dim3 grid, dim3 block, const std::vector<int64_t>& order, const Body& body) {
  const int threads = int(uint64_t(block.x) * block.y * block.z);
  reset_warps();
  Barrier barrier(threads), between_blocks(threads);
  bool diverged = false;
  uint3 diverged_block{};
  std::vector<std::thread> workers;
  workers.reserve(size_t(threads));
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      threadIdx = unravel(t, block);
      blockDim = block;
      gridDim = grid;
      block_barrier = &barrier;
      for (int64_t b : order) {
        blockIdx = unravel(b, grid);
        body.run(body.context);
        barrier.thread_returned();
        between_blocks.arrive_and_wait();  // the whole block has returned
        if (t == 0) {
          if (barrier.broken()) {
            diverged = true;
            diverged_block = blockIdx;
          }
          barrier.reset();
          reset_warps();  // and the next block's dynamic shared memory poisoned (hopper.h)
        }
        between_blocks.arrive_and_wait();  // thread 0's verdict and reset are seen by all
        if (diverged) return;
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  if (diverged) {
    fail(cudaErrorLaunchFailure, "barrier divergence in block " + str(diverged_block) +
                                     ": some threads returned while others wait at "
                                     "__syncthreads()");
  }
  return !diverged;
}

void sync_threads() { block_barrier->arrive_and_wait(); }

}  // namespace minilora::emulation

int minilora_emulation_trace(void*, int64_t, int64_t, int32_t*, int32_t*) {
  return 0;  // an OS thread's writes cannot be told apart from another's as they happen
}

#endif  // MINILORA_EMULATION_THREADS
