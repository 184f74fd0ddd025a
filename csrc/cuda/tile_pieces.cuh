// Pieces the register-blocked rungs share (lora_fused.cu, lora_async.cu, lora_warp.cu): where a
// thread's share of a tile copy lies, and 16-byte moves.
#pragma once

#include "matmul.cuh"

namespace minilora::cuda {

// Each of kThreads threads copies `kOuterTile · kStep / kThreads` elements of a (kOuterTile ×
// kStep) piece of an operand, in runs of kWidth elements consecutive along the operand's contiguous
// index. Element e of this thread sits at (outer, inner) in the piece; consecutive threads take
// consecutive runs, so a warp reads whole cache lines.
struct Spot {
  int outer, inner;
};

template <int kThreads, int kStep, int kOuterTile, Contiguous C, int kWidth>
__device__ __forceinline__ Spot piece_spot(int e) {
  const int index = (e / kWidth) * kThreads + threadIdx.x;  // which run of the piece
  const int along = e % kWidth;                             // which element of the run
  if (C == Contiguous::Inner) {
    constexpr int runs_per_row = kStep / kWidth;
    return {index / runs_per_row, (index % runs_per_row) * kWidth + along};
  }
  constexpr int runs_per_column = kOuterTile / kWidth;
  return {(index % runs_per_column) * kWidth + along, index / runs_per_column};
}

template <typename T>
struct Vector16;  // 16 bytes of T, read by one instruction
template <>
struct Vector16<float> {
  using type = float4;
};
template <>
struct Vector16<double> {
  using type = double2;
};

template <typename T>
__device__ __forceinline__ void copy16(T* dst, const T* src) {
  using V = typename Vector16<T>::type;
  *reinterpret_cast<V*>(dst) = *reinterpret_cast<const V*>(src);
}

}  // namespace minilora::cuda
