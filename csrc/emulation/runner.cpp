// The emulator's entry points for Python (minilora/kernels/emulated.py, through ctypes): the same
// calls as the pybind11 bindings (csrc/cuda/register_cuda.cpp), on host memory. They run the host
// code of csrc/cuda/lora_layer.cu unchanged, so the split plans, workspace sizes and checks are the
// ones the GPU build uses; only the kernels run on the emulator instead of a GPU.
//
// Each returns 0 on success, 1 for a refused argument (std::invalid_argument, a ValueError in
// Python) and 2 for a failed launch or kernel (a RuntimeError), with the reason in `message`.
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>

#include "emulation.h"
#include "lora_layer.cuh"

namespace {

using minilora::cuda::LoraShape;

int report(const char* what, int code, char* message, size_t message_bytes) {
  std::snprintf(message, message_bytes, "%s", what);
  return code;
}

template <typename Call>
int guarded(Call&& call, char* message, size_t message_bytes) {
  try {
    call();
    return 0;
  } catch (const std::invalid_argument& e) {
    return report(e.what(), 1, message, message_bytes);
  } catch (const std::exception& e) {
    return report(e.what(), 2, message, message_bytes);
  }
}

template <typename T>
const T* in(const void* p) {
  return static_cast<const T*>(p);
}
template <typename T>
T* out(void* p) {
  return static_cast<T*>(p);
}

}  // namespace

MINILORA_EXPORT int minilora_emulated_workspace(const char* variant, int float64, int64_t M,
                                                int64_t N, int64_t K, int64_t r, int backward,
                                                int64_t* size, char* message,
                                                size_t message_bytes) {
  return guarded(
      [&] {
        namespace mc = minilora::cuda;
        const mc::Variant v = mc::variant_named(variant);
        const LoraShape shape{M, N, K, r};
        if (float64) {
          *size = backward ? mc::backward_workspace<double>(v, shape)
                           : mc::forward_workspace<double>(v, shape);
        } else {
          *size = backward ? mc::backward_workspace<float>(v, shape)
                           : mc::forward_workspace<float>(v, shape);
        }
      },
      message, message_bytes);
}

namespace {

template <typename T>
void forward(const char* variant, const void* x, const void* W, const void* A, const void* B,
             const void* bias, void* y, void* u, void* workspace, int64_t workspace_size,
             const LoraShape& shape, double scaling,
             const minilora::cuda::Nf4Weights* W_nf4) {
  namespace mc = minilora::cuda;
  const mc::ForwardArrays<T> arrays{in<T>(x), in<T>(W), in<T>(A), in<T>(B), in<T>(bias),
                                    out<T>(y), out<T>(u), W_nf4};
  mc::lora_forward<T>(mc::variant_named(variant), shape, arrays, T(scaling), out<T>(workspace),
                      workspace_size, nullptr);
}

template <typename T>
void backward(const char* variant, const void* dy, const void* x, const void* W, const void* A,
              const void* B, const void* u, void* dx, void* dA, void* dB, void* workspace,
              int64_t workspace_size, const LoraShape& shape, double scaling,
              const minilora::cuda::Nf4Weights* W_nf4) {
  namespace mc = minilora::cuda;
  const mc::BackwardArrays<T> arrays{in<T>(dy), in<T>(x),   in<T>(W),   in<T>(A),  in<T>(B),
                                     in<T>(u),  out<T>(dx), out<T>(dA), out<T>(dB), W_nf4};
  mc::lora_backward<T>(mc::variant_named(variant), shape, arrays, T(scaling), out<T>(workspace),
                       workspace_size, nullptr);
}

}  // namespace

