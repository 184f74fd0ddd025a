// Rung 2 of the GEMM ladder: the register-blocked micro-kernel.
//
// It computes one MR × NR tile of C = (packed left sliver, MR × kc) · (packed right sliver,
// kc × NR) with the whole tile held in vector registers: MR rows of NV vectors each (NR = NV
// vectors of kLanes values). Each step k loads NV vectors of the right sliver and, for each of
// the MR rows, multiplies them by one value of the left sliver broadcast to all lanes and adds the
// products into the accumulators: MR·NV fused multiply-adds for NV + MR loads. Loads are the
// bottleneck of a matrix product; keeping the tile in registers is what makes them few.
//
// The vectors are GCC/Clang vector extensions: `a * b + c` on them compiles to the instructions
// of the target the file is built for (FMA on AVX2 and AVX-512 with -ffp-contract=fast, a multiply
// and an add on the baseline), so one source serves every instruction set.
//
// Included inside the namespace of one instruction set, after kVectorBytes is defined.

// Values per vector register: 16 floats or 8 doubles on AVX-512.
template <typename T>
constexpr int kLanes = kVectorBytes / sizeof(T);

#if defined(__GNUC__) || defined(__clang__)
template <typename T>
struct VectorOf {
  typedef T type __attribute__((vector_size(kVectorBytes)));
};
#else
// Compilers without vector extensions (MSVC) get a plain array with the same arithmetic, which
// their optimizer may still vectorize; only the baseline is built for them (CMakeLists.txt).
template <typename T>
struct Lanes {
  T lane[kLanes<T>];
  friend Lanes operator*(T a, const Lanes& b) {
    Lanes out;
    for (int i = 0; i < kLanes<T>; ++i) out.lane[i] = a * b.lane[i];
    return out;
  }
  Lanes& operator+=(const Lanes& b) {
    for (int i = 0; i < kLanes<T>; ++i) lane[i] += b.lane[i];
    return *this;
  }
};
template <typename T>
struct VectorOf {
  typedef Lanes<T> type;
};
#endif
template <typename T>
using Vector = typename VectorOf<T>::type;

template <typename T>
inline Vector<T> load(const T* p) {  // any alignment
  Vector<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
inline void store(T* p, const Vector<T>& v) {
  std::memcpy(p, &v, sizeof v);
}

// A hint to bring the cache line at p in before it is written (no effect where it is not known).
template <typename T>
inline void prefetch(T* p) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p, 1);
#else
  (void)p;
#endif
}

// Where a tile of C goes: `rows` × `cols` (at most MR × NR) at c with strides (rs, cs). The first
// block of the inner dimension overwrites C (adding bias[j] to column j when bias is not null);
// later blocks add to what the earlier ones left.
template <typename T>
struct Tile {
  T* c;
  int64_t rs, cs;
  int64_t rows, cols;
  const T* bias;
  bool accumulate;
};

template <typename T, int MR, int NV>
void micro_kernel(int64_t kc, const T* a, const T* b, const Tile<T>& out) {
  constexpr int W = kLanes<T>, NR = NV * W;
  Vector<T> acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = Vector<T>{};  // zeros
  }

  // Ask for the tile's rows of C now, so that they arrive while the loop below runs instead of
  // stalling the stores at its end: a C larger than the caches is read and written once per block
  // of the inner dimension, one cache miss per row of the tile.
  constexpr int kLineValues = 64 / sizeof(T);
  for (int64_t i = 0; out.cs == 1 && i < out.rows; ++i) {
    for (int64_t j = 0; j < out.cols; j += kLineValues) prefetch(out.c + i * out.rs + j);
  }

  for (int64_t k = 0; k < kc; ++k, a += MR, b += NR) {
    Vector<T> bk[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bk[v] = *reinterpret_cast<const Vector<T>*>(b + v * W);  // aligned
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const T ai = a[i];  // broadcast to every lane by the vector arithmetic
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += ai * bk[v];
    }
  }

  if (out.cols == NR && out.cs == 1) {  // whole rows of a row-major C (the last tile may be short)
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      if (i == out.rows) break;
      T* row = out.c + i * out.rs;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        Vector<T> value = acc[i][v];
        if (out.accumulate) value += load(row + v * W);
        else if (out.bias) value += load(out.bias + v * W);
        store(row + v * W, value);
      }
    }
    return;
  }
  // A tile at the edge of C, or C with a column stride (a transposed output): through memory.
  alignas(64) T tile[MR * NR];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) store(tile + i * NR + v * W, acc[i][v]);
  }
  for (int64_t i = 0; i < out.rows; ++i) {
    for (int64_t j = 0; j < out.cols; ++j) {
      T& c = out.c[i * out.rs + j * out.cs];
      const T value = tile[i * NR + j];
      c = out.accumulate ? c + value : (out.bias ? out.bias[j] + value : value);
    }
  }
}
