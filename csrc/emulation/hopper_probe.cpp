// Entry points that run the emulator's TMA box copy and wgmma product (hopper.h) on memory given
// from Python, for tests/test_emulated_hopper.py, which lays out tiles and reads results with the
// PTX ISA's formulas written out there, apart from tma.cpp, wgmma.cpp and hopper.cuh. Called through
// ctypes (minilora/kernels/emulated.py).
#include <cstdio>
#include <cstring>

#include "cuda.h"
#include "emulation.h"
#include "hopper.h"

namespace emu = minilora::emulation;

// The box of `box0` x `box1` elements at column x, row y of a rows x cols tensor of `element_bytes`
// values (`row_stride` bytes between rows), encoded as the wgmma rung encodes its maps (128-byte
// swizzle when swizzle_128), copied into `shared` as the emulated cp.async.bulk.tensor lands it.
// 0 on success; 1 when cuTensorMapEncodeTiled refuses the map (its CUresult in *result); 2 when
// `shared` is not 128-byte aligned.
MINILORA_EXPORT int minilora_emulated_tma_box(const void* global, int element_bytes, uint64_t cols,
                                              uint64_t rows, uint64_t row_stride, uint32_t box0,
                                              uint32_t box1, int swizzle_128, int x, int y,
                                              void* shared, int* result) {
  const cuuint64_t dims[2] = {cols, rows};
  const cuuint64_t strides[1] = {row_stride};
  const cuuint32_t box[2] = {box0, box1};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUtensorMapDataType type =
      element_bytes == 4 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  CUtensorMap map;
  *result = cuTensorMapEncodeTiled(
      &map, type, 2, const_cast<void*>(global), dims, strides, box, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE,
      swizzle_128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
      CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (*result != CUDA_SUCCESS) return 1;
  emu::TensorMap2d emulated;
  std::memcpy(&emulated, &map, sizeof emulated);
  return emu::land_tma_box(shared, emulated, x, y) ? 0 : 2;
}

// One wgmma m64nNk16 (bf16 operands, fp32 accumulators) read through the descriptors from the
// `window_bytes` of shared memory at `window` (descriptor addresses are offsets into it):
// d (128 x n / 2, thread by thread) += A·B. 0 on success; 2 with what is wrong in `message`.
MINILORA_EXPORT int minilora_emulated_wgmma(const unsigned char* window, size_t window_bytes,
                                            uint64_t descriptor_a, uint64_t descriptor_b, int n,
                                            float* d, char* message, size_t message_bytes) {
  float* rows[128];
  for (int t = 0; t < 128; ++t) rows[t] = d + int64_t(t) * (n / 2);
  const char* error = emu::multiply_wgmma(window, window_bytes, descriptor_a, descriptor_b, n, rows);
  if (!*error) return 0;
  std::snprintf(message, message_bytes, "%s", error);
  return 2;
}
