"""The autograd engine: graph walk, accumulation, no_grad, detach, errors, and making tensors."""

import numpy as np
import pytest

import minilora
from minilora.backend import to_numpy
from minilora.function import Function


def test_tensor_factory_dtypes(device):
    assert minilora.tensor([1.0, 2.0], device=device).dtype == np.float32
    assert minilora.tensor([1, 2], device=device).dtype == np.int64
    assert minilora.tensor(np.zeros(3), device=device).dtype == np.float64
    assert minilora.tensor([1.0], dtype="float64", device=device).dtype == np.float64
    assert minilora.tensor([1.0], device=device).device == device


def test_tensor_owns_its_data():
    array = np.ones(3)
    t = minilora.tensor(array)
    array[0] = 5.0
    assert t.numpy()[0] == 1.0


def test_reused_input_gets_both_contributions(make):
    x = make.randn(3, 4)
    y = x * x + x  # x appears three times
    y.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), 2 * x.numpy() + 1, rtol=1e-12, atol=1e-12)


def test_diamond_graph(make):
    x = make.randn(5)
    a = x * 2.0
    b = x.exp()
    (a * b).sum().backward()
    xv = x.numpy()
    np.testing.assert_allclose(to_numpy(x.grad), 2 * np.exp(xv) + 2 * xv * np.exp(xv), rtol=1e-12, atol=1e-12)


def test_grad_accumulates_across_backward_calls(make):
    x = make.randn(4)
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), 3.0 + 2 * x.numpy(), rtol=1e-12, atol=1e-12)


def test_backward_with_explicit_gradient(make):
    x = make.randn(2, 3)
    g = make.randn(2, 3, requires_grad=False)
    (x * 4.0).backward(g)
    np.testing.assert_allclose(to_numpy(x.grad), 4.0 * g.numpy(), rtol=1e-12, atol=1e-12)


def test_leaf_grads_are_separate_writable_arrays(make):
    a, b = make.randn(3), make.randn(3)
    (a + b).sum().backward()  # add hands the same gradient array to both sides
    assert a.grad is not b.grad
    a.grad *= 10.0  # must not raise (read-only broadcast view) nor change b.grad
    np.testing.assert_array_equal(to_numpy(b.grad), np.ones(3))
    np.testing.assert_array_equal(to_numpy(a.grad), np.full(3, 10.0))


def test_zero_dimensional_results_are_arrays(make):
    x = make.randn(3)
    s = x.sum()
    assert s.shape == () and hasattr(s.data, "shape") and s.data.ndim == 0
    s.backward()
    assert x.grad.shape == (3,)


def test_no_grad_records_nothing(make):
    x = make.randn(3)
    with minilora.no_grad():
        assert not minilora.is_grad_enabled()
        y = x * 2.0
    assert minilora.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_restores_state_after_an_error():
    with pytest.raises(KeyError):
        with minilora.no_grad():
            raise KeyError("boom")
    assert minilora.is_grad_enabled()


def test_detach_cuts_the_graph(make):
    x = make.randn(4)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    (d * x).sum().backward()  # only the non-detached factor sends a gradient
    np.testing.assert_allclose(to_numpy(x.grad), x.numpy(), rtol=1e-12, atol=1e-12)


def test_requires_grad_propagation(make):
    x = make.randn(3)
    c = make.randn(3, requires_grad=False)
    assert (x + c).requires_grad
    assert (c * x).requires_grad
    assert not (c + c).requires_grad
    assert not (c + c)._ctx


def test_only_leaves_get_grad(make):
    x = make.randn(3)
    h = x * 2.0
    h.sum().backward()
    assert h.grad is None
    np.testing.assert_array_equal(to_numpy(x.grad), np.full(3, 2.0))


def test_constant_inputs_get_no_grad(make):
    x = make.randn(3)
    c = make.randn(3, requires_grad=False)
    (x * c).sum().backward()
    assert c.grad is None


def test_backward_on_non_scalar_needs_a_gradient(make):
    y = make.randn(2, 3) * 2.0
    with pytest.raises(RuntimeError, match=r"non-scalar.*\(2, 3\)"):
        y.backward()


