// Softmax over the last axis, forward and backward, with attention's scale and causal mask as
// options: the compiled twin of minilora/ops/softmax.py's Softmax and ops/attention.py's
// CausalSoftmax (read those first; the formulas are the same).
//
//     forward:  y = softmax(scale · x) along each row, where a causal row t keeps only columns
//               j <= t (the others get y = 0, as exp(-inf) would give them)
//     backward: dx = scale · y · (g - Σ_j g_j · y_j)
//
// Why it is faster: the NumPy ops (scale, mask, softmax) make about nine passes over the
// (batch, heads, T, T) scores, the largest array of attention, each from memory, on one thread.
// Here a row of T values is read once into L1 for all its passes, masked columns are never
// computed, exp is vector code (fast_exp.h), and the rows are split over the OpenMP threads.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>

#include "cpu/fast_exp.h"
#include "cpu/op_common.h"
#include "cpu/ops.h"

namespace py = pybind11;

namespace minilora {
namespace cpu {
namespace {


template <typename T>
void softmax_forward_cpu(const Array<T>& x, double scale, bool causal, Array<T>& y) {
  if (x.ndim() < (causal ? 2 : 1)) throw py::value_error("x needs a row axis (and a query axis if causal)");
  if (y.size() != x.size()) throw py::value_error("y must have as many values as x");
  const int64_t n = x.shape(x.ndim() - 1), rows = n ? x.size() / n : 0;
  const int64_t queries = causal ? x.shape(x.ndim() - 2) : 1;
  const T s = T(scale);
  const T* in = x.data();
  T* out = y.mutable_data();
  py::gil_scoped_release no_gil;
#pragma omp parallel for schedule(static) if (rows * n >= kThreadedValues)
  for (int64_t i = 0; i < rows; ++i) {
    const T* row = in + i * n;
    T* y_row = out + i * n;
    const int64_t seen = causal ? std::min(n, i % queries + 1) : n;  // columns this row keeps
    T largest = row[0];
    for (int64_t j = 1; j < seen; ++j) largest = std::max(largest, row[j]);
    const T shift = s * largest;  // scale > 0, so the largest of scale·x is scale·largest
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < seen; ++j) {
      const T e = exp_of(s * row[j] - shift);
      y_row[j] = e;
      sum += e;
    }
    const T inv = T(1) / sum;
#pragma omp simd
    for (int64_t j = 0; j < seen; ++j) y_row[j] *= inv;
    for (int64_t j = seen; j < n; ++j) y_row[j] = T(0);
  }
}

template <typename T>
void softmax_backward_cpu(const Array<T>& grad, const Array<T>& y, double scale, Array<T>& dx) {
  if (y.ndim() < 1) throw py::value_error("y must have a last axis");
  if (grad.size() != y.size() || dx.size() != y.size()) {
    throw py::value_error("grad and dx must have as many values as y");
  }
  const int64_t n = y.shape(y.ndim() - 1), rows = n ? y.size() / n : 0;
  const T s = T(scale);
  const T *g = grad.data(), *yy = y.data();
  T* out = dx.mutable_data();
  py::gil_scoped_release no_gil;
#pragma omp parallel for schedule(static) if (rows * n >= kThreadedValues)
  for (int64_t i = 0; i < rows; ++i) {
    const T *gi = g + i * n, *yi = yy + i * n;
    T dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < n; ++j) dot += gi[j] * yi[j];
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[i * n + j] = s * yi[j] * (gi[j] - dot);
  }
}

template <typename T>
void def_softmax(py::module_& m) {
  m.def("softmax_forward_cpu", &softmax_forward_cpu<T>,
        "y = softmax(scale · x) over the last axis of x, into preallocated y; with causal, row t "
        "of each (T, n) matrix keeps columns j <= t only (y = 0 elsewhere). scale > 0.",
        py::arg("x").noconvert(), py::arg("scale"), py::arg("causal"), py::arg("y").noconvert());
  m.def("softmax_backward_cpu", &softmax_backward_cpu<T>,
        "dx = scale · y · (grad - Σ grad · y) over the last axis, into preallocated dx.",
        py::arg("grad").noconvert(), py::arg("y").noconvert(), py::arg("scale"),
        py::arg("dx").noconvert());
}

}  // namespace

void register_softmax(py::module_& m) {
  def_softmax<float>(m);
  def_softmax<double>(m);
}

}  // namespace cpu
}  // namespace minilora
