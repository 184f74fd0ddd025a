// The GEMM ladder compiled for AVX-512 (CMakeLists.txt builds this file with -mavx512f -mfma).
// 32 vector registers of 64 bytes: a 12 × 2-vector tile (24 accumulators, 2 right vectors and a
// broadcast in flight), or 24 × 1 vector for a C one vector wide.
#define MINILORA_ISA avx512
constexpr int kVectorBytes = 64;
constexpr int kWideRows = 12;
constexpr int kTallRows = 24;
#include "cpu/gemm_blocked.h"
