// The GEMM ladder for any CPU: built with the compiler's default flags, which on x86-64 means
// SSE2 (16 registers of 16 bytes, a multiply and an add instead of a fused multiply-add) and on
// other processors their own baseline vectors (NEON on 64-bit ARM).
#define MINILORA_ISA baseline
constexpr int kVectorBytes = 16;
constexpr int kWideRows = 6;
constexpr int kTallRows = 12;
#include "cpu/gemm_blocked.h"
