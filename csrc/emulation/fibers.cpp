// One fiber per CUDA thread, all on the calling OS thread: the default build, and the ASan one.
//
// The scheduler resumes every thread of a block in turn (in index order, or shuffled); a thread
// runs until it reaches __syncthreads(), where it hands control back, or until it returns. When
// every thread waits at the barrier, the round is over and the next one begins; when every thread
// has returned, the block is done. Some threads returning while others wait at a barrier is barrier
// divergence, and fails the launch. Before each block, every __shared__ array is filled with NaN, so
// a thread that reads shared memory no thread of its block wrote sees NaN, and so does the output.
//
// Threads only switch at barriers, so a value a thread reads that another writes between the same
// two barriers depends on the order: shuffling turns such a race into results that differ between
// two runs. Races finer than that are the ThreadSanitizer build's job (os_threads.cpp).
#if !MINILORA_EMULATION_THREADS

#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

#include "emulation.h"
#include "scheduler.h"
#include "warp.h"

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

namespace minilora::emulation {
namespace {

constexpr size_t kStackBytes = size_t(MINILORA_EMULATION_STACK_KIB) * 1024;
constexpr int kWarpSize = 32;  // threads 32·w .. 32·w + 31 of a block are warp w

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
  enum class State { Ready, AtBarrier, AtWarp, Done };  // AtWarp: in a warp collective (warp.h)
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
  reset_warps();
  for (;;) {
    maybe_shuffle(order);
    for (int t : order) {
      resume(fibers[size_t(t)]);
      trace.record(block_number, t);
    }
    // Lanes waiting at a warp collective (mma.sync, a wgmma step, an mbarrier: warp.h, hopper.h)
    // run again, pass after pass, until each reaches a barrier or returns. The lowest warps go
    // first and as far as they can: a pass resumes the waiting lanes of the first `warps` warps
    // that have any, and `warps` doubles when such a pass moves nothing (a wgmma needs the 4 warps
    // of its warpgroup). So a warp or warpgroup runs ahead of the others, as it may on a GPU, and a
    // kernel that acts on another warpgroup's work without a barrier between sees it unfinished.
    // A pass over every waiting lane in which no collective completes and no lane gets past one
    // means that some lanes wait for others that are elsewhere (returned, or at __syncthreads()):
    // they would wait for ever.
    for (int warps = 1;;) {
      std::vector<int> waiting, now;
      for (int t = 0; t < threads; ++t) {
        if (fibers[size_t(t)].state == Fiber::State::AtWarp) waiting.push_back(t);
      }
      if (waiting.empty()) break;
      const int first = waiting.front() / kWarpSize;
      for (int t : waiting) {
        if (t / kWarpSize < first + warps) now.push_back(t);
      }
      const uint64_t completed = collectives_completed();
      maybe_shuffle(now);
      for (int t : now) {
        resume(fibers[size_t(t)]);
        trace.record(block_number, t);
      }
      size_t still_waiting = 0;
      for (int t : now) still_waiting += fibers[size_t(t)].state == Fiber::State::AtWarp;
      if (collectives_completed() != completed || still_waiting < now.size()) continue;
      if (now.size() < waiting.size()) {
        warps *= 2;
        continue;
      }
      const int warp = incomplete_warp();
      fail(cudaErrorLaunchFailure,
           warp >= 0 ? "warp divergence in block " + str(block_index) + ": lanes of warp " +
                           std::to_string(warp) + " wait at mma.sync while others of the "
                           "warp returned or wait at __syncthreads()"
                     : "deadlock in block " + str(block_index) + ": " +
                           std::to_string(waiting.size()) + " threads wait at a warpgroup step "
                           "(wgmma) or an mbarrier that nothing left running can complete");
      return false;
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

}  // namespace

bool run_blocks(dim3 grid, dim3 block, const std::vector<int64_t>& order, const Body& body) {
  for (int64_t b : order) {
    if (!run_block(block, unravel(b, grid), body)) return false;
  }
  return true;
}

void wait_at_warp() {
  current->state = Fiber::State::AtWarp;
  switch_to_scheduler(false);
}

void sync_threads() {
  if (!current) {
    std::fprintf(stderr, "minilora emulator: __syncthreads() called outside a kernel\n");
    std::abort();
  }
  current->state = Fiber::State::AtBarrier;
  switch_to_scheduler(false);
}

}  // namespace minilora::emulation

int minilora_emulation_trace(void* buffer, int64_t elements, int64_t element_bytes,
                             int32_t* blocks, int32_t* threads) {
  auto& trace = minilora::emulation::trace;
  trace.buffer = static_cast<unsigned char*>(buffer);
  trace.elements = elements;
  trace.element_bytes = element_bytes;
  trace.blocks = blocks;
  trace.threads = threads;
  trace.seen.assign(trace.buffer, trace.buffer + (buffer ? elements * element_bytes : 0));
  return 1;
}

#endif  // !MINILORA_EMULATION_THREADS
