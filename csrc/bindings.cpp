// The pybind11 module minilora._C: the C++ fused LoRA op (lora_cpu.h) and, when built with CUDA,
// the GPU kernels (cuda/register_cuda.h).
//
// These entry points are thin on purpose. Python (minilora/kernels/) checks dtypes and shapes with
// readable messages, allocates the outputs and passes them in, so a test can fill them with NaN
// first and see any element a kernel forgot to write. Arguments are marked noconvert(): a float64
// array never reaches a float32 overload by a silent cast, and a strided view is refused instead of
// copied. The shape check below is a last guard for memory safety when _C is called directly.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "cpu/isa_arg.h"
#include "cpu/ops.h"
#include "lora_cpu.h"

#ifdef MINILORA_WITH_CUDA
#include "cuda/register_cuda.h"
#endif

namespace py = pybind11;

namespace {

// A NumPy array of exactly dtype T in C (row-major) order.
template <typename T>
using Array = py::array_t<T, py::array::c_style>;

std::string shape_string(const std::vector<py::ssize_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

void check_shape(const py::array& a, const char* name, const std::vector<py::ssize_t>& expected) {
  std::vector<py::ssize_t> shape(a.shape(), a.shape() + a.ndim());
  if (shape != expected) {
    throw py::value_error(std::string(name) + " has shape " + shape_string(shape) +
                          ", expected " + shape_string(expected));
  }
}

// M, K, N, r read off x (M, K), W (N, K) and A (r, K), once W, A and B are checked to agree.
struct LoraSizes {
  py::ssize_t M, K, N, r;
};

template <typename T>
LoraSizes lora_sizes(const Array<T>& x, const Array<T>& W, const Array<T>& A, const Array<T>& B) {
  if (x.ndim() != 2 || A.ndim() != 2 || W.ndim() != 2) {
    throw py::value_error("x, W and A must be 2-D arrays");
  }
  const LoraSizes sizes{x.shape(0), x.shape(1), W.shape(0), A.shape(0)};
  check_shape(W, "W", {sizes.N, sizes.K});
  check_shape(A, "A", {sizes.r, sizes.K});
  check_shape(B, "B", {sizes.N, sizes.r});
  return sizes;
}

template <typename T>
void lora_forward_cpu(const Array<T>& x, const Array<T>& W, const Array<T>& A, const Array<T>& B,
                      double scaling, const std::optional<Array<T>>& bias, Array<T>& y,
                      Array<T>& u, const std::string& isa_name) {
  const minilora::cpu::Isa isa = minilora::cpu::parse_isa(isa_name);
  const auto [M, K, N, r] = lora_sizes(x, W, A, B);
  check_shape(y, "y", {M, N});
  check_shape(u, "u", {M, r});
  if (bias) check_shape(*bias, "bias", {N});

  const T* bias_ptr = bias ? bias->data() : nullptr;
  T* y_ptr = y.mutable_data();  // raises if y is read-only
  T* u_ptr = u.mutable_data();
  py::gil_scoped_release no_gil;  // other Python threads may run during the loops
  minilora::lora_forward_cpu<T>(isa, x.data(), W.data(), A.data(), B.data(), bias_ptr,
                                static_cast<T>(scaling), y_ptr, u_ptr, M, K, N, r);
}

template <typename T>
void lora_backward_cpu(const Array<T>& dy, const Array<T>& x, const Array<T>& W,
                       const Array<T>& A, const Array<T>& B, const Array<T>& u, double scaling,
                       Array<T>& dx, Array<T>& dA, Array<T>& dB, const std::string& isa_name) {
  const minilora::cpu::Isa isa = minilora::cpu::parse_isa(isa_name);
  const auto [M, K, N, r] = lora_sizes(x, W, A, B);
  check_shape(dy, "dy", {M, N});
  check_shape(u, "u", {M, r});
  check_shape(dx, "dx", {M, K});
  check_shape(dA, "dA", {r, K});
  check_shape(dB, "dB", {N, r});

  T* dx_ptr = dx.mutable_data();
  T* dA_ptr = dA.mutable_data();
  T* dB_ptr = dB.mutable_data();
  py::gil_scoped_release no_gil;
  minilora::lora_backward_cpu<T>(isa, dy.data(), x.data(), W.data(), A.data(), B.data(), u.data(),
                                 static_cast<T>(scaling), dx_ptr, dA_ptr, dB_ptr, M, K, N, r);
}

// One overload of each entry point per dtype.
template <typename T>
void def_cpu_functions(py::module_& m) {
  m.def("lora_forward_cpu", &lora_forward_cpu<T>,
        "Fused LoRA forward into preallocated y (M, N) and u (M, r):\n"
        "u = x·Aᵀ, y = x·Wᵀ + scaling·u·Bᵀ (+ bias). x (M, K), W (N, K), A (r, K), B (N, r).\n"
        "isa: the instruction set of the code that runs ('baseline', 'avx2', 'avx512'; '' for the "
        "best this CPU runs).",
        py::arg("x").noconvert(), py::arg("W").noconvert(), py::arg("A").noconvert(),
        py::arg("B").noconvert(), py::arg("scaling"), py::arg("bias").noconvert(),
        py::arg("y").noconvert(), py::arg("u").noconvert(), py::arg("isa") = "");
  m.def("lora_backward_cpu", &lora_backward_cpu<T>,
        "Fused LoRA backward into preallocated dx (M, K), dA (r, K), dB (N, r):\n"
        "v = dy·B, dx = dy·W + scaling·v·A, dA = scaling·vᵀ·x, dB = scaling·dyᵀ·u.\n"
        "isa: as for lora_forward_cpu.",
        py::arg("dy").noconvert(), py::arg("x").noconvert(), py::arg("W").noconvert(),
        py::arg("A").noconvert(), py::arg("B").noconvert(), py::arg("u").noconvert(),
        py::arg("scaling"), py::arg("dx").noconvert(), py::arg("dA").noconvert(),
        py::arg("dB").noconvert(), py::arg("isa") = "");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "minilora's compiled fused LoRA op: C++ on the CPU, and CUDA when built with it.";

  def_cpu_functions<float>(m);
  def_cpu_functions<double>(m);
  minilora::cpu::register_cpu_ops(m);  // products, layer norm, softmax, GELU (cpu/ops.h)
  m.def("cpu_threads", &minilora::cpu_threads,
        "Threads the C++ op uses (OpenMP's maximum; 1 when built without OpenMP).");
  m.def("cpu_best_isa", [] { return std::string(minilora::cpu::isa_name(minilora::cpu::best_isa())); },
        "The best instruction set the C++ op runs on this CPU: 'avx512', 'avx2' or 'baseline'.");
  m.def(
      "cpu_isa_supported",
      [](const std::string& name) {
        const auto isa = minilora::cpu::isa_named(name);
        return isa && minilora::cpu::isa_supported(*isa);
      },
      "Whether this CPU runs the C++ op's code for instruction set `name` ('baseline', 'avx2', "
      "'avx512').",
      py::arg("name"));

#ifdef MINILORA_WITH_CUDA
  register_cuda(m);
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
