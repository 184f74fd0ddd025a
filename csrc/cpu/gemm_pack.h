// Rung 1 of the GEMM ladder: packing.
//
// The micro-kernel (gemm_kernel.h) multiplies an MR-row sliver of the left operand by an NR-column
// sliver of the right one, one inner position k at a time. Packing copies each sliver once into
// exactly the order it is read in: MR values of column k of L side by side, then MR values of
// column k + 1, ...; NR values of row k of R side by side, and so on. The kernel then reads both
// with unit stride from aligned memory, whatever the strides of the original arrays (a transposed
// operand costs nothing extra), and slivers that run past the end of the matrix are padded with
// zeros, so the kernel never needs a remainder loop.
//
// The inner dimension is the concatenation of the terms' inner dimensions (x's K columns, then
// s·u's r columns): a block [k0, k0 + kc) of it may take columns from both terms, and packing is
// where they meet. The term's scale is applied here too, once per element of R: in the LoRA op
// the right operand of a scaled term is always the small one (Bᵀ, A, v or u).
//
// Included inside the namespace of one instruction set (see gemm_blocked.h).

// Left block: rows [i0, i0 + rows) of the left operands of terms [first, last), inner positions
// [k0, k0 + kc), as ceil(rows / MR) micro-panels; panel p holds element (i, k) at
// p·kc·MR + (k - k0)·MR + i. (Packing the terms one at a time lets term 1 be made on the way.)
template <typename T, int MR>
void pack_left(T* dst, const Product<T>* terms, int first, int last, int64_t i0, int64_t rows,
               int64_t k0, int64_t kc) {
  const int64_t panels = (rows + MR - 1) / MR;
  int64_t offset = 0;  // where term t starts in the concatenated inner dimension
  for (int t = 0; t < first; ++t) offset += terms[t].left.cols;
  for (int t = first; t < last; ++t) {
    const Matrix<T>& L = terms[t].left;
    const int64_t lo = std::max(k0, offset), hi = std::min(k0 + kc, offset + L.cols);
    if (L.row_stride == 1) {
      // A transposed L (xᵀ in dAᵀ = xᵀ·v): column k of L is a stretch of one row of x. A few
      // columns at a time, every panel takes its MR values of each: the lines of x being read
      // and of the panels being written stay in L1 until they are used up. (Panel by panel over
      // all of kc, each read jumps a row of x ahead, and rows a power of two apart share the same
      // few cache sets: the lines are gone before the next panel reads the rest of them.)
      constexpr int64_t kStep = 16;
      for (int64_t k_start = 0; k_start < hi - lo; k_start += kStep) {
        const int64_t k_end = std::min(hi - lo, k_start + kStep);
        for (int64_t p = 0; p < panels; ++p) {
          const int64_t valid = std::min<int64_t>(MR, rows - p * MR);
          for (int64_t k = k_start; k < k_end; ++k) {
            T* d = dst + (lo - k0 + k) * MR + p * kc * MR;
            const T* column = L.data + i0 + p * MR + (lo - offset + k) * L.col_stride;
            for (int64_t i = 0; i < valid; ++i) d[i] = column[i];
            for (int64_t i = valid; i < MR; ++i) d[i] = T(0);
          }
        }
      }
    } else {
      for (int64_t p = 0; p < panels; ++p) {
        // A row-major L (x in y = x·Wᵀ): gather column k from MR rows (their cache lines stay
        // in L1 across the next values of k) and write it contiguously.
        T* panel = dst + (lo - k0) * MR + p * kc * MR;
        const int64_t first = i0 + p * MR, valid = std::min<int64_t>(MR, i0 + rows - first);
        const T* src = L.data + first * L.row_stride + (lo - offset) * L.col_stride;
        for (int64_t k = 0; k < hi - lo; ++k) {
          T* d = panel + k * MR;
          const T* column = src + k * L.col_stride;
          for (int64_t i = 0; i < valid; ++i) d[i] = column[i * L.row_stride];
          for (int64_t i = valid; i < MR; ++i) d[i] = T(0);
        }
      }
    }
    offset += L.cols;
  }
}

// Right panel: columns [j0, j0 + cols) of the terms' right operands, inner positions
// [k0, k0 + kc), as micro-panels of NR columns; panel q holds element (k, j) at
// q·kc·NR + (k - k0)·NR + j. Only micro-panels [q0, q1) are packed, so threads can share the work.
template <typename T, int NR>
void pack_right(T* dst, const Product<T>* terms, int count, int64_t j0, int64_t cols, int64_t k0,
                int64_t kc, int64_t q0, int64_t q1) {
  int64_t offset = 0;
  for (int t = 0; t < count; ++t) {
    const Matrix<T>& R = terms[t].right;
    const T s = terms[t].scale;
    if (R.nf4) {  // W in NF4: dequantized as it is packed (gemm_pack_nf4.h)
      pack_right_nf4<T, NR>(dst, R, s, offset, j0, cols, k0, kc, q0, q1);
      offset += R.rows;
      continue;
    }
    const int64_t lo = std::max(k0, offset), hi = std::min(k0 + kc, offset + R.rows);
    for (int64_t q = q0; q < q1; ++q) {
      T* panel = dst + q * kc * NR;
      const int64_t first = j0 + q * NR, valid = std::min<int64_t>(NR, j0 + cols - first);
      const T* base = R.data + (lo - offset) * R.row_stride + first * R.col_stride;
      if (R.col_stride == 1 || valid < NR) {
        // Row k of the sliver is contiguous (R row-major, like W in dx = dy·W), or it is the
        // ragged last sliver: copy row by row.
        for (int64_t k = lo; k < hi; ++k) {
          T* d = panel + (k - k0) * NR;
          const T* src = base + (k - lo) * R.row_stride;
          if (R.col_stride == 1) {  // said outright, so that the copy is vector code
            for (int64_t j = 0; j < valid; ++j) d[j] = s * src[j];
          } else {
            for (int64_t j = 0; j < valid; ++j) d[j] = s * src[j * R.col_stride];
          }
          for (int64_t j = valid; j < NR; ++j) d[j] = T(0);
        }
      } else {
        // Column j of the sliver is contiguous (R = Wᵀ, as in y = x·Wᵀ): read each column along
        // its length and scatter it across the rows of the panel, a few inner positions at a
        // time, so that the panel rows being written (and the lines of R being read) stay in L1.
        constexpr int64_t kStep = 16;
        for (int64_t k_start = 0; k_start < hi - lo; k_start += kStep) {
          const int64_t k_end = std::min(hi - lo, k_start + kStep);
          for (int64_t j = 0; j < NR; ++j) {
            const T* src = base + j * R.col_stride;
            T* d = panel + (lo - k0) * NR + j;
            for (int64_t k = k_start; k < k_end; ++k) d[k * NR] = s * src[k * R.row_stride];
          }
        }
      }
    }
    offset += R.rows;
  }
}
