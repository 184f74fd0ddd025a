// The LoRA layer as matrix products: forward and backward side by side, written once for every
// rung of the ladder (lora_layer.cuh for the shapes).
//
//   forward   u  = x·Aᵀ                                  (M, r)  summed over K
//             y  = [x | s·u]·[W | B]ᵀ (+ bias)           (M, N)  summed over K + r
//   backward  v  = dy·B                                  (M, r)  summed over N
//             dx = [dy | s·v]·[W ; A]                    (M, K)  summed over N + r
//             dA = s·vᵀ·x                                (r, K)  summed over M
//             dB = s·dyᵀ·u                               (N, r)  summed over M
//
// y and dx are "wide" products (both sides large) and carry the LoRA term in their glued inner
// dimension; u, v, dA and dB are "skinny" (one side only r wide). The naive rung runs all six with
// its one kernel; the tiled rung with its kernel; the fused rung runs the wide ones on the
// register-blocked kernel and the skinny ones on the tiled kernel, split along their long inner
// dimension when the output alone would leave the GPU idle; the vectorized rung is the fused rung
// with the register-blocked kernel reading device memory 16 bytes at a time; the async and warp
// rungs run the wide ones on the kernel of lora_async.cu (cp.async; and warp tiles); the nf4 rung
// runs the wide ones, which read W, on the kernel that dequantizes W's tiles (lora_nf4.cu), the
// rest tiled. The tensor-core rungs (tf32x3, bf16; float32 only) run all six products on the
// mma.sync kernel, so that each is one precision throughout; the wgmma rung (bf16 too) runs the
// wide ones on TMA and wgmma (lora_wgmma.cu) and the skinny ones on the bf16 mma.sync kernel.
#include <algorithm>
#include <cstdio>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "lora_layer.cuh"
#include "lora_nf4.cuh"
#include "matmul.cuh"

