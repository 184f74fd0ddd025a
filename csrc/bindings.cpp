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

// The output checks and the call, shared by the entry points with a float W (W) and with W in
// NF4 (W_nf4, further down; then W is null).
template <typename T>
void run_forward(minilora::cpu::Isa isa, const LoraSizes& sizes, const Array<T>& x, const T* W,
                 const minilora::cpu::Nf4Matrix* W_nf4, const Array<T>& A, const Array<T>& B,
                 double scaling, const std::optional<Array<T>>& bias, Array<T>& y, Array<T>& u) {
  const auto [M, K, N, r] = sizes;
  check_shape(y, "y", {M, N});
  check_shape(u, "u", {M, r});
  if (bias) check_shape(*bias, "bias", {N});

  const T* bias_ptr = bias ? bias->data() : nullptr;
  T* y_ptr = y.mutable_data();  // raises if y is read-only
  T* u_ptr = u.mutable_data();
  py::gil_scoped_release no_gil;  // other Python threads may run during the loops
  minilora::lora_forward_cpu<T>(isa, x.data(), W, A.data(), B.data(), bias_ptr,
                                static_cast<T>(scaling), y_ptr, u_ptr, M, K, N, r, W_nf4);
}

template <typename T>
void run_backward(minilora::cpu::Isa isa, const LoraSizes& sizes, const Array<T>& dy,
                  const Array<T>& x, const T* W, const minilora::cpu::Nf4Matrix* W_nf4,
                  const Array<T>& A, const Array<T>& B, const Array<T>& u, double scaling,
                  Array<T>& dx, Array<T>& dA, Array<T>& dB) {
  const auto [M, K, N, r] = sizes;
  check_shape(dy, "dy", {M, N});
  check_shape(u, "u", {M, r});
  check_shape(dx, "dx", {M, K});
  check_shape(dA, "dA", {r, K});
  check_shape(dB, "dB", {N, r});

  T* dx_ptr = dx.mutable_data();
  T* dA_ptr = dA.mutable_data();
  T* dB_ptr = dB.mutable_data();
  py::gil_scoped_release no_gil;
  minilora::lora_backward_cpu<T>(isa, dy.data(), x.data(), W, A.data(), B.data(), u.data(),
                                 static_cast<T>(scaling), dx_ptr, dA_ptr, dB_ptr, M, K, N, r, W_nf4);
}

template <typename T>
void lora_forward_cpu(const Array<T>& x, const Array<T>& W, const Array<T>& A, const Array<T>& B,
                      double scaling, const std::optional<Array<T>>& bias, Array<T>& y,
                      Array<T>& u, const std::string& isa_name) {
  const minilora::cpu::Isa isa = minilora::cpu::parse_isa(isa_name);
  run_forward(isa, lora_sizes(x, W, A, B), x, W.data(), nullptr, A, B, scaling, bias, y, u);
}