def test_backward_on_tensor_without_grad(make):
    with pytest.raises(RuntimeError, match="does not require grad"):
        make.randn(3, requires_grad=False).sum().backward()


def test_backward_gradient_of_wrong_shape(make):
    y = make.randn(2, 3) * 2.0
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        y.backward(np.ones((3, 2)))


def test_mixing_dtypes_names_both(device):
    a = minilora.tensor([1.0, 2.0], dtype="float32", device=device, requires_grad=True)
    b = minilora.tensor([1.0, 2.0], dtype="float64", device=device)
    with pytest.raises(TypeError) as info:
        a + b
    assert "float32" in str(info.value) and "float64" in str(info.value)


@pytest.mark.gpu
def test_mixing_devices_names_both(cuda_device):
    a = minilora.tensor([1.0, 2.0], device="cpu")
    b = minilora.tensor([1.0, 2.0], device=cuda_device)
    with pytest.raises(ValueError) as info:
        a * b
    assert "cpu" in str(info.value) and "cuda" in str(info.value)


@pytest.mark.gpu
def test_to_moves_between_devices(cuda_device):
    x = minilora.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = x.to(cuda_device)
    assert y.device == "cuda" and y.requires_grad
    np.testing.assert_array_equal(y.to("cpu").numpy(), x.numpy())


def test_deep_graph_has_no_recursion_limit(make):
    x = make.randn(2)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), np.full(2, 1.0001 ** 5000), rtol=1e-9)


def test_integer_tensors_cannot_require_grad(device):
    with pytest.raises(TypeError, match="floating"):
        minilora.tensor([1, 2], requires_grad=True, device=device)
    with pytest.raises(TypeError, match="floating"):
        minilora.tensor([1, 2], device=device).requires_grad_()


def test_integer_ops_do_not_require_grad(make):
    idx = make.ints(5, 4)
    assert not (idx + 1).requires_grad
    assert (idx + 1).dtype == np.int64


def test_float_scalar_with_integer_tensor_is_an_error(make):
    with pytest.raises(TypeError, match="int64"):
        make.ints(5, 3) * 0.5


def test_python_numbers_take_the_tensor_dtype(device):
    x = minilora.tensor([1.0, 2.0], device=device, requires_grad=True)
    for y in (x * 2.5, 2.5 * x, x + 1, 1 - x, x / 3, 3 / x, x ** 2, -x):
        assert y.dtype == np.float32