namespace minilora::cuda {
namespace {

constexpr auto Inner = Contiguous::Inner;
constexpr auto Outer = Contiguous::Outer;

enum class Width { Wide, Skinny };
using WideProduct = std::integral_constant<Width, Width::Wide>;
using SkinnyProduct = std::integral_constant<Width, Width::Skinny>;

// The kernel that computes a product: the naive rung runs every product on its one kernel, the
// tiled rung on its own, the fused and vectorized rungs the wide ones on the fused kernel (with
// scalar or 16-byte loads), the async and warp rungs on the kernel of lora_async.cu (with the
// fused blocking or warp tiles), the nf4 rung on its own kernel, and the skinny ones tiled; the
// tensor-core rungs every product on theirs (the wgmma rung its wide ones, the rest on bf16 mma.sync).
enum class Kernel { Naive, Tiled, Fused, Async, Warp, Nf4, TensorCores, Wgmma };

bool on_tensor_cores(Variant variant) {
  return variant == Variant::Tf32x3 || variant == Variant::Bf16 || variant == Variant::Wgmma;
}

TensorCores cores_for(Variant variant) {
  return variant == Variant::Tf32x3 ? TensorCores::Tf32x3 : TensorCores::Bf16;
}

std::string tensor_core_variant(Variant variant) {
  const char* name = variant == Variant::Tf32x3 ? "tf32x3" : variant == Variant::Bf16 ? "bf16" : "wgmma";
  return std::string("variant '") + name + "'";
}

Kernel kernel_for(Variant variant, Width width) {
  if (variant == Variant::Naive) return Kernel::Naive;
  if (variant == Variant::Wgmma && width == Width::Wide) return Kernel::Wgmma;
  if (on_tensor_cores(variant)) return Kernel::TensorCores;
  if (variant == Variant::Nf4) return width == Width::Wide ? Kernel::Nf4 : Kernel::Tiled;
  const bool fused = variant == Variant::Fused || variant == Variant::Vectorized;
  if (fused && width == Width::Wide) return Kernel::Fused;
  if (variant == Variant::Async && width == Width::Wide) return Kernel::Async;
  if (variant == Variant::Warp && width == Width::Wide) return Kernel::Warp;
  return Kernel::Tiled;
}

Loads loads_for(Variant variant) {
  return variant == Variant::Vectorized ? Loads::Vector16 : Loads::Scalar;
}

// The block tile of every kernel but the naive one, which does not tile C.
template <typename T>
BlockTile tile_of(Kernel kernel, int rows, int cols) {
  if (kernel == Kernel::Fused) return fused_tile<T>();
  if (kernel == Kernel::Async) return async_tile<T>();
  if (kernel == Kernel::Warp) return warp_tile(rows, cols);
  if (kernel == Kernel::TensorCores) return mma_tile();
  if (kernel == Kernel::Wgmma) return wgmma_tile();
  return tiled_tile();  // the tiled and the nf4 kernels
}

template <typename T>
SplitPlan plan(Kernel kernel, int rows, int cols, int inner) {
  if (kernel == Kernel::Naive) return {1, inner};
  return plan_splits(rows, cols, inner, tile_of<T>(kernel, rows, cols));
}

// What an error message calls the kernel that runs a product.
const char* kernel_name(Kernel kernel, Variant variant, int rows, int cols) {
  if (kernel == Kernel::Naive) return "naive_matmul_kernel";
  if (kernel == Kernel::Fused) return fused_kernel_name(loads_for(variant));
  if (kernel == Kernel::Async) return "async_matmul_kernel";
  if (kernel == Kernel::Warp) return warp_kernel_name(rows, cols);
  if (kernel == Kernel::TensorCores) return mma_kernel_name(cores_for(variant));
  if (kernel == Kernel::Wgmma) return "wgmma_matmul_kernel";
  return kernel == Kernel::Nf4 ? "nf4_matmul_kernel" : "tiled_matmul_kernel";
}

// The partial sums of a split product, and the wgmma rung's staged operands.
template <typename T, Contiguous LC, Contiguous RC>
int64_t scratch_for(Variant variant, Width width, const Matmul<T, LC, RC>& p) {
  const Kernel kernel = kernel_for(variant, width);
  const int64_t staging = kernel == Kernel::Wgmma ? wgmma_staging_scratch(p.rows, p.cols, p.inner) : 0;
  return split_scratch(plan<T>(kernel, p.rows, p.cols, p.inner), p.rows, p.cols) + staging;
}

// The grid `run` launches for p, checked for every product of a pass before the pass launches
// anything: a pass that cannot run leaves no half-written outputs behind.
template <typename T, Contiguous LC, Contiguous RC>
void check_grid_for(Variant variant, Width width, const Matmul<T, LC, RC>& p, const char* product) {
  const Kernel kernel = kernel_for(variant, width);
  const dim3 grid = kernel == Kernel::Naive
                        ? naive_grid(p.rows, p.cols)
                        : split_grid(p.rows, p.cols, tile_of<T>(kernel, p.rows, p.cols),
                                     plan<T>(kernel, p.rows, p.cols, p.inner));
  check_grid(grid, kernel_name(kernel, variant, p.rows, p.cols), product);
}

// Width is a template argument so that the fused kernel is only ever built for the wide products.
template <Width width, typename T, Contiguous LC, Contiguous RC>
void run(Variant variant, const Matmul<T, LC, RC>& p, const Nf4Weights* W_nf4, T* scratch,
         cudaStream_t stream, const char* product) {
  const Kernel kernel = kernel_for(variant, width);
  const SplitPlan split = plan<T>(kernel, p.rows, p.cols, p.inner);
  if (kernel == Kernel::Naive) {
    naive_matmul(p, stream, product);
    return;
  }
  if constexpr (std::is_same_v<T, float>) {  // float64 is refused before (check_precision)
    if (kernel == Kernel::TensorCores) {
      mma_matmul(p, split, scratch, stream, product, cores_for(variant));
      return;
    }
  }
  if constexpr (width == Width::Wide && std::is_same_v<T, float>) {
    if (kernel == Kernel::Wgmma) {
      wgmma_matmul(p, split, scratch, stream, product);
      return;
    }
  }
  if constexpr (width == Width::Wide) {
    if (kernel == Kernel::Nf4) {
      nf4_matmul(p, *W_nf4, split, scratch, stream, product);
      return;
    }
    if (kernel == Kernel::Fused) {
      fused_matmul(p, split, scratch, stream, product, loads_for(variant));
      return;
    }
    if (kernel == Kernel::Async) {
      async_matmul(p, split, scratch, stream, product);
      return;
    }
    if (kernel == Kernel::Warp) {
      warp_matmul(p, split, scratch, stream, product);
      return;
    }
  }
  tiled_matmul(p, split, scratch, stream, product);
}

// ---- forward -----------------------------------------------------------------------------------
template <typename T>
struct ForwardProducts {
  using Product = Matmul<T, Inner, Inner>;
  Product u, y;
  const Nf4Weights* W_nf4;  // W in NF4 for the nf4 rung (y's right operand then reads it), or null
};

template <typename T>
ForwardProducts<T> forward_products(const LoraShape& s, const ForwardArrays<T>& a, T scaling) {
  using Product = typename ForwardProducts<T>::Product;
  const int M = int(s.M), N = int(s.N), K = int(s.K), r = int(s.r);  // checked by check_shape
  ForwardProducts<T> f;
  f.W_nf4 = a.W_nf4;
  // u[m, j] = sum_k x[m, k]·A[j, k]
  f.u = Product{M, r, K, plain<Inner>(a.x, K), plain<Inner>(a.A, K), T(1), nullptr, a.u};
  // y[m, n] = sum_k x[m, k]·W[n, k] + sum_j s·u[m, j]·B[n, j]: one sum over K + r
  f.y = Product{M, N, K + r, glued<Inner>(a.x, K, K, a.u, r, scaling),
                glued<Inner>(a.W, K, K, a.B, r, T(1)), T(1), a.bias, a.y};
  return f;
}

// Call each(width, product, name) for the products of the forward, in launch order.
template <typename T, typename Each>
void for_each_product(const ForwardProducts<T>& f, Each&& each) {
  each(SkinnyProduct{}, f.u, "u = x A^T");
  each(WideProduct{}, f.y, "y = x W^T + s u B^T");
}

// ---- backward ----------------------------------------------------------------------------------
template <typename T>
struct BackwardProducts {
  using SumOverFeatures = Matmul<T, Inner, Outer>;  // v and dx: sums over the N output features
  using SumOverTokens = Matmul<T, Outer, Outer>;    // dA and dB: sums over the M rows (tokens)
  SumOverFeatures v, dx;
  SumOverTokens dA, dB;
  const Nf4Weights* W_nf4;  // as in ForwardProducts (dx's right operand)
};

template <typename T>
BackwardProducts<T> backward_products(const LoraShape& s, const BackwardArrays<T>& a, T scaling,
                                      T* v) {
  using SumOverFeatures = typename BackwardProducts<T>::SumOverFeatures;
  using SumOverTokens = typename BackwardProducts<T>::SumOverTokens;
  const int M = int(s.M), N = int(s.N), K = int(s.K), r = int(s.r);  // checked by check_shape
  BackwardProducts<T> b;
  b.W_nf4 = a.W_nf4;
  // v[m, j] = sum_n dy[m, n]·B[n, j]: B is read down its columns (Outer)
  b.v = SumOverFeatures{M, r, N, plain<Inner>(a.dy, N), plain<Outer>(a.B, r), T(1), nullptr, v};
  // dx[m, k] = sum_n dy[m, n]·W[n, k] + sum_j s·v[m, j]·A[j, k]: one sum over N + r, the right
  // operand being the rows of W followed by the rows of A
  b.dx = SumOverFeatures{M, K, N + r, glued<Inner>(a.dy, N, N, v, r, scaling),
                         glued<Outer>(a.W, K, N, a.A, K, T(1)), T(1), nullptr, a.dx};
  // dA[j, k] = s·sum_m v[m, j]·x[m, k]
  b.dA = SumOverTokens{r, K, M, plain<Outer>(v, r), plain<Outer>(a.x, K), scaling, nullptr, a.dA};
  // dB[n, j] = s·sum_m dy[m, n]·u[m, j]
  b.dB = SumOverTokens{N, r, M, plain<Outer>(a.dy, N), plain<Outer>(a.u, r), scaling, nullptr,
                       a.dB};
  return b;
}

// Stream order makes v complete before dx and dA read it, and lets the products share scratch.
template <typename T, typename Each>
void for_each_product(const BackwardProducts<T>& b, Each&& each) {
  each(SkinnyProduct{}, b.v, "v = dy B");
  each(WideProduct{}, b.dx, "dx = dy W + s v A");
  each(SkinnyProduct{}, b.dA, "dA = s v^T x");
  each(SkinnyProduct{}, b.dB, "dB = s dy^T u");
}

// ---- checks ------------------------------------------------------------------------------------
// The kernels index with int: every size, an inner length like K + r and a split's end
// (begin + chunk) must stay below 2^31. 2^28 leaves room for all of them.
constexpr int kMaxSize = 1 << 28;

void check_shape(const LoraShape& s) {
  const int64_t sizes[] = {s.M, s.N, s.K, s.r};
  const char* names[] = {"M", "N", "K", "r"};
  for (int i = 0; i < 4; ++i) {
    if (sizes[i] < 1 || sizes[i] > kMaxSize) {
      throw std::invalid_argument(std::string("lora CUDA kernels: ") + names[i] + " = " +
                                  std::to_string(sizes[i]) + ", expected 1 <= " + names[i] +
                                  " <= " + std::to_string(kMaxSize));
    }
  }
}

void check_workspace(int64_t have, int64_t need, const char* pass) {
  if (have < need) {
    throw std::invalid_argument(std::string("lora CUDA ") + pass + ": workspace has " +
                                std::to_string(have) + " elements, expected at least " +
                                std::to_string(need) + " (lora_workspace_size)");
  }
}

// One array the kernels read or write: `elements` values of T from `data`.
struct Span {
  const char* name;
  const void* data;
  int64_t elements;
};

std::string describe(const Span& a) {
  char address[32];
  std::snprintf(address, sizeof address, "%p", a.data);
  return std::string(a.name) + " (" + std::to_string(a.elements) + " elements at " + address + ")";
}

bool overlap(const Span& a, const Span& b, int64_t element_bytes) {
  const auto begin_a = reinterpret_cast<uintptr_t>(a.data);
  const auto begin_b = reinterpret_cast<uintptr_t>(b.data);
  const auto end_a = begin_a + uintptr_t(a.elements * element_bytes);
  const auto end_b = begin_b + uintptr_t(b.elements * element_bytes);
  return a.elements > 0 && b.elements > 0 && begin_a < end_b && begin_b < end_a;
}

// Every array of a pass is a real address, and no output (workspace included) shares a byte with an
// input or another output: the kernels read inputs while they write outputs, so an overlap would
// give results that depend on the order the blocks happen to run in.
void check_spans(const char* pass, int64_t element_bytes, std::initializer_list<Span> inputs,
                 std::initializer_list<Span> outputs) {
  for (const auto* group : {&inputs, &outputs}) {
    for (const Span& a : *group) {
      if (a.elements > 0 && a.data == nullptr) {
        throw std::invalid_argument(std::string("lora CUDA ") + pass + ": " + a.name +
                                    " is a null pointer, expected the address of " +
                                    std::to_string(a.elements) + " elements");
      }
    }
  }
  for (const Span* out = outputs.begin(); out != outputs.end(); ++out) {
    for (const auto* group : {&inputs, &outputs}) {
      for (const Span& other : *group) {
        if (&other != out && overlap(*out, other, element_bytes)) {
          throw std::invalid_argument(std::string("lora CUDA ") + pass + ": output " +
                                      describe(*out) + " overlaps " +
                                      describe(other) +
                                      "; every output must be an array of its own");
        }
      }
    }
  }
}

// The nf4 rung takes W in NF4 and the others a float W; the NF4 arrays as spans of elements of T
// (rounded up: the overlap check compares bytes).
struct Nf4Spans {
  Span packed, absmax, code;
};

template <typename T>
Nf4Spans check_weight_format(Variant variant, const LoraShape& s, const Nf4Weights* w,
                             const char* pass) {
  if ((variant == Variant::Nf4) != (w != nullptr)) {
    throw std::invalid_argument(std::string("lora CUDA ") + pass +
                                (w ? ": W is in NF4, which only the 'nf4' variant reads"
                                   : ": the 'nf4' variant needs W in NF4 (lora_*_nf4_cuda)"));
  }
  if (!w) return {{"W.packed", nullptr, 0}, {"W.absmax", nullptr, 0}, {"W.code", nullptr, 0}};
  if (w->block_size < 1) {
    throw std::invalid_argument(std::string("lora CUDA ") + pass + ": block_size = " +
                                std::to_string(w->block_size) + ", expected at least 1");
  }
  const auto elements = [](int64_t bytes) { return (bytes + int64_t(sizeof(T)) - 1) / int64_t(sizeof(T)); };
  const int64_t size = s.N * s.K, blocks = (size + w->block_size - 1) / w->block_size;
  return {{"W.packed", w->packed, elements((size + 1) / 2)},
          {"W.absmax", w->absmax, elements(blocks * int64_t(sizeof(float)))},
          {"W.code", w->code, elements(16 * int64_t(sizeof(float)))}};
}

template <typename T>
void check_arrays(Variant variant, const LoraShape& s, const ForwardArrays<T>& a,
                  const T* workspace, int64_t workspace_size) {
  const Nf4Spans q = check_weight_format<T>(variant, s, a.W_nf4, "forward");
  check_spans("forward", sizeof(T),
              {{"x", a.x, s.M * s.K}, {"W", a.W, a.W_nf4 ? 0 : s.N * s.K}, {"A", a.A, s.r * s.K},
               {"B", a.B, s.N * s.r}, {"bias", a.bias, a.bias ? s.N : 0}, q.packed, q.absmax,
               q.code},
              {{"y", a.y, s.M * s.N}, {"u", a.u, s.M * s.r}, {"workspace", workspace, workspace_size}});
}

template <typename T>
void check_arrays(Variant variant, const LoraShape& s, const BackwardArrays<T>& a,
                  const T* workspace, int64_t workspace_size) {
  const Nf4Spans q = check_weight_format<T>(variant, s, a.W_nf4, "backward");
  check_spans("backward", sizeof(T),
              {{"dy", a.dy, s.M * s.N}, {"x", a.x, s.M * s.K}, {"W", a.W, a.W_nf4 ? 0 : s.N * s.K},
               {"A", a.A, s.r * s.K}, {"B", a.B, s.N * s.r}, {"u", a.u, s.M * s.r}, q.packed,
               q.absmax, q.code},
              {{"dx", a.dx, s.M * s.K}, {"dA", a.dA, s.r * s.K}, {"dB", a.dB, s.N * s.r},
               {"workspace", workspace, workspace_size}});
}

// The tensor-core rungs compute in float32: a float64 layer is refused, before anything is sized.
template <typename T>
void check_precision(Variant variant) {
  if (on_tensor_cores(variant) && !std::is_same_v<T, float>) {
    throw std::invalid_argument(tensor_core_variant(variant) +
                                " runs on tensor cores and takes float32 arrays, got float64");
  }
}

// mma.sync on TF32 and bf16 operands exists from compute capability 8.0 (A100) on; a T4 (7.5)
// has none, and its build of the kernel would only trap. wgmma and TMA are sm_90a's: 9.0 only
// (H100, H200). Refused here, with the reason.
void check_tensor_cores(Variant variant) {
  if (!on_tensor_cores(variant)) return;
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    return;  // no usable GPU: check_no_pending_error reports the runtime's error
  }
  if (variant == Variant::Wgmma && (major != 9 || minor != 0)) {
    throw std::invalid_argument("variant 'wgmma' needs wgmma and TMA, compute capability 9.0 (an "
                                "H100 or H200); GPU " + std::to_string(device) + " has " +
                                std::to_string(major) + "." + std::to_string(minor) +
                                (major >= 8 ? " (the bf16 rung 'bf16' runs there)" : ""));
  }
  if (major < 8) {
    throw std::invalid_argument(tensor_core_variant(variant) +
                                " needs mma.sync on TF32 / bf16, compute capability 8.0 or newer; "
                                "GPU " + std::to_string(device) + " has " + std::to_string(major) +
                                "." + std::to_string(minor) +
                                " (the fp32 rungs 'fused' and 'vectorized' run there)");
  }
}

// An error left by an earlier CUDA call (or no usable driver) is reported as such, not against
// our first kernel.
void check_no_pending_error(const char* pass) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("lora CUDA ") + pass +
                             ": CUDA reported an error before any launch (an earlier failure, or "
                             "no usable driver): " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
  }
}

}  // namespace

