// The `isa` argument of minilora._C's CPU functions: "baseline", "avx2", "avx512", or "" for the
// best this CPU runs. Shared by bindings.cpp (the fused op) and the products of cpu/op_matmul.cpp.
#pragma once

#include <pybind11/pybind11.h>

#include <optional>
#include <string>

#include "cpu/gemm.h"

namespace minilora {
namespace cpu {

// The instruction set called `name`, if there is one.
inline std::optional<Isa> isa_named(const std::string& name) {
  for (Isa isa : {Isa::baseline, Isa::avx2, Isa::avx512}) {
    if (name == isa_name(isa)) return isa;
  }
  return std::nullopt;
}

// The instruction set the caller asked for ("" for the best this CPU runs); ValueError when there
// is no such name or this CPU cannot run it.
inline Isa parse_isa(const std::string& name) {
  if (name.empty()) return best_isa();
  const auto isa = isa_named(name);
  if (!isa) {
    throw pybind11::value_error("isa must be 'baseline', 'avx2', 'avx512' or '' (the best), got '" +
                                name + "'");
  }
  if (!isa_supported(*isa)) {
    throw pybind11::value_error("isa=" + name + ": this CPU cannot run it (the best it runs is " +
                                isa_name(best_isa()) + ")");
  }
  return *isa;
}

}  // namespace cpu
}  // namespace minilora
