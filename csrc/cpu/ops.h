// The CPU fast paths beside the fused op, each in its own file, each registering its functions
// in minilora._C. Python (minilora/kernels/cpp.py and minilora/ops/) checks and allocates; the
// NumPy op of the same name is the reference every one is tested against.
//
//   op_matmul.cpp      batched matrix products on the GEMM (nn.Linear, attention's products)
//   op_layer_norm.cpp  layer normalisation over the last axis, forward and backward
//   op_softmax.cpp     softmax over the last axis (with an optional causal mask), forward and backward
//   op_gelu.cpp        tanh-approximated GELU, forward and backward
#pragma once

#include <pybind11/pybind11.h>

namespace minilora {
namespace cpu {

void register_matmul(pybind11::module_& m);
void register_layer_norm(pybind11::module_& m);
void register_softmax(pybind11::module_& m);
void register_gelu(pybind11::module_& m);

inline void register_cpu_ops(pybind11::module_& m) {
  register_matmul(m);
  register_layer_norm(m);
  register_softmax(m);
  register_gelu(m);
}

}  // namespace cpu
}  // namespace minilora