Variant variant_named(const std::string& name) {
  if (name == "naive") return Variant::Naive;
  if (name == "tiled") return Variant::Tiled;
  if (name == "fused") return Variant::Fused;
  if (name == "vectorized") return Variant::Vectorized;
  if (name == "async") return Variant::Async;
  if (name == "warp") return Variant::Warp;
  if (name == "tf32x3") return Variant::Tf32x3;
  if (name == "bf16") return Variant::Bf16;
  if (name == "wgmma") return Variant::Wgmma;
  if (name == "nf4") return Variant::Nf4;
  throw std::invalid_argument(
      "variant must be 'naive', 'tiled', 'fused', 'vectorized', 'async', 'warp', 'tf32x3', 'bf16', "
      "'wgmma' or 'nf4', got '" + name + "'");
}

template <typename T>
int64_t forward_workspace(Variant variant, const LoraShape& shape) {
  check_shape(shape);
  check_precision<T>(variant);
  int64_t scratch = 0;
  for_each_product(forward_products<T>(shape, {}, T(1)), [&](auto width, const auto& p, const char*) {
    scratch = std::max(scratch, scratch_for(variant, width, p));
  });
  return scratch;
}

template <typename T>
int64_t backward_workspace(Variant variant, const LoraShape& shape) {
  check_shape(shape);
  check_precision<T>(variant);
  int64_t scratch = 0;
  for_each_product(backward_products<T>(shape, {}, T(1), nullptr),
                   [&](auto width, const auto& p, const char*) {
                     scratch = std::max(scratch, scratch_for(variant, width, p));
                   });
  return shape.M * shape.r + scratch;  // v, then the partial sums
}

