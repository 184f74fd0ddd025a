// The emulator's controls, called from Python through ctypes (minilora/kernels/emulated.py) next to
// the entry points of runner.cpp. Defined in scheduler.cpp.
#pragma once

#include <cstdint>

#define MINILORA_EXPORT extern "C" __attribute__((visibility("default")))

// The order the CUDA threads and blocks run in. shuffle = 0: blocks in index order, and the threads
// of a block in index order between two barriers. shuffle = 1: blocks in a random order, and the
// threads in a new random order after every barrier, drawn from `seed`.
MINILORA_EXPORT void minilora_emulation_schedule(int shuffle, uint64_t seed);

// Record which thread writes each element of `buffer` (elements × element_bytes bytes): after every
// stretch a thread runs between barriers, every element whose bytes changed gets that thread's
// block and thread (linear indices, x fastest) in blocks[i] and threads[i]. buffer = nullptr stops.
// Fibers only (0 is returned by the OS-thread build, which cannot attribute a write to a thread).
MINILORA_EXPORT int minilora_emulation_trace(void* buffer, int64_t elements, int64_t element_bytes,
                                             int32_t* blocks, int32_t* threads);

// Kernels launched since the library was loaded (a refused launch does not count).
MINILORA_EXPORT int64_t minilora_emulation_launches();

// 1 when every CUDA thread is an OS thread (the ThreadSanitizer build), 0 for fibers.
MINILORA_EXPORT int minilora_emulation_os_threads();
