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
// dimension when the output alone would leave the GPU idle.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "lora_layer.cuh"
#include "matmul.cuh"

namespace minilora::cuda {
namespace {

constexpr auto Inner = Contiguous::Inner;
constexpr auto Outer = Contiguous::Outer;

enum class Width { Wide, Skinny };

template <typename T>
SplitPlan plan(Variant variant, Width width, int rows, int cols, int inner) {
  if (variant == Variant::Naive) return {1, inner};
  if (variant == Variant::Fused && width == Width::Wide) return fused_plan<T>(rows, cols, inner);
  return tiled_plan(rows, cols, inner);
}

template <typename T, Contiguous LC, Contiguous RC>
int64_t scratch_for(Variant variant, Width width, const Matmul<T, LC, RC>& p) {
  return split_scratch(plan<T>(variant, width, p.rows, p.cols, p.inner), p.rows, p.cols);
}

// Width is a template argument so that the fused kernel is only ever built for the wide products.
template <Width width, typename T, Contiguous LC, Contiguous RC>
void run(Variant variant, const Matmul<T, LC, RC>& p, T* scratch, cudaStream_t stream,
         const char* product) {
  const SplitPlan split = plan<T>(variant, width, p.rows, p.cols, p.inner);
  if (variant == Variant::Naive) {
    naive_matmul(p, stream, product);
    return;
  }
  if constexpr (width == Width::Wide) {
    if (variant == Variant::Fused) {
      fused_matmul(p, split, scratch, stream, product);
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
};

template <typename T>
ForwardProducts<T> forward_products(const LoraShape& s, const ForwardArrays<T>& a, T scaling) {
  using Product = typename ForwardProducts<T>::Product;
  const int M = int(s.M), N = int(s.N), K = int(s.K), r = int(s.r);  // checked by check_shape
  ForwardProducts<T> f;
  // u[m, j] = sum_k x[m, k]·A[j, k]
  f.u = Product{M, r, K, plain<Inner>(a.x, K), plain<Inner>(a.A, K), T(1), nullptr, a.u};
  // y[m, n] = sum_k x[m, k]·W[n, k] + sum_j s·u[m, j]·B[n, j]: one sum over K + r
  f.y = Product{M, N, K + r, glued<Inner>(a.x, K, K, a.u, r, scaling),
                glued<Inner>(a.W, K, K, a.B, r, T(1)), T(1), a.bias, a.y};
  return f;
}

// ---- backward ----------------------------------------------------------------------------------
template <typename T>
struct BackwardProducts {
  using SumOverFeatures = Matmul<T, Inner, Outer>;  // v and dx: sums over the N output features
  using SumOverTokens = Matmul<T, Outer, Outer>;    // dA and dB: sums over the M rows (tokens)
  SumOverFeatures v, dx;
  SumOverTokens dA, dB;
};

template <typename T>
BackwardProducts<T> backward_products(const LoraShape& s, const BackwardArrays<T>& a, T scaling,
                                      T* v) {
  using SumOverFeatures = typename BackwardProducts<T>::SumOverFeatures;
  using SumOverTokens = typename BackwardProducts<T>::SumOverTokens;
  const int M = int(s.M), N = int(s.N), K = int(s.K), r = int(s.r);  // checked by check_shape
  BackwardProducts<T> b;
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

template <typename T>
int64_t forward_workspace(Variant variant, const LoraShape& shape) {
  check_shape(shape);
  const ForwardProducts<T> f = forward_products<T>(shape, {}, T(1));
  return std::max(scratch_for(variant, Width::Skinny, f.u), scratch_for(variant, Width::Wide, f.y));
}

template <typename T>
int64_t backward_workspace(Variant variant, const LoraShape& shape) {
  check_shape(shape);
  const BackwardProducts<T> b = backward_products<T>(shape, {}, T(1), nullptr);
  const int64_t scratch = std::max({scratch_for(variant, Width::Skinny, b.v),
                                    scratch_for(variant, Width::Wide, b.dx),
                                    scratch_for(variant, Width::Skinny, b.dA),
                                    scratch_for(variant, Width::Skinny, b.dB)});
  return shape.M * shape.r + scratch;  // v, then the partial sums
}

template <typename T>
void lora_forward(Variant variant, const LoraShape& shape, const ForwardArrays<T>& arrays,
                  T scaling, T* workspace, int64_t workspace_size, cudaStream_t stream) {
  check_workspace(workspace_size, forward_workspace<T>(variant, shape), "forward");
  check_no_pending_error("forward");
  const ForwardProducts<T> f = forward_products(shape, arrays, scaling);
  run<Width::Skinny>(variant, f.u, workspace, stream, "u = x A^T");
  run<Width::Wide>(variant, f.y, workspace, stream, "y = x W^T + s u B^T");
}

template <typename T>
void lora_backward(Variant variant, const LoraShape& shape, const BackwardArrays<T>& arrays,
                   T scaling, T* workspace, int64_t workspace_size, cudaStream_t stream) {
  check_workspace(workspace_size, backward_workspace<T>(variant, shape), "backward");
  check_no_pending_error("backward");
  T* v = workspace;
  T* scratch = workspace + shape.M * shape.r;
  const BackwardProducts<T> b = backward_products(shape, arrays, scaling, v);
  // Stream order makes v complete before dx and dA read it, and lets the products share scratch.
  run<Width::Skinny>(variant, b.v, scratch, stream, "v = dy B");
  run<Width::Wide>(variant, b.dx, scratch, stream, "dx = dy W + s v A");
  run<Width::Skinny>(variant, b.dA, scratch, stream, "dA = s v^T x");
  run<Width::Skinny>(variant, b.dB, scratch, stream, "dB = s dy^T u");
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
