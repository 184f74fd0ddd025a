// The pieces every rung of the ladder shares (declared in matmul.cuh): how a product is split
// along its inner dimension, the second pass that adds the partial sums up, and launch checks.
#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "matmul.cuh"

namespace minilora::cuda {

// Each split sums at least this many inner indices, so the partial sums stay a small extra cost.
constexpr int kMinSplitInner = 256;
constexpr int kMaxSplits = 64;

SplitPlan plan_splits(int rows, int cols, int inner, const BlockTile& tile) {
  const int64_t tiles = int64_t(ceil_div(rows, tile.rows)) * ceil_div(cols, tile.cols);
  int64_t splits = (kTargetBlocks + tiles - 1) / tiles;
  splits = std::min<int64_t>(splits, std::max(1, inner / kMinSplitInner));
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, kMaxSplits));
  // Whole tiles per split, then as few splits as that chunk needs (none of them empty).
  int chunk = ceil_div(ceil_div(inner, int(splits)), tile.step) * tile.step;
  return {ceil_div(inner, chunk), chunk};
}

dim3 split_grid(int rows, int cols, const BlockTile& tile, const SplitPlan& plan) {
  return dim3(ceil_div(rows, tile.rows), ceil_div(cols, tile.cols), plan.splits);
}

int64_t split_scratch(const SplitPlan& plan, int rows, int cols) {
  return plan.splits > 1 ? int64_t(plan.splits) * rows * cols : 0;
}

// One thread per element of C (grid-stride), adding the splits in order z = 0, 1, ...
template <typename T>
__global__ void sum_splits_kernel(const T* partial, int splits, int rows, int cols, T alpha,
                                  const T* bias, T* out) {
  const int64_t count = int64_t(rows) * cols;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += stride) {
    T sum = 0;
    for (int z = 0; z < splits; ++z) sum += partial[z * count + e];
    const T value = alpha * sum;
    out[e] = bias ? value + bias[e % cols] : value;
  }
}

template <typename T>
void sum_splits(const T* partial, int splits, int rows, int cols, T alpha, const T* bias, T* out,
                cudaStream_t stream, const char* product) {
  constexpr int kThreads = 256;
  const int64_t count = int64_t(rows) * cols;
  const int blocks = int(std::min<int64_t>((count + kThreads - 1) / kThreads, 65535));
  MINILORA_LAUNCH(blocks, kThreads, stream, sum_splits_kernel<T>)(partial, splits, rows, cols, alpha,
                                                                  bias, out);
  check_launch("sum_splits_kernel", product, stream);
}

template void sum_splits<float>(const float*, int, int, int, float, const float*, float*,
                                cudaStream_t, const char*);
template void sum_splits<double>(const double*, int, int, int, double, const double*, double*,
                                 cudaStream_t, const char*);

namespace {

bool sync_after_launch() {
  static const bool sync = [] {
    const char* flag = std::getenv("MINILORA_CUDA_SYNC");
    return flag != nullptr && std::string(flag) == "1";
  }();
  return sync;
}

[[noreturn]] void fail(const char* kernel, const char* product, const char* when, cudaError_t err) {
  throw std::runtime_error(std::string("minilora CUDA kernel ") + kernel + " (" + product + ") " +
                           when + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

}  // namespace

void check_launch(const char* kernel, const char* product, cudaStream_t stream) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) fail(kernel, product, "failed to launch", err);
  if (sync_after_launch()) {
    err = cudaStreamSynchronize(stream);
    if (err != cudaSuccess) fail(kernel, product, "failed while running", err);
  }
}

void check_grid(const dim3& grid, const char* kernel, const char* product) {
  if (grid.y > 65535 || grid.z > 65535) {
    throw std::invalid_argument(std::string("minilora CUDA kernel ") + kernel + " (" + product +
                                "): the output is too large for one launch (grid " +
                                std::to_string(grid.x) + " x " + std::to_string(grid.y) + " x " +
                                std::to_string(grid.z) + ", at most 65535 along y and z)");
  }
}

}  // namespace minilora::cuda