MINILORA_EXPORT int minilora_emulated_forward(const char* variant, int float64, const void* x,
                                              const void* W, const void* A, const void* B,
                                              const void* bias, void* y, void* u, void* workspace,
                                              int64_t workspace_size, int64_t M, int64_t N,
                                              int64_t K, int64_t r, double scaling, char* message,
                                              size_t message_bytes) {
  return guarded(
      [&] {
        const LoraShape shape{M, N, K, r};
        (float64 ? forward<double> : forward<float>)(variant, x, W, A, B, bias, y, u, workspace,
                                                      workspace_size, shape, scaling, nullptr);
      },
      message, message_bytes);
}

MINILORA_EXPORT int minilora_emulated_backward(const char* variant, int float64, const void* dy,
                                               const void* x, const void* W, const void* A,
                                               const void* B, const void* u, void* dx, void* dA,
                                               void* dB, void* workspace, int64_t workspace_size,
                                               int64_t M, int64_t N, int64_t K, int64_t r,
                                               double scaling, char* message,
                                               size_t message_bytes) {
  return guarded(
      [&] {
        const LoraShape shape{M, N, K, r};
        (float64 ? backward<double> : backward<float>)(variant, dy, x, W, A, B, u, dx, dA, dB,
                                                        workspace, workspace_size, shape, scaling,
                                                        nullptr);
      },
      message, message_bytes);
}

// The "nf4" rung: W (N, K) in NF4 as packed (uint8), absmax (float32 per block) and code (the 16
// float32 levels), in place of W (lora_nf4.cuh).
MINILORA_EXPORT int minilora_emulated_forward_nf4(int float64, const void* x, const void* packed,
                                                  const void* absmax, const void* code,
                                                  int block_size, const void* A, const void* B,
                                                  const void* bias, void* y, void* u,
                                                  void* workspace, int64_t workspace_size,
                                                  int64_t M, int64_t N, int64_t K, int64_t r,
                                                  double scaling, char* message,
                                                  size_t message_bytes) {
  return guarded(
      [&] {
        const minilora::cuda::Nf4Weights W{in<uint8_t>(packed), in<float>(absmax), in<float>(code),
                                           block_size};
        const LoraShape shape{M, N, K, r};
        (float64 ? forward<double> : forward<float>)("nf4", x, nullptr, A, B, bias, y, u, workspace,
                                                      workspace_size, shape, scaling, &W);
      },
      message, message_bytes);
}

MINILORA_EXPORT int minilora_emulated_backward_nf4(int float64, const void* dy, const void* x,
                                                   const void* packed, const void* absmax,
                                                   const void* code, int block_size, const void* A,
                                                   const void* B, const void* u, void* dx, void* dA,
                                                   void* dB, void* workspace,
                                                   int64_t workspace_size, int64_t M, int64_t N,
                                                   int64_t K, int64_t r, double scaling,
                                                   char* message, size_t message_bytes) {
  return guarded(
      [&] {
        const minilora::cuda::Nf4Weights W{in<uint8_t>(packed), in<float>(absmax), in<float>(code),
                                           block_size};
        const LoraShape shape{M, N, K, r};
        (float64 ? backward<double> : backward<float>)("nf4", dy, x, nullptr, A, B, u, dx, dA, dB,
                                                        workspace, workspace_size, shape, scaling,
                                                        &W);
      },
      message, message_bytes);
}

// The warp rung's tile configurations: the name of configuration `index` into `name` when index is
// one (returns their count), and the one it runs a rows × cols product with (MINILORA_WARP_TILES,
// else the choice per shape) into *index.
MINILORA_EXPORT int minilora_emulated_warp_tiles(int index, char* name, size_t name_bytes) {
  namespace mc = minilora::cuda;
  if (index >= 0 && index < mc::warp_tile_count()) {
    std::snprintf(name, name_bytes, "%s", mc::warp_tile_name(index));
  }
  return mc::warp_tile_count();
}

MINILORA_EXPORT int minilora_emulated_warp_tiles_for(int rows, int cols, int* index, char* message,
                                                     size_t message_bytes) {
  return guarded([&] { *index = minilora::cuda::warp_tiles_for(rows, cols); }, message,
                 message_bytes);
}