template <typename T>
void lora_backward_cpu(const Array<T>& dy, const Array<T>& x, const Array<T>& W,
                       const Array<T>& A, const Array<T>& B, const Array<T>& u, double scaling,
                       Array<T>& dx, Array<T>& dA, Array<T>& dB, const std::string& isa_name) {
  const minilora::cpu::Isa isa = minilora::cpu::parse_isa(isa_name);
  run_backward(isa, lora_sizes(x, W, A, B), dy, x, W.data(), nullptr, A, B, u, scaling, dx, dA, dB);
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

// ---- W in NF4 (QLoRA's 4-bit base, minilora/quant/nf4.py) -------------------------------------
// packed (ceil(N·K / 2),) uint8, absmax (ceil(N·K / block_size),) float32 (dequantized first when
// double quantization stores it in 8 bits: one number per block), code (16,) float32, the levels.
minilora::cpu::Nf4Matrix nf4_matrix(const Array<uint8_t>& packed, const Array<float>& absmax,
                                    const Array<float>& code, int64_t block_size, py::ssize_t N,
                                    py::ssize_t K) {
  if (block_size < 1) {
    throw py::value_error("block_size must be at least 1, got " + std::to_string(block_size));
  }
  const py::ssize_t size = N * K;
  check_shape(packed, "packed", {(size + 1) / 2});
  check_shape(absmax, "absmax", {(size + block_size - 1) / block_size});
  check_shape(code, "code", {16});
  return {packed.data(), absmax.data(), code.data(), block_size};
}

// M, K, N, r read off x (M, K), A (r, K) and B (N, r): W (N, K) has no array of its own.
template <typename T>
LoraSizes nf4_lora_sizes(const Array<T>& x, const Array<T>& A, const Array<T>& B) {
  if (x.ndim() != 2 || A.ndim() != 2 || B.ndim() != 2) {
    throw py::value_error("x, A and B must be 2-D arrays");
  }
  const LoraSizes sizes{x.shape(0), x.shape(1), B.shape(0), A.shape(0)};
  check_shape(A, "A", {sizes.r, sizes.K});
  check_shape(B, "B", {sizes.N, sizes.r});
  return sizes;
}

template <typename T>
void lora_forward_nf4_cpu(const Array<T>& x, const Array<uint8_t>& packed,
                          const Array<float>& absmax, const Array<float>& code, int64_t block_size,
                          const Array<T>& A, const Array<T>& B, double scaling,
                          const std::optional<Array<T>>& bias, Array<T>& y, Array<T>& u,
                          const std::string& isa_name) {
  const minilora::cpu::Isa isa = minilora::cpu::parse_isa(isa_name);
  const LoraSizes sizes = nf4_lora_sizes(x, A, B);
  const minilora::cpu::Nf4Matrix W = nf4_matrix(packed, absmax, code, block_size, sizes.N, sizes.K);
  run_forward<T>(isa, sizes, x, nullptr, &W, A, B, scaling, bias, y, u);
}

template <typename T>
void lora_backward_nf4_cpu(const Array<T>& dy, const Array<T>& x, const Array<uint8_t>& packed,
                           const Array<float>& absmax, const Array<float>& code,
                           int64_t block_size, const Array<T>& A, const Array<T>& B,
                           const Array<T>& u, double scaling, Array<T>& dx, Array<T>& dA,
                           Array<T>& dB, const std::string& isa_name) {
  const minilora::cpu::Isa isa = minilora::cpu::parse_isa(isa_name);
  const LoraSizes sizes = nf4_lora_sizes(x, A, B);
  const minilora::cpu::Nf4Matrix W = nf4_matrix(packed, absmax, code, block_size, sizes.N, sizes.K);
  run_backward<T>(isa, sizes, dy, x, nullptr, &W, A, B, u, scaling, dx, dA, dB);
}

template <typename T>
void def_nf4_cpu_functions(py::module_& m) {
  m.def("lora_forward_nf4_cpu", &lora_forward_nf4_cpu<T>,
        "lora_forward_cpu with W (N, K) in NF4: packed (uint8), absmax (float32 per block), code\n"
        "(the 16 float32 levels), block_size. W's panels are dequantized as they are packed.",
        py::arg("x").noconvert(), py::arg("packed").noconvert(), py::arg("absmax").noconvert(),
        py::arg("code").noconvert(), py::arg("block_size"), py::arg("A").noconvert(),
        py::arg("B").noconvert(), py::arg("scaling"), py::arg("bias").noconvert(),
        py::arg("y").noconvert(), py::arg("u").noconvert(), py::arg("isa") = "");
  m.def("lora_backward_nf4_cpu", &lora_backward_nf4_cpu<T>,
        "lora_backward_cpu with W (N, K) in NF4, as lora_forward_nf4_cpu takes it.",
        py::arg("dy").noconvert(), py::arg("x").noconvert(), py::arg("packed").noconvert(),
        py::arg("absmax").noconvert(), py::arg("code").noconvert(), py::arg("block_size"),
        py::arg("A").noconvert(), py::arg("B").noconvert(), py::arg("u").noconvert(),
        py::arg("scaling"), py::arg("dx").noconvert(), py::arg("dA").noconvert(),
        py::arg("dB").noconvert(), py::arg("isa") = "");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "minilora's compiled fused LoRA op: C++ on the CPU, and CUDA when built with it.";

  def_cpu_functions<float>(m);
  def_cpu_functions<double>(m);
  def_nf4_cpu_functions<float>(m);
  def_nf4_cpu_functions<double>(m);
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
  // MINILORA_CUDA as the build saw it: "AUTO" (CUDA if nvcc was found), "ON" or "OFF".
  m.attr("cuda_option") = MINILORA_CUDA_OPTION;
}
