// Which compiled copy of the GEMM runs (rung 4 of the ladder), and the work buffers it packs into.
//
// gemm_avx512.cpp and gemm_avx2.cpp are compiled with their instruction sets switched on, so a
// build made on one machine contains code that another machine may not be able to run. The CPU is
// asked at run time (__builtin_cpu_supports reads CPUID) and only code it can run is ever called.
// This file itself is compiled for the baseline.
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>

#include "cpu/gemm.h"

#ifdef _MSC_VER
#include <malloc.h>  // _aligned_malloc: MSVC has no std::aligned_alloc
#endif

namespace minilora {
namespace cpu {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::baseline: break;
  }
  return "baseline";
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::baseline: return true;
#ifdef MINILORA_X86
    case Isa::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#endif
    default: return false;
  }
}

Isa best_isa() {
  for (Isa isa : {Isa::avx512, Isa::avx2}) {
    if (isa_supported(isa)) return isa;
  }
  return Isa::baseline;
}

template <typename T>
void gemm(Isa isa, const OutMatrix<T>& C, const Product<T>* terms, int count, const T* bias,
          const MadeOnTheWay<T>* made) {
  if (count < 1 || count > kMaxTerms) throw std::invalid_argument("gemm: 1 or 2 terms");
  if (made && count != 2) throw std::invalid_argument("gemm: made on the way needs 2 terms");
  if (!isa_supported(isa)) {
    throw std::invalid_argument(std::string("this CPU cannot run instruction set ") + isa_name(isa));
  }
  switch (isa) {
#ifdef MINILORA_X86
    case Isa::avx512: return avx512::gemm(C, terms, count, bias, made);
    case Isa::avx2: return avx2::gemm(C, terms, count, bias, made);
#endif
    default: return baseline::gemm(C, terms, count, bias, made);
  }
}

template void gemm<float>(Isa, const OutMatrix<float>&, const Product<float>*, int, const float*,
                          const MadeOnTheWay<float>*);
template void gemm<double>(Isa, const OutMatrix<double>&, const Product<double>*, int,
                           const double*, const MadeOnTheWay<double>*);

namespace {

#ifdef _MSC_VER
void* aligned_bytes(size_t bytes) { return _aligned_malloc(bytes, 64); }
struct FreeDeleter {
  void operator()(void* p) const { _aligned_free(p); }
};
#else
void* aligned_bytes(size_t bytes) { return std::aligned_alloc(64, bytes); }
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
#endif

// One growing buffer per slot and calling thread.
struct Buffer {
  std::unique_ptr<void, FreeDeleter> memory;
  size_t bytes = 0;
};
thread_local Buffer buffers[3];

}  // namespace

void* workspace(int slot, size_t bytes) {
  Buffer& b = buffers[slot];
  if (b.bytes < bytes) {
    const size_t rounded = (bytes / 64 + 1) * 64;  // aligned_alloc wants a multiple of 64, not 0
    b.memory.reset(aligned_bytes(rounded));
    if (!b.memory) throw std::bad_alloc();
    b.bytes = rounded;
  }
  return b.memory.get();
}

}  // namespace cpu
}  // namespace minilora
