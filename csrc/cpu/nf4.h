// A matrix stored in NF4, QLoRA's 4-bit NormalFloat (minilora/quant/nf4.py), as the C++ GEMM reads it.
//
// Number i of the flattened (row-major) matrix is
//     code[index_i] · absmax[i / block_size]
// where index_i is the high nibble of packed[i / 2] when i is even and the low nibble when i is
// odd. A cpu::Matrix whose `nf4` points at one of these takes its values from here instead of
// from `data`: element (i, j) of the view is number i·row_stride + j·col_stride. The GEMM
// dequantizes those numbers only while it packs a panel of them (gemm_pack_nf4.h), so the float
// matrix never exists in memory as a whole.
#pragma once

#include <cstdint>

namespace minilora {
namespace cpu {

struct Nf4Matrix {
  const uint8_t* packed;  // ceil(size / 2) bytes, two 4-bit indices each
  const float* absmax;    // one scale per block: ceil(size / block_size) of them
  const float* code;      // the 16 levels (NF4_CODE)
  int64_t block_size;     // consecutive numbers that share one absmax
};

}  // namespace cpu
}  // namespace minilora
