// Rung 1, for a 4-bit W: packing a right operand stored in NF4 (QLoRA's base weights, cpu/nf4.h).
//
// pack_right (gemm_pack.h) copies each sliver of the right operand into the order the
// micro-kernel reads it. When that operand is W in NF4, the copy is where W is dequantized: each
// 4-bit index is looked up in the 16 levels and multiplied by its block's absmax on its way into
// the packed panel. Nothing else in the GEMM changes (the micro-kernel sees float panels, as
// always), and the only float copy of W is the packed block of one column block at a time, the
// GEMM's ordinary work buffer (at most kL3Budget bytes, gemm_blocked.h), never the whole W.
//
// Both views of W the LoRA op uses walk W's rows, which are runs of consecutive numbers: in
// y = x·Wᵀ a column of the sliver of R = Wᵀ is a row of W; in dx = dy·W a row of the sliver of
// R = W is a piece of a row of W. dequantize_run decodes such a run block by block, so the
// absmax is read once per block, not once per number.
//
// Included inside the namespace of one instruction set (see gemm_blocked.h), before gemm_pack.h.

// dst[0], dst[step], ... = scale · (numbers [first, first + count) of w, dequantized).
// The level times the absmax is a float product, as in NF4Tensor.dequantize, so a float64 GEMM
// sees exactly the values the NumPy reference does.
template <typename T>
inline void dequantize_run(const Nf4Matrix& w, int64_t first, int64_t count, T scale, T* dst,
                           int64_t step) {
  int64_t i = 0;
  while (i < count) {
    const int64_t block = (first + i) / w.block_size;
    const float absmax = w.absmax[block];
    const int64_t stop = std::min(count, (block + 1) * w.block_size - first);  // end of the block
    for (; i < stop; ++i) {
      const int64_t number = first + i;
      const uint8_t byte = w.packed[number >> 1];
      const int index = (number & 1) ? (byte & 0x0F) : (byte >> 4);  // even numbers: high nibble
      dst[i * step] = scale * T(w.code[index] * absmax);
    }
  }
}

// pack_right for term R = terms[t].right with R.nf4 set (R is W or Wᵀ of a row-major W, so one of
// its strides is 1); `offset` is where R starts in the concatenated inner dimension. Same panel
// layout as pack_right: panel q holds element (k, j) at q·kc·NR + (k - k0)·NR + j, zero-padded.
template <typename T, int NR>
void pack_right_nf4(T* dst, const Matrix<T>& R, T scale, int64_t offset, int64_t j0, int64_t cols,
                    int64_t k0, int64_t kc, int64_t q0, int64_t q1) {
  const Nf4Matrix& w = *R.nf4;
  const int64_t lo = std::max(k0, offset), hi = std::min(k0 + kc, offset + R.rows);
  auto number = [&](int64_t k, int64_t j) { return (k - offset) * R.row_stride + j * R.col_stride; };
  for (int64_t q = q0; q < q1; ++q) {
    T* panel = dst + q * kc * NR;
    const int64_t first = j0 + q * NR, valid = std::min<int64_t>(NR, j0 + cols - first);
    if (R.col_stride == 1) {
      // R = W (dx = dy·W): row k of the sliver is `valid` consecutive numbers of row k of W.
      for (int64_t k = lo; k < hi; ++k) {
        T* d = panel + (k - k0) * NR;
        dequantize_run(w, number(k, first), valid, scale, d, 1);
        for (int64_t j = valid; j < NR; ++j) d[j] = T(0);
      }
    } else {
      // R = Wᵀ (y = x·Wᵀ): column j of the sliver is a run of row first + j of W.
      for (int64_t j = 0; j < valid; ++j) {
        dequantize_run(w, number(lo, first + j), hi - lo, scale, panel + (lo - k0) * NR + j, NR);
      }
      for (int64_t k = lo; k < hi; ++k) {
        for (int64_t j = valid; j < NR; ++j) panel[(k - k0) * NR + j] = T(0);
      }
    }
  }
}
