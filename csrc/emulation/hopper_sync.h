// What the emulator's sm_90 instructions (tma.cpp, wgmma.cpp) share: one lock over all their
// state in the OS-thread build (ThreadSanitizer), and the way a thread waits. With fibers every CUDA
// thread runs on the calling OS thread and switches only where it waits, so no lock is needed; a
// waiting fiber goes back to the scheduler, which resumes it pass after pass and reports a pass in
// which nothing moves as divergence. An OS thread sleeps on a condition variable and fails the
// launch after 10 s, as for mma.sync.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

#include "cuda_runtime.h"
#include "scheduler.h"
#include "warp.h"

namespace minilora::emulation::sm90 {

#if MINILORA_EMULATION_THREADS
inline std::mutex mutex;
inline std::condition_variable changed;
using Lock = std::unique_lock<std::mutex>;
inline Lock hold() { return Lock(mutex); }
#else
struct Lock {};
inline Lock hold() { return {}; }
#endif

inline std::string where() {
  return "block " + str(blockIdx) + ", thread " + str(threadIdx);
}

// Wait for `ready` (called with the lock held).
template <typename Ready>
void wait_until(Lock& lock, Ready ready, const std::string& what) {
#if MINILORA_EMULATION_THREADS
  if (!changed.wait_for(lock, std::chrono::seconds(10), ready)) {
    fail(cudaErrorLaunchFailure, what + " in " + where() + ": waited 10 s for threads that never came");
  }
#else
  (void)lock;
  (void)what;
  while (!ready()) wait_at_warp();
#endif
}

// Threads waiting in wait_until look again (an arrival, a copy started, a step completed).
inline void wake_waiters() {
#if MINILORA_EMULATION_THREADS
  changed.notify_all();
#endif
}

// A step completed: the fiber scheduler counts it as progress.
inline void made_progress() {
  count_completed_collective();
  wake_waiters();
}

}  // namespace minilora::emulation::sm90
