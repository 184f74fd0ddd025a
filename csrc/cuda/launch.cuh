// MINILORA_LAUNCH(grid, block, stream, kernel)(arguments...): the one way csrc/cuda launches a kernel
// (MINILORA_LAUNCH_WITH_SHARED(grid, block, bytes, stream, kernel) with dynamic shared memory).
//
// With nvcc it is `kernel<<<grid, block, 0, stream>>>(arguments...)`. The CPU emulator
// (csrc/emulation/cuda_runtime.h, which g++ finds in place of the real <cuda_runtime.h>) defines it
// as a call that runs every thread of every block on the CPU, so the same kernel sources build for
// both. `kernel` is named with its template arguments (`tiled_matmul_kernel<T, LC, RC>`): the
// emulator needs the function's exact type, where `<<<>>>` deduces it from the arguments.
#pragma once

#include <cuda_runtime.h>

#ifndef MINILORA_LAUNCH
#define MINILORA_LAUNCH_WITH_SHARED(grid, block, shared_bytes, stream, ...) \
  __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#define MINILORA_LAUNCH(grid, block, stream, ...) \
  MINILORA_LAUNCH_WITH_SHARED(grid, block, 0, stream, __VA_ARGS__)
#endif
