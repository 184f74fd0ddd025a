// pybind11 entry points of the CUDA kernels (documented in register_cuda.h): turn the names and
// integers that Python passes into a variant, a dtype, typed device pointers and a stream, release
// the GIL, and queue the kernels (lora_layer.cu).
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <pybind11/stl.h>  // std::vector to a list

#include "lora_layer.cuh"
#include "register_cuda.h"

namespace py = pybind11;
using minilora::cuda::Variant;

namespace {

bool is_float64(const std::string& dtype) {
  if (dtype == "float32") return false;
  if (dtype == "float64") return true;
  throw std::invalid_argument("dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

template <typename T>
const T* in(uintptr_t address) {
  return reinterpret_cast<const T*>(address);
}

template <typename T>
T* out(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

template <typename T>
void forward(Variant variant, uintptr_t x, uintptr_t W, uintptr_t A, uintptr_t B, uintptr_t bias,
             uintptr_t y, uintptr_t u, uintptr_t workspace, int64_t workspace_size,
             const minilora::cuda::LoraShape& shape, double scaling, uintptr_t stream,
             const minilora::cuda::Nf4Weights* W_nf4) {
  const minilora::cuda::ForwardArrays<T> arrays{in<T>(x), in<T>(W), in<T>(A), in<T>(B),
                                                in<T>(bias), out<T>(y), out<T>(u), W_nf4};
  minilora::cuda::lora_forward<T>(variant, shape, arrays, T(scaling), out<T>(workspace),
                                  workspace_size, reinterpret_cast<cudaStream_t>(stream));
}

template <typename T>
void backward(Variant variant, uintptr_t dy, uintptr_t x, uintptr_t W, uintptr_t A, uintptr_t B,
              uintptr_t u, uintptr_t dx, uintptr_t dA, uintptr_t dB, uintptr_t workspace,
              int64_t workspace_size, const minilora::cuda::LoraShape& shape, double scaling,
              uintptr_t stream, const minilora::cuda::Nf4Weights* W_nf4) {
  const minilora::cuda::BackwardArrays<T> arrays{in<T>(dy), in<T>(x),   in<T>(W),
                                                 in<T>(A),  in<T>(B),   in<T>(u),
                                                 out<T>(dx), out<T>(dA), out<T>(dB), W_nf4};
  minilora::cuda::lora_backward<T>(variant, shape, arrays, T(scaling), out<T>(workspace),
                                   workspace_size, reinterpret_cast<cudaStream_t>(stream));
}

}  // namespace

void register_cuda(py::module_& m) {
  m.def(
      "cuda_device_status",
      []() -> std::tuple<int, std::string> {
        int count = 0;
        const cudaError_t err = cudaGetDeviceCount(&count);
        if (err != cudaSuccess) {
          cudaGetLastError();  // the failure is reported here; keep it out of later checks
          return {0, std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err)};
        }
        return {count, ""};
      },
      "(device_count, error_message): what the CUDA runtime linked into minilora._C sees.\n"
      "Never raises: without a driver or a GPU it returns (0, the runtime's reason).");

  m.def(
      "lora_warp_tiles",
      [](int rows, int cols) -> std::tuple<std::vector<std::string>, std::string> {
        std::vector<std::string> names;
        for (int i = 0; i < minilora::cuda::warp_tile_count(); ++i) {
          names.emplace_back(minilora::cuda::warp_tile_name(i));
        }
        return {names, names[size_t(minilora::cuda::warp_tiles_for(rows, cols))]};
      },
      "(names, chosen): the warp rung's tile configurations, largest block tile first, and the\n"
      "one it runs a rows x cols product with (MINILORA_WARP_TILES, else the choice per shape).",
      py::arg("rows") = 1, py::arg("cols") = 1);

  m.def(
      "lora_workspace_size",
      [](const std::string& variant, const std::string& dtype, int64_t M, int64_t N, int64_t K,
         int64_t r, bool backward) -> int64_t {
        const Variant v = minilora::cuda::variant_named(variant);
        const minilora::cuda::LoraShape shape{M, N, K, r};
        if (is_float64(dtype)) {
          return backward ? minilora::cuda::backward_workspace<double>(v, shape)
                          : minilora::cuda::forward_workspace<double>(v, shape);
        }
        return backward ? minilora::cuda::backward_workspace<float>(v, shape)
                        : minilora::cuda::forward_workspace<float>(v, shape);
      },
      "Elements of scratch (of dtype) that lora_forward_cuda (backward=False) or\n"
      "lora_backward_cuda (backward=True) needs for this variant and shape; may be 0.",
      py::arg("variant"), py::arg("dtype"), py::arg("M"), py::arg("N"), py::arg("K"), py::arg("r"),
      py::arg("backward"));

  m.def(
      "lora_forward_cuda",
      [](const std::string& variant, const std::string& dtype, uintptr_t x, uintptr_t W,
         uintptr_t A, uintptr_t B, uintptr_t bias, uintptr_t y, uintptr_t u, uintptr_t workspace,
         int64_t workspace_size, int64_t M, int64_t N, int64_t K, int64_t r, double scaling,
         uintptr_t stream) {
        const Variant v = minilora::cuda::variant_named(variant);
        const bool f64 = is_float64(dtype);
        const minilora::cuda::LoraShape shape{M, N, K, r};
        py::gil_scoped_release no_gil;
        if (f64) {
          forward<double>(v, x, W, A, B, bias, y, u, workspace, workspace_size, shape, scaling,
                          stream, nullptr);
        } else {
          forward<float>(v, x, W, A, B, bias, y, u, workspace, workspace_size, shape, scaling,
                         stream, nullptr);
        }
      },
      "Queue the LoRA forward on `stream`: u = x·Aᵀ (M, r),\n"
      "y = x·Wᵀ + scaling·u·Bᵀ (+ bias) (M, N).\n"
      "Arrays are device addresses of C-contiguous arrays; bias = 0 for none.",
      py::arg("variant"), py::arg("dtype"), py::arg("x"), py::arg("W"), py::arg("A"), py::arg("B"),
      py::arg("bias"), py::arg("y"), py::arg("u"), py::arg("workspace"), py::arg("workspace_size"),
      py::arg("M"), py::arg("N"), py::arg("K"), py::arg("r"), py::arg("scaling"),
      py::arg("stream"));

  m.def(
      "lora_backward_cuda",
      [](const std::string& variant, const std::string& dtype, uintptr_t dy, uintptr_t x,
         uintptr_t W, uintptr_t A, uintptr_t B, uintptr_t u, uintptr_t dx, uintptr_t dA,
         uintptr_t dB, uintptr_t workspace, int64_t workspace_size, int64_t M, int64_t N, int64_t K,
         int64_t r, double scaling, uintptr_t stream) {
        const Variant v = minilora::cuda::variant_named(variant);
        const bool f64 = is_float64(dtype);
        const minilora::cuda::LoraShape shape{M, N, K, r};
        py::gil_scoped_release no_gil;
        if (f64) {
          backward<double>(v, dy, x, W, A, B, u, dx, dA, dB, workspace, workspace_size, shape,
                           scaling, stream, nullptr);
        } else {
          backward<float>(v, dy, x, W, A, B, u, dx, dA, dB, workspace, workspace_size, shape,
                          scaling, stream, nullptr);
        }
      },
      "Queue the LoRA backward on `stream`: v = dy·B, dx = dy·W + scaling·v·A (M, K),\n"
      "dA = scaling·vᵀ·x (r, K), dB = scaling·dyᵀ·u (N, r). Arrays are device addresses.",
      py::arg("variant"), py::arg("dtype"), py::arg("dy"), py::arg("x"), py::arg("W"), py::arg("A"),
      py::arg("B"), py::arg("u"), py::arg("dx"), py::arg("dA"), py::arg("dB"), py::arg("workspace"),
      py::arg("workspace_size"), py::arg("M"), py::arg("N"), py::arg("K"), py::arg("r"),
      py::arg("scaling"), py::arg("stream"));

  // The nf4 rung: W (N, K) in NF4 as device addresses of packed (uint8), absmax (float32 per
  // block) and code (the 16 float32 levels), with block_size, in place of W (lora_nf4.cuh).
  m.def(
      "lora_forward_nf4_cuda",
      [](const std::string& dtype, uintptr_t x, uintptr_t packed, uintptr_t absmax, uintptr_t code,
         int block_size, uintptr_t A, uintptr_t B, uintptr_t bias, uintptr_t y, uintptr_t u,
         uintptr_t workspace, int64_t workspace_size, int64_t M, int64_t N, int64_t K, int64_t r,
         double scaling, uintptr_t stream) {
        const minilora::cuda::Nf4Weights W{reinterpret_cast<const uint8_t*>(packed), in<float>(absmax),
                                           in<float>(code), block_size};
        const bool f64 = is_float64(dtype);
        const minilora::cuda::LoraShape shape{M, N, K, r};
        py::gil_scoped_release no_gil;
        (f64 ? forward<double> : forward<float>)(Variant::Nf4, x, 0, A, B, bias, y, u, workspace,
                                                  workspace_size, shape, scaling, stream, &W);
      },
      "lora_forward_cuda on the nf4 rung, with W in NF4 (packed, absmax, code, block_size).",
      py::arg("dtype"), py::arg("x"), py::arg("packed"), py::arg("absmax"), py::arg("code"),
      py::arg("block_size"), py::arg("A"), py::arg("B"), py::arg("bias"), py::arg("y"), py::arg("u"),
      py::arg("workspace"), py::arg("workspace_size"), py::arg("M"), py::arg("N"), py::arg("K"),
      py::arg("r"), py::arg("scaling"), py::arg("stream"));

  m.def(
      "lora_backward_nf4_cuda",
      [](const std::string& dtype, uintptr_t dy, uintptr_t x, uintptr_t packed, uintptr_t absmax,
         uintptr_t code, int block_size, uintptr_t A, uintptr_t B, uintptr_t u, uintptr_t dx,
         uintptr_t dA, uintptr_t dB, uintptr_t workspace, int64_t workspace_size, int64_t M,
         int64_t N, int64_t K, int64_t r, double scaling, uintptr_t stream) {
        const minilora::cuda::Nf4Weights W{reinterpret_cast<const uint8_t*>(packed), in<float>(absmax),
                                           in<float>(code), block_size};
        const bool f64 = is_float64(dtype);
        const minilora::cuda::LoraShape shape{M, N, K, r};
        py::gil_scoped_release no_gil;
        (f64 ? backward<double> : backward<float>)(Variant::Nf4, dy, x, 0, A, B, u, dx, dA, dB,
                                                    workspace, workspace_size, shape, scaling,
                                                    stream, &W);
      },
      "lora_backward_cuda on the nf4 rung, with W in NF4 as for lora_forward_nf4_cuda.",
      py::arg("dtype"), py::arg("dy"), py::arg("x"), py::arg("packed"), py::arg("absmax"),
      py::arg("code"), py::arg("block_size"), py::arg("A"), py::arg("B"), py::arg("u"),
      py::arg("dx"), py::arg("dA"), py::arg("dB"), py::arg("workspace"), py::arg("workspace_size"),
      py::arg("M"), py::arg("N"), py::arg("K"), py::arg("r"), py::arg("scaling"), py::arg("stream"));
}
