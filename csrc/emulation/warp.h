// Warp-level instructions on the emulator: what csrc/cuda/mma.cuh calls in place of PTX.
//
// mma.sync is a warp collective: the 32 lanes of a warp (the block's threads 32·w .. 32·w + 31,
// x fastest) each hand in their fragment registers, and the instruction completes for all of them
// at once. Here a lane deposits its registers and waits; the last lane to arrive computes the
// 16 x 8 product from every lane's registers with the fragment layouts of the PTX ISA (mma.cuh),
// and each lane then takes its four elements of D. A lane that never reaches the instruction
// (it returned, or waits at __syncthreads()) while others wait there is warp divergence: the launch
// fails, as barrier divergence does (fibers.cpp reports it; the OS-thread build after a 10 s wait).
#pragma once

#include <cstdint>

namespace minilora::emulation {

// ---- conversions, bit by bit (the rounding the PTX ISA names for cvt) ----------------------------
// cvt.rna.tf32.f32: keep 10 of float's 23 mantissa bits, rounding to nearest with ties away from
// zero (add half of the dropped part to the magnitude, then truncate). NaN stays a NaN, inf stays.
inline uint32_t round_to_tf32(uint32_t float_bits) {
  if ((float_bits & 0x7f800000u) == 0x7f800000u) {
    return (float_bits & 0x007fffffu) ? (float_bits | 0x00400000u) & ~0x1fffu : float_bits;
  }
  return (float_bits + 0x1000u) & ~0x1fffu;
}

// cvt.rn.bf16.f32: the top 16 bits of the float, rounded to nearest with ties to even.
inline uint16_t round_to_bf16(uint32_t float_bits) {
  if ((float_bits & 0x7f800000u) == 0x7f800000u && (float_bits & 0x007fffffu)) {
    return uint16_t((float_bits >> 16) | 0x0040u);  // a quiet NaN
  }
  return uint16_t((float_bits + 0x7fffu + ((float_bits >> 16) & 1u)) >> 16);
}

// ---- the warp collectives -------------------------------------------------------------------------
void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                      const float (&c)[4]);
void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                       const float (&c)[4]);

// ---- for the block runners (fibers.cpp, os_threads.cpp) -------------------------------------------
// Forget every collective in progress, and poison dynamic shared memory (hopper.h): before each
// block.
void reset_warps();

// Collectives completed since the library was loaded (mma.sync here; the warpgroup steps and the
// mbarrier phases of tma.cpp and wgmma.cpp count too): fibers.cpp sees a pass over the waiting lanes that
// completes none as divergence, and names a warp with lanes waiting at mma.sync (or -1).
uint64_t collectives_completed();
void count_completed_collective();
int incomplete_warp();

// Fibers only (fibers.cpp): the lane waits at a collective; control goes back to the scheduler,
// which resumes it again later.
void wait_at_warp();

}  // namespace minilora::emulation
