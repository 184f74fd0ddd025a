// The emulator's cp.async (emulated_async_copy.h): every CUDA thread keeps the copies it started
// and has not waited for, in groups, and makes them only when it waits.
//
// The copies a thread leaves unwaited when its block ends are dropped (their shared memory belongs
// to the block that ended); a thread of the next block, or of the next launch, starts with none.
#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "emulated_async_copy.h"
#include "emulation.h"
#include "scheduler.h"

namespace minilora::emulation {
namespace {

struct Copy {
  void* shared;
  const void* global;
  int bytes;
};

struct Pending {
  int64_t launch = -1, block = -1;      // whose copies these are
  std::vector<Copy> open;               // started since the last commit
  std::deque<std::vector<Copy>> groups; // committed, oldest first
};

// The calling CUDA thread's copies. With fibers every CUDA thread runs on one OS thread, and the
// library's thread-local storage is the block's shared memory (poisoned before every block), so
// the copies are kept by thread index; with OS threads each CUDA thread has its own.
Pending& pending_of_this_thread() {
#if MINILORA_EMULATION_THREADS
  static thread_local Pending mine;
  Pending& pending = mine;
#else
  static std::vector<Pending> by_thread;
  const size_t index = size_t(linear(threadIdx, blockDim));
  if (by_thread.size() <= index) by_thread.resize(index + 1);
  Pending& pending = by_thread[index];
#endif
  const int64_t launch = minilora_emulation_launches();
  const int64_t block = linear(blockIdx, gridDim);
  if (pending.launch != launch || pending.block != block) {
    pending = Pending{};
    pending.launch = launch;
    pending.block = block;
  }
  return pending;
}

}  // namespace
}  // namespace minilora::emulation

namespace emu = minilora::emulation;

void minilora::cuda::emulated_async_copy(void* shared, const void* global, int bytes) {
  const auto misaligned = [bytes](const void* p) { return reinterpret_cast<uintptr_t>(p) % bytes; };
  if (misaligned(shared) || misaligned(global)) {
    emu::fail(cudaErrorLaunchFailure,
              "cp.async of " + std::to_string(bytes) + " bytes from a misaligned address in block " +
                  emu::str(blockIdx) + ", thread " + emu::str(threadIdx) +
                  " (both addresses must be multiples of the copy's size)");
    return;
  }
  emu::pending_of_this_thread().open.push_back({shared, global, bytes});
}

void minilora::cuda::async_copy_commit() {
  emu::Pending& pending = emu::pending_of_this_thread();
  pending.groups.push_back(std::move(pending.open));
  pending.open.clear();
}

void minilora::cuda::emulated_async_copy_wait(int keep) {
  emu::Pending& pending = emu::pending_of_this_thread();
  while (int(pending.groups.size()) > keep) {
    for (const emu::Copy& copy : pending.groups.front()) {
      std::memcpy(copy.shared, copy.global, size_t(copy.bytes));
    }
    pending.groups.pop_front();
  }
}
