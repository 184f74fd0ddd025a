// The emulator's runtime: how a launch runs on the CPU.
//
// A launch runs its blocks one after another (in index order, or shuffled). Within a block, each
// CUDA thread is a fiber, a function with its own small stack that the scheduler can suspend and
// resume (ucontext). The scheduler resumes every thread of the block in turn (in index order, or
// shuffled); a thread runs until it reaches __syncthreads(), where it hands control back, or until
// it returns. When every thread waits at the barrier, the round is over and the next one begins;
// when every thread has returned, the block is done. Some threads returning while others wait at a
// barrier is a bug (barrier divergence) and fails the launch. Before each block, every __shared__
// array is filled with NaN, so a thread that reads shared memory no thread of its block wrote sees
// NaN, and so does the output it feeds.
//
// Because threads only switch at barriers, any value a thread reads that another thread writes
// between the same two barriers depends on the order: shuffling the order turns such a race into a
// result that differs between two runs. Races finer than that are the ThreadSanitizer build's job
// (MINILORA_EMULATION_THREADS: one OS thread per CUDA thread, the barrier a mutex and condition).
#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cuda_runtime.h"
#include "emulation.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define MINILORA_ASAN 1
#else
#define MINILORA_ASAN 0
#endif

#ifndef MINILORA_EMULATION_STACK_KIB
#define MINILORA_EMULATION_STACK_KIB 64  // a kernel's locals are a few hundred bytes
#endif

// The dynamic linker's lookup of a module's thread-local block (the x86-64 and AArch64 ABIs).
struct TlsIndex {
  unsigned long module, offset;
};
extern "C" void* __tls_get_addr(TlsIndex* index);

MINILORA_PER_CUDA_THREAD uint3 threadIdx;
MINILORA_PER_CUDA_THREAD uint3 blockIdx;
MINILORA_PER_CUDA_THREAD dim3 blockDim;
MINILORA_PER_CUDA_THREAD dim3 gridDim;

namespace minilora::emulation {
namespace {

// ---- errors, as the CUDA runtime reports them ---------------------------------------------------
cudaError_t last_error = cudaSuccess;
std::string last_message;
int64_t launch_count = 0;

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

// ---- the schedule -------------------------------------------------------------------------------
bool shuffle = false;
std::mt19937_64 random_order;

template <typename Items>
void maybe_shuffle(Items& items) {
  if (shuffle) std::shuffle(items.begin(), items.end(), random_order);
}

uint3 unravel(int64_t i, dim3 extent) {
  return {unsigned(i % extent.x), unsigned(i / extent.x % extent.y),
          unsigned(i / (int64_t(extent.x) * extent.y))};
}

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

// ---- what a block needs to know -----------------------------------------------------------------
struct Body {
  void (*run)(void*);
  void* context;
};

int64_t linear(uint3 index, dim3 extent) {
  return index.x + int64_t(extent.x) * (index.y + int64_t(extent.y) * index.z);
}

#if !MINILORA_EMULATION_THREADS
// ---- fibers ---------------------------------------------------------------------------------------
constexpr size_t kStackBytes = size_t(MINILORA_EMULATION_STACK_KIB) * 1024;

// The __shared__ arrays are `static thread_local` (cuda_runtime.h), so they are exactly this
// library's block of thread-local storage. Filling it with 0xff bytes makes every float and double
// in it a NaN.
void poison_shared_memory() {
  static unsigned char* data = nullptr;
  static size_t bytes = 0;
  static bool found = false;
  if (!found) {
    found = true;
    Dl_info self;
    if (dladdr(reinterpret_cast<void*>(&poison_shared_memory), &self) == 0) return;
    struct Search {
      const void* base;
      size_t module = 0, bytes = 0, file_bytes = 0;
    } search{self.dli_fbase};
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* s) {
          auto& search = *static_cast<Search*>(s);
          if (reinterpret_cast<const void*>(info->dlpi_addr) != search.base) return 0;
          for (int i = 0; i < info->dlpi_phnum; ++i) {
            if (info->dlpi_phdr[i].p_type == PT_TLS) {
              search.module = info->dlpi_tls_modid;
              search.bytes = info->dlpi_phdr[i].p_memsz;
              search.file_bytes = info->dlpi_phdr[i].p_filesz;
            }
          }
          return 1;
        },
        &search);
    if (search.file_bytes != 0) {
      std::fprintf(stderr, "minilora emulator: the kernel sources declare an initialised "
                           "thread_local; the emulator keeps __shared__ arrays there\n");
      std::abort();
    }
    if (search.module == 0) return;  // no kernel has shared memory
    TlsIndex index{search.module, 0};
    data = static_cast<unsigned char*>(__tls_get_addr(&index));  // allocated here if need be
    bytes = search.bytes;
  }
  if (data) std::memset(data, 0xff, bytes);
}

