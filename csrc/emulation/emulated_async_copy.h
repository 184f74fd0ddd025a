// The emulator's cp.async (in place of csrc/cuda/async_copy.cuh's inline PTX; same names, same
// contract). A copy is not made when it is started: it is remembered, in the group that the next
// commit closes, and made only when the thread that started it waits for that group
// (async_copy_wait<N> makes every committed group but the newest N, oldest first). So a kernel that
// reads the shared memory a copy fills before waiting for it reads what was there before (NaN
// poison, or the previous tile), and fails; and since a thread's wait makes only its own copies, a
// kernel that reads other threads' copies without a __syncthreads() after the wait fails too.
// Defined in async_copy.cpp.
#pragma once

namespace minilora::cuda {

void emulated_async_copy(void* shared, const void* global, int bytes);
void async_copy_commit();
void emulated_async_copy_wait(int pending);

template <int kBytes>
inline void async_copy(void* shared, const void* global) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
  emulated_async_copy(shared, global, kBytes);
}

template <int kPending>
inline void async_copy_wait() {
  emulated_async_copy_wait(kPending);
}

}  // namespace minilora::cuda