def test_a_backward_that_returns_the_wrong_shape_is_caught(make):
    class Broken(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad.sum(axis=0)

    x = make.randn(3, 2)
    with pytest.raises(RuntimeError, match=r"Broken.backward returned a gradient of shape \(2,\)"):
        Broken.apply(x).sum().backward()


def test_item_numpy_tolist(device):
    t = minilora.tensor([[1.5, 2.5]], device=device)
    assert t.numpy().shape == (1, 2) and isinstance(t.numpy(), np.ndarray)
    assert t.tolist() == [[1.5, 2.5]]
    assert t[0, 1].item() == 2.5
    with pytest.raises(ValueError, match="one element"):
        t.item()


def test_to_dtype_casts_and_cuts_the_graph(make):
    x = make.randn(3)
    y = (x * 2.0).to(dtype="float32")
    assert y.dtype == np.float32 and y.is_leaf and y.requires_grad


def test_comparisons_give_boolean_masks(make):
    x = make.randn(5)
    mask = x > 0
    assert mask.dtype == np.bool_ and not mask.requires_grad
    np.testing.assert_array_equal(mask.numpy(), x.numpy() > 0)
    np.testing.assert_array_equal((x <= 0.5).numpy(), x.numpy() <= 0.5)


def test_equality_gives_masks_and_tensors_stay_hashable_by_identity(make):
    x = make.randn(4)
    y = minilora.tensor(x.numpy().copy())
    y.data[2] += 1
    np.testing.assert_array_equal((x == y).numpy(), [True, True, False, True])
    np.testing.assert_array_equal((x != y).numpy(), [False, False, True, False])
    np.testing.assert_array_equal((minilora.tensor([1.0, 2.0]) == 1).numpy(), [True, False])
    assert len({x, y, x}) == 2 and {x: "x"}[x] == "x"


def test_truth_value_is_the_one_element_s_and_ambiguous_for_more():
    """Python would take len() for the truth of an object without __bool__: [0.0] > 1 was True."""
    assert not (minilora.tensor([0.0]) > 1) and (minilora.tensor(2.0) > 1)
    assert bool(minilora.tensor([[3]])) and not minilora.tensor(0.0)
    with pytest.raises(ValueError, match=r"the truth value of a tensor of shape \(2,\) is ambiguous"):
        bool(minilora.tensor([0.0, 0.0]) > 1)
    with pytest.raises(ValueError, match=r"shape \(0,\) is ambiguous"):
        bool(minilora.tensor(np.zeros(0)))
    with pytest.raises(TypeError, match=r"len\(\) of a 0-d tensor"):
        len(minilora.tensor(1.0))


def test_creation_functions(device):
    z = minilora.zeros(2, 3, device=device)
    o = minilora.ones((4,), dtype="float64", device=device, requires_grad=True)
    assert z.shape == (2, 3) and z.dtype == np.float32 and not z.numpy().any()
    assert o.shape == (4,) and o.dtype == np.float64 and o.requires_grad and (o.numpy() == 1).all()
    a = minilora.arange(5, device=device)
    assert a.dtype == np.int64 and a.tolist() == [0, 1, 2, 3, 4]
    assert minilora.arange(1, 2, 0.5, device=device).tolist() == [1.0, 1.5]


def test_randn_is_reproducible_with_manual_seed(device):
    minilora.manual_seed(123)
    first = minilora.randn(3, 4, device=device)
    minilora.manual_seed(123)
    second = minilora.randn((3, 4), device=device)
    third = minilora.randn(3, 4, device=device, dtype="float64", requires_grad=True)
    np.testing.assert_array_equal(first.numpy(), second.numpy())
    assert first.dtype == np.float32 and third.dtype == np.float64 and third.requires_grad
    assert not np.array_equal(first.numpy(), third.numpy().astype(np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        minilora.randn(2, dtype="int64", device=device)


@pytest.mark.parametrize("data, error, message", [
    (None, TypeError, r"needs numbers or bools, got NoneType None"),
    ("abc", TypeError, r"needs numbers or bools, got str 'abc'"),
    ([1.0, "x"], TypeError, r"needs numbers or bools"),
    (1 + 2j, TypeError, r"needs numbers or bools, got complex"),
    (np.array(["a"]), TypeError, r"dtype <U1"),
    (2 ** 70, ValueError, r"an int is too large for int64"),
    ([[1.0], [2.0, 3.0]], ValueError, r"rectangular nested list"),
])
def test_only_numeric_data_makes_a_tensor(data, error, message):
    with pytest.raises(error, match=message):
        minilora.tensor(data)


def test_a_non_numeric_dtype_or_an_overflowing_value_is_refused():
    with pytest.raises(TypeError, match="dtype must be a numeric or bool dtype"):
        minilora.tensor([1, 2], dtype="U3")
    with pytest.raises(ValueError, match="does not fit in int8"):
        minilora.tensor([1000], dtype="int8")
    assert minilora.tensor(2 ** 70, dtype="float64").item() == 2.0 ** 70  # as a float it fits


@pytest.mark.parametrize("other", [None, "abc", {}, np.array(["a"]), [None]])
def test_operators_refuse_operands_that_are_not_numbers(device, other):
    t = minilora.tensor([1.0, 2.0], device=device)
    for op in (lambda: t + other, lambda: other + t, lambda: t * other, lambda: t - other, lambda: t / other):
        with pytest.raises(TypeError, match="operand must be a Tensor, a number or a numeric array|needs numbers"):
            op()


def test_a_python_int_too_large_for_an_integer_tensor_is_refused(device):
    with pytest.raises(ValueError, match="does not fit in the tensor's dtype int64"):
        minilora.tensor([1, 2], device=device) + 2 ** 70
    np.testing.assert_array_equal((minilora.tensor([1, 2], device=device) + [3, 4]).numpy(), [4, 6])