struct Fiber {
  enum class State { Ready, AtBarrier, Done };
  ucontext_t context;
  unsigned char* stack = nullptr;  // kStackBytes, with an inaccessible page below it
  uint3 index;
  State state = State::Ready;
};

std::vector<Fiber> fibers;
Fiber* current = nullptr;
const Body* block_body = nullptr;
ucontext_t scheduler;
#if MINILORA_ASAN
const void* scheduler_stack = nullptr;
size_t scheduler_stack_bytes = 0;
#endif

unsigned char* new_stack() {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  void* memory = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    std::perror("minilora emulator: mmap of a fiber stack");
    std::abort();
  }
  mprotect(memory, page, PROT_NONE);  // a stack overflow faults instead of corrupting memory
  unsigned char* stack = static_cast<unsigned char*>(memory) + page;
  std::memset(stack, 0xff, kStackBytes);  // an uninitialised local starts as NaN
  return stack;
}

// Control goes to the scheduler: at a barrier, or (finished = true) for the last time.
void switch_to_scheduler(bool finished) {
#if MINILORA_ASAN
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(finished ? nullptr : &fake_stack, scheduler_stack,
                                 scheduler_stack_bytes);
#else
  (void)finished;
#endif
  swapcontext(&current->context, &scheduler);
#if MINILORA_ASAN
  __sanitizer_finish_switch_fiber(fake_stack, &scheduler_stack, &scheduler_stack_bytes);
#endif
}

void fiber_main() {
#if MINILORA_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &scheduler_stack, &scheduler_stack_bytes);
#endif
  block_body->run(block_body->context);
  current->state = Fiber::State::Done;
  switch_to_scheduler(true);  // never resumed: the next block makes a fresh context
}

// A fresh context that runs the kernel from its first line (getcontext only fills in the fields
// makecontext needs; it never returns a second time here).
void start_fiber(Fiber& fiber, uint3 index) {
  if (!fiber.stack) fiber.stack = new_stack();
  fiber.index = index;
  fiber.state = Fiber::State::Ready;
  getcontext(&fiber.context);
  fiber.context.uc_stack.ss_sp = fiber.stack;
  fiber.context.uc_stack.ss_size = kStackBytes;
  fiber.context.uc_link = nullptr;
  makecontext(&fiber.context, fiber_main, 0);
}

void resume(Fiber& fiber) {
  current = &fiber;
  threadIdx = fiber.index;
  fiber.state = Fiber::State::Ready;
#if MINILORA_ASAN
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, fiber.stack, kStackBytes);
#endif
  swapcontext(&scheduler, &fiber.context);
#if MINILORA_ASAN
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
  current = nullptr;
}

// ---- the trace of who writes what -----------------------------------------------------------------
struct Trace {
  unsigned char* buffer = nullptr;
  int64_t elements = 0, element_bytes = 0;
  int32_t *blocks = nullptr, *threads = nullptr;
  std::vector<unsigned char> seen;  // the buffer as it was after the last thread ran

