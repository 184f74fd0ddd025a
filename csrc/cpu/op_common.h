// What the compiled elementwise ops (op_layer_norm.cpp, op_softmax.cpp, op_gelu.cpp) share.
#pragma once

#include <pybind11/numpy.h>

#include <cstdint>

namespace minilora {
namespace cpu {

// A NumPy array of exactly dtype T in C (row-major) order (arguments are also marked noconvert:
// a float64 array never reaches a float32 overload by a silent cast).
template <typename T>
using Array = pybind11::array_t<T, pybind11::array::c_style>;

// Below this many values an op runs on the calling thread: waking the other threads costs more.
constexpr int64_t kThreadedValues = int64_t(1) << 15;

}  // namespace cpu
}  // namespace minilora