// Everything that can be refused is refused before the first launch: sizes, workspace, pointers,
// the grid of every product of the pass, and an error left over from earlier CUDA work.
template <typename Products>
void check_pass(Variant variant, const char* pass, const Products& products) {
  for_each_product(products, [&](auto width, const auto& p, const char* product) {
    check_grid_for(variant, width, p, product);
  });
  check_tensor_cores(variant);
  check_no_pending_error(pass);
}

template <typename T, typename Products>
void run_pass(Variant variant, const Products& products, T* scratch, cudaStream_t stream) {
  for_each_product(products, [&](auto width, const auto& p, const char* product) {
    run<decltype(width)::value>(variant, p, products.W_nf4, scratch, stream, product);
  });
}

template <typename T>
void lora_forward(Variant variant, const LoraShape& shape, const ForwardArrays<T>& arrays,
                  T scaling, T* workspace, int64_t workspace_size, cudaStream_t stream) {
  check_workspace(workspace_size, forward_workspace<T>(variant, shape), "forward");
  check_arrays(variant, shape, arrays, workspace, workspace_size);
  const ForwardProducts<T> f = forward_products(shape, arrays, scaling);
  check_pass(variant, "forward", f);
  run_pass(variant, f, workspace, stream);
}

template <typename T>
void lora_backward(Variant variant, const LoraShape& shape, const BackwardArrays<T>& arrays,
                   T scaling, T* workspace, int64_t workspace_size, cudaStream_t stream) {
  check_workspace(workspace_size, backward_workspace<T>(variant, shape), "backward");
  check_arrays(variant, shape, arrays, workspace, workspace_size);
  T* v = workspace;
  const BackwardProducts<T> b = backward_products(shape, arrays, scaling, v);
  check_pass(variant, "backward", b);
  run_pass(variant, b, workspace + shape.M * shape.r, stream);
}

#define MINILORA_LAYER(T)                                                                      \
  template int64_t forward_workspace<T>(Variant, const LoraShape&);                            \
  template int64_t backward_workspace<T>(Variant, const LoraShape&);                           \
  template void lora_forward<T>(Variant, const LoraShape&, const ForwardArrays<T>&, T, T*,     \
                                int64_t, cudaStream_t);                                        \
  template void lora_backward<T>(Variant, const LoraShape&, const BackwardArrays<T>&, T, T*,   \
                                 int64_t, cudaStream_t);
MINILORA_LAYER(float)
MINILORA_LAYER(double)
#undef MINILORA_LAYER

}  // namespace minilora::cuda
