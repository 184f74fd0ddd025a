// Batched matrix products on the CPU GEMM: C[b] = L[b]·R[b] (+ bias on every row), for the
// products of nn.Linear (forward and backward) and attention's q·kᵀ and att·v.
//
// Why not NumPy's matmul: one pool of threads. NumPy's products run on OpenBLAS's threads, the
// fused LoRA op and the compiled elementwise ops on OpenMP's. Each pool keeps its threads
// spinning for a while after its work, so with as many threads as cores the two pools take the
// cores from each other at every switch (a LoRA training step on 2 threads ran slower than on 1).
// With every product of a step here, OpenBLAS's threads sleep all step.
//
// A batch of small products (attention: batch·heads products of T×hd by hd×T) is split over the
// threads, whole products per thread, where OpenBLAS splits each small product over its threads,
// which then wait for each other once per product.
//
// Operands are read through their strides: q·kᵀ with q and k transposed views of (B, T, nh, hd)
// activations is computed without a copy. A batch stride of 0 (np.broadcast_to) repeats an operand.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/isa_arg.h"
#include "cpu/ops.h"

namespace py = pybind11;

namespace minilora {
namespace cpu {
namespace {

// The strides of `a` in elements (NumPy gives them in bytes).
template <typename T>
std::vector<int64_t> element_strides(const py::array& a, const char* name) {
  std::vector<int64_t> strides(a.ndim());
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    if (a.strides(d) % static_cast<py::ssize_t>(sizeof(T)) != 0) {
      throw py::value_error(std::string(name) + " has a stride that is not a whole number of items");
    }
    strides[d] = a.strides(d) / static_cast<py::ssize_t>(sizeof(T));
  }
  return strides;
}

void check_dims(const py::array& a, const char* name, const py::array& C, int64_t rows, int64_t cols) {
  const py::ssize_t nd = C.ndim();
  bool ok = a.ndim() == nd && a.shape(nd - 2) == rows && a.shape(nd - 1) == cols;
  for (py::ssize_t d = 0; ok && d < nd - 2; ++d) ok = a.shape(d) == C.shape(d);
  if (!ok) {
    throw py::value_error(std::string(name) + " must have C's batch shape and (" +
                          std::to_string(rows) + ", " + std::to_string(cols) + ") last");
  }
}

template <typename T>
void matmul_cpu(const py::array_t<T>& L, const py::array_t<T>& R,
                py::array_t<T, py::array::c_style>& C,
                const std::optional<py::array_t<T, py::array::c_style>>& bias,
                const std::string& isa_name) {
  const Isa isa = parse_isa(isa_name);
  const py::ssize_t nd = C.ndim();
  if (nd < 2) throw py::value_error("C must have at least 2 dimensions");
  const int64_t m = C.shape(nd - 2), n = C.shape(nd - 1), k = L.ndim() == nd ? L.shape(nd - 1) : -1;
  check_dims(L, "L", C, m, k);
  check_dims(R, "R", C, k, n);
  if (bias && (bias->ndim() != 1 || bias->shape(0) != n)) throw py::value_error("bias must have shape (n,)");
  const std::vector<int64_t> sL = element_strides<T>(L, "L"), sR = element_strides<T>(R, "R");
  int64_t batch = 1;
  for (py::ssize_t d = 0; d < nd - 2; ++d) batch *= C.shape(d);
  const std::vector<int64_t> batch_shape(C.shape(), C.shape() + nd - 2);
  const T *l = L.data(), *r = R.data(), *b = bias ? bias->data() : nullptr;
  T* c = C.mutable_data();

  py::gil_scoped_release no_gil;
  auto product = [&](int64_t index) {  // C[index] = L[index]·R[index]: unravel the batch index
    int64_t offset_l = 0, offset_r = 0;
    for (int64_t d = nd - 3, rest = index; d >= 0; --d) {
      offset_l += rest % batch_shape[d] * sL[d];
      offset_r += rest % batch_shape[d] * sR[d];
      rest /= batch_shape[d];
    }
    const Product<T> term{{l + offset_l, m, k, sL[nd - 2], sL[nd - 1]},
                          {r + offset_r, k, n, sR[nd - 2], sR[nd - 1]}, T(1)};
    gemm<T>(isa, row_major_out(c + index * m * n, m, n), &term, 1, b);
  };
  if (batch > 1 && m * n * k < kThreadedWork) {
#pragma omp parallel for schedule(static)
    for (int64_t index = 0; index < batch; ++index) product(index);
  } else {
    for (int64_t index = 0; index < batch; ++index) product(index);  // each product threaded
  }
}

template <typename T>
void def_matmul(py::module_& m) {
  m.def("matmul_cpu", &matmul_cpu<T>,
        "C[b] = L[b]·R[b] (+ bias on every row) into preallocated C-contiguous C (..., m, n),\n"
        "L (..., m, k) and R (..., k, n) any strides, batch shapes equal to C's (broadcast first).\n"
        "isa: as for lora_forward_cpu.",
        py::arg("L").noconvert(), py::arg("R").noconvert(), py::arg("C").noconvert(),
        py::arg("bias").noconvert(), py::arg("isa") = "");
}

}  // namespace

void register_matmul(py::module_& m) {
  def_matmul<float>(m);
  def_matmul<double>(m);
}

}  // namespace cpu
}  // namespace minilora
