// Tensor-core instructions, each wrapped in one small device function: the warp-wide matrix
// products mma.sync (m16n8k8 on TF32, m16n8k16 on bf16, fp32 accumulators), the conversions that
// make their operands (float -> TF32, float -> bf16), and where each lane's share of a tile sits.
//
// With nvcc each function is one PTX instruction (sm_80 and newer). The CPU emulator
// (csrc/emulation/warp.cpp) implements the same functions as warp collectives: all 32 lanes of a
// warp hand in their registers, the last to arrive computes the product with the fragment layouts
// below, and each lane takes its part of D; the conversions are done bit by bit, with the rounding
// the PTX ISA names. Python tests the emulated instructions against the ISA's formulas written out
// independently (tests/test_emulated_mma.py), so a kernel that passes on the emulator lays out its
// fragments as the hardware expects.
//
// Before sm_80 (a T4 is sm_75) none of these instructions exist: the functions compile to a trap
// there, and lora_layer.cu refuses the tensor-core rungs on such a GPU before launching anything.
//
// Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k8" and "for mma.m16n8k16"): in a warp, lane
// `lane` has groupID = lane >> 2 and threadID_in_group = lane % 4, and holds a few elements of each
// matrix, at the (row, col) that the *_element functions give for its i-th element.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#if defined(MINILORA_EMULATION)
#include "warp.h"
#endif

namespace minilora::cuda {

constexpr int kWarpSize = 32;

struct FragmentElement {
  int row, col;
};

__host__ __device__ constexpr int group_of(int lane) { return lane >> 2; }
__host__ __device__ constexpr int thread_in_group(int lane) { return lane % 4; }

// ---- m16n8k8 with TF32 operands: A is 16 x 8 (4 registers), B is 8 x 8 (2 registers) -----------
__host__ __device__ constexpr FragmentElement tf32_a_element(int lane, int i) {
  return {group_of(lane) + (i % 2) * 8, thread_in_group(lane) + (i / 2) * 4};
}
__host__ __device__ constexpr FragmentElement tf32_b_element(int lane, int i) {
  return {thread_in_group(lane) + i * 4, group_of(lane)};
}

// ---- m16n8k16 with bf16 operands: A is 16 x 16 (8 values in 4 registers), B 16 x 8 (4 in 2) -----
// Two bf16 values share a 32-bit register, element 2j in its low half and 2j + 1 in its high half.
__host__ __device__ constexpr FragmentElement bf16_a_element(int lane, int i) {
  return {group_of(lane) + ((i / 2) % 2) * 8, thread_in_group(lane) * 2 + i % 2 + (i / 4) * 8};
}
__host__ __device__ constexpr FragmentElement bf16_b_element(int lane, int i) {
  return {thread_in_group(lane) * 2 + i % 2 + (i / 2) * 8, group_of(lane)};
}

// ---- the accumulators C and D of both shapes: 16 x 8 floats, 4 per lane ---------------------------
__host__ __device__ constexpr FragmentElement accumulator_element(int lane, int i) {
  return {group_of(lane) + (i / 2) * 8, thread_in_group(lane) * 2 + i % 2};
}

// ---- conversions ----------------------------------------------------------------------------------
__device__ __forceinline__ float float_from_bits(uint32_t bits) {
#if defined(MINILORA_EMULATION)
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
#else
  return __uint_as_float(bits);
#endif
}

__device__ __forceinline__ uint32_t bits_of(float value) {
#if defined(MINILORA_EMULATION)
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
#else
  return __float_as_uint(value);
#endif
}

// Each function below comes in three versions, one per kind of compilation pass: the emulator's
// (MINILORA_EMULATION), the PTX instruction (nvcc for sm_80 and newer), and a trap for everything
// else (nvcc for older GPUs, and nvcc's host pass, where the functions are never called).
//
// to_tf32(x): x rounded to TF32 (8 exponent bits, 10 mantissa bits) to nearest, ties away from zero
//   (cvt.rna.tf32.f32): a float whose low 13 mantissa bits are zero, as its bits.
// to_bf16(x): x rounded to bf16 (8 exponent bits, 7 mantissa bits) to nearest, ties to even
//   (cvt.rn.bf16.f32): the 16 bits of the bf16 value.
// mma_m16n8k8_tf32, mma_m16n8k16_bf16(d, a, b, c): d = a·b + c for one 16 x 8 tile of D, summed
//   over 8 (TF32) or 16 (bf16) inner indices; each lane passes its registers (d may be c). Every
//   lane of the warp must call it at the same point.
#if defined(MINILORA_EMULATION)

__device__ __forceinline__ uint32_t to_tf32(float x) {
  return emulation::round_to_tf32(bits_of(x));
}
__device__ __forceinline__ uint16_t to_bf16(float x) {
  return emulation::round_to_bf16(bits_of(x));
}

__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4],
                                                 const uint32_t (&b)[2], const float (&c)[4]) {
  emulation::mma_m16n8k8_tf32(d, a, b, c);
}
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4],
                                                  const uint32_t (&b)[2], const float (&c)[4]) {
  emulation::mma_m16n8k16_bf16(d, a, b, c);
}

#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800

__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t out;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(out) : "f"(x));
  return out;
}
__device__ __forceinline__ uint16_t to_bf16(float x) {
  uint16_t out;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(out) : "f"(x));
  return out;
}

// Both products take the same registers: D's 4 floats out; A's 4, B's 2 and C's 4 in.
#define MINILORA_MMA_SYNC(shape_and_types)                                                      \
  asm volatile("mma.sync.aligned." shape_and_types                                              \
               " {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"          \
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                 \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), \
                 "f"(c[1]), "f"(c[2]), "f"(c[3]))
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4],
                                                 const uint32_t (&b)[2], const float (&c)[4]) {
  MINILORA_MMA_SYNC("m16n8k8.row.col.f32.tf32.tf32.f32");
}
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4],
                                                  const uint32_t (&b)[2], const float (&c)[4]) {
  MINILORA_MMA_SYNC("m16n8k16.row.col.f32.bf16.bf16.f32");
}
#undef MINILORA_MMA_SYNC

#else

__device__ __forceinline__ uint32_t to_tf32(float) {
  __trap();
  return 0;
}
__device__ __forceinline__ uint16_t to_bf16(float) {
  __trap();
  return 0;
}
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&)[4], const uint32_t (&)[4],
                                                 const uint32_t (&)[2], const float (&)[4]) {
  __trap();
}
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&)[4], const uint32_t (&)[4],
                                                  const uint32_t (&)[2], const float (&)[4]) {
  __trap();
}

#endif

// Two bf16 values in one register, `low` (the element with the smaller index) in the low half.
__device__ __forceinline__ uint32_t pack_bf16(float low, float high) {
  return uint32_t(to_bf16(low)) | (uint32_t(to_bf16(high)) << 16);
}

}  // namespace minilora::cuda
