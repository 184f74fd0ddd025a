// The GEMM ladder compiled for AVX2 + FMA (CMakeLists.txt builds this file with -mavx2 -mfma).
// 16 vector registers of 32 bytes: a 6 × 2-vector tile (12 accumulators, 2 right vectors and a
// broadcast in flight), or 12 × 1 vector for a C one vector wide.
#define MINILORA_ISA avx2
constexpr int kVectorBytes = 32;
constexpr int kWideRows = 6;
constexpr int kTallRows = 12;
#include "cpu/gemm_blocked.h"