  void record(int64_t block, int64_t thread) {
    if (!buffer || std::memcmp(buffer, seen.data(), seen.size()) == 0) return;
    for (int64_t i = 0; i < elements; ++i) {
      unsigned char* now = buffer + i * element_bytes;
      unsigned char* before = seen.data() + i * element_bytes;
      if (std::memcmp(now, before, size_t(element_bytes)) != 0) {
        blocks[i] = int32_t(block);
        threads[i] = int32_t(thread);
        std::memcpy(before, now, size_t(element_bytes));
      }
    }
  }
} trace;

bool run_block(dim3 block, uint3 block_index, const Body& body) {
  blockIdx = block_index;
  poison_shared_memory();
  const int threads = int(uint64_t(block.x) * block.y * block.z);
  if (fibers.size() < size_t(threads)) fibers.resize(size_t(threads));
  block_body = &body;
  std::vector<int> order(static_cast<size_t>(threads));
  std::iota(order.begin(), order.end(), 0);
  for (int t = 0; t < threads; ++t) start_fiber(fibers[size_t(t)], unravel(t, block));
  const int64_t block_number = linear(block_index, gridDim);
  for (;;) {
    maybe_shuffle(order);
    for (int t : order) {
      resume(fibers[size_t(t)]);
      trace.record(block_number, t);
    }
    int done = 0;
    for (int t = 0; t < threads; ++t) done += fibers[size_t(t)].state == Fiber::State::Done;
    if (done == threads) return true;
    if (done > 0) {
      fail(cudaErrorLaunchFailure,
           "barrier divergence in block " + str(block_index) + ": " + std::to_string(done) +
               " of " + std::to_string(threads) +
               " threads returned while the others wait at __syncthreads()");
      return false;
    }
  }
}

bool run_blocks(dim3 grid, dim3 block, const std::vector<int64_t>& order, const Body& body) {
  for (int64_t b : order) {
    if (!run_block(block, unravel(b, grid), body)) return false;
  }
  return true;
}

#else
// ---- OS threads (the ThreadSanitizer build) ---------------------------------------------------------
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

// One OS thread per CUDA thread of a block, made once per launch: each runs its thread of every
// block in `order`, and all of them meet between two blocks.
bool run_blocks(dim3 grid, dim3 block, const std::vector<int64_t>& order, const Body& body) {
  const int threads = int(uint64_t(block.x) * block.y * block.z);
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
#endif

}  // namespace

void run_grid(dim3 grid, dim3 block, const void*, void (*run)(void*), void* context) {
  if (!check_configuration(grid, block)) return;
  ++launch_count;
  gridDim = grid;
  blockDim = block;
  const Body body{run, context};
  std::vector<int64_t> order(size_t(grid.x) * grid.y * grid.z);
  std::iota(order.begin(), order.end(), 0);
  maybe_shuffle(order);
  run_blocks(grid, block, order, body);
}

}  // namespace minilora::emulation

namespace emu = minilora::emulation;

void __syncthreads() {
#if MINILORA_EMULATION_THREADS
  emu::block_barrier->arrive_and_wait();
#else
  if (!emu::current) {
    std::fprintf(stderr, "minilora emulator: __syncthreads() called outside a kernel\n");
    std::abort();
  }
  emu::current->state = emu::Fiber::State::AtBarrier;
  emu::switch_to_scheduler(false);
#endif
}

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

int minilora_emulation_trace(void* buffer, int64_t elements, int64_t element_bytes,
                             int32_t* blocks, int32_t* threads) {
#if MINILORA_EMULATION_THREADS
  (void)buffer, (void)elements, (void)element_bytes, (void)blocks, (void)threads;
  return 0;
#else
  emu::trace.buffer = static_cast<unsigned char*>(buffer);
  emu::trace.elements = elements;
  emu::trace.element_bytes = element_bytes;
  emu::trace.blocks = blocks;
  emu::trace.threads = threads;
  emu::trace.seen.assign(emu::trace.buffer, emu::trace.buffer + (buffer ? elements * element_bytes : 0));
  return 1;
#endif
}

int64_t minilora_emulation_launches() { return emu::launch_count; }

int minilora_emulation_os_threads() { return MINILORA_EMULATION_THREADS ? 1 : 0; }
