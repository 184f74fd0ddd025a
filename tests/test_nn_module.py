"""Module bookkeeping: registration, replacement, state_dict, to(), freezing, modes, printing."""

import numpy as np
import pytest

import minilora
from minilora import nn


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.second = nn.Linear(4, 2, bias=False)
        self.scale = nn.Parameter(np.ones(2, dtype="float32"))
        self.note = "not a parameter"

    def forward(self, x):
        return self.second(self.norm(self.first(x))) * self.scale


NAMES = ["scale", "first.weight", "first.bias", "norm.weight", "norm.bias", "second.weight"]


def test_assignment_registers_parameters_and_children_in_order():
    model = TwoLayer()
    assert [n for n, _ in model.named_parameters()] == NAMES
    assert [n for n, _ in model.named_children()] == ["first", "norm", "second"]
    assert [n for n, _ in model.named_modules()] == ["", "first", "norm", "second"]
    assert model.children() == [model.first, model.norm, model.second]
    assert model.note == "not a parameter" and "note" not in model._parameters
    assert model.num_parameters() == 2 + 3 * 4 + 4 + 4 + 4 + 4 * 2


def test_parameter_defaults_and_errors():
    p = nn.Parameter(np.zeros(3))
    assert p.requires_grad and p.is_leaf and isinstance(p, minilora.Tensor)
    assert not nn.Parameter(np.zeros(3), requires_grad=False).requires_grad
    with pytest.raises(TypeError, match="floating"):
        nn.Parameter(np.zeros(3, dtype=np.int64))


def test_replacing_a_child_by_assignment_swaps_its_parameters():
    model = TwoLayer()
    old = model.first
    new = nn.Linear(3, 4, bias=False)
    name = "first"
    setattr(model, name, new)  # as minilora.lora swaps layers found by name
    assert model.first is new
    names = [n for n, _ in model.named_parameters()]
    assert "first.bias" not in names and "first.weight" in names
    assert all(p is not old.weight for p in model.parameters())
    assert model.named_children()[0] == ("first", new)  # keeps its place in the order


def test_a_plain_tensor_cannot_silently_replace_a_parameter():
    model = TwoLayer()
    with pytest.raises(TypeError, match="'scale' of TwoLayer, which holds a Parameter"):
        model.scale = minilora.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match="'first' of TwoLayer, which holds a Module"):
        model.first = "a string"
    model.first.bias = None  # emptying a slot is allowed (a layer without bias)
    assert "first.bias" not in [n for n, _ in model.named_parameters()]


def test_module_list_item_replacement_reregisters():
    blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)])
    replacement = nn.Linear(2, 2, bias=False)
    blocks[1] = replacement
    blocks[-1] = nn.Linear(2, 2, bias=False)
    assert blocks[1] is replacement and len(blocks) == 3
    assert [n for n, _ in blocks.named_parameters()] == ["0.weight", "0.bias", "1.weight", "2.weight"]
    assert list(blocks)[1] is replacement and blocks[0:2][1] is replacement
    with pytest.raises(IndexError, match="out of range"):
        blocks[3] = replacement
    with pytest.raises(TypeError, match="holds Modules"):
        blocks[0] = "not a module"


def test_shared_parameter_is_listed_once():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    b.weight = a.weight
    model = nn.ModuleList([a, b])
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "1.bias"]


def test_state_dict_round_trip_copies_values():
    minilora.manual_seed(0)
    source = TwoLayer()
    minilora.manual_seed(1)
    target = TwoLayer()
    state = source.state_dict()
    assert list(state) == NAMES and all(isinstance(v, np.ndarray) for v in state.values())
    assert not np.array_equal(state["first.weight"], target.first.weight.numpy())
    result = target.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for name, p in target.named_parameters():
        np.testing.assert_array_equal(p.numpy(), state[name])
    # Both directions are copies: changing one side leaves the other alone.
    source.first.weight.data[...] = 5.0
    state["first.bias"][...] = 7.0
    assert not np.any(target.first.weight.numpy() == 5.0) and not np.any(target.first.bias.numpy() == 7.0)
    assert not np.any(state["first.weight"] == 5.0)


def test_load_state_dict_reports_every_problem_and_changes_nothing():
    model = TwoLayer()
    before = model.first.weight.numpy().copy()
    state = model.state_dict()
    state["first.weight"] = np.ones((4, 3), dtype="float32")
    del state["norm.bias"]
    state["extra.weight"] = np.zeros(2, dtype="float32")
    state["second.weight"] = np.zeros((3, 4), dtype="float32")
    with pytest.raises(ValueError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert "missing" in message and "norm.bias" in message
    assert "unexpected" in message and "extra.weight" in message
    assert "second.weight" in message and "(2, 4)" in message and "(3, 4)" in message
    np.testing.assert_array_equal(model.first.weight.numpy(), before)


def test_load_state_dict_non_strict_and_dtype_check():
    model = TwoLayer()
    partial = {"first.weight": np.full((4, 3), 0.5, dtype="float32"), "other": np.zeros(1, dtype="float32")}
    result = model.load_state_dict(partial, strict=False)
    assert result.unexpected_keys == ["other"] and "scale" in result.missing_keys
    assert np.all(model.first.weight.numpy() == 0.5)
    with pytest.raises(ValueError, match="float64"):
        model.load_state_dict({"first.weight": np.zeros((4, 3))}, strict=False)  # float64 into float32
    with pytest.raises(TypeError, match="array or a Tensor"):
        model.load_state_dict({**model.state_dict(), "scale": [1.0, 1.0]})


def test_to_dtype_casts_in_place_and_keeps_parameter_objects():
    model = TwoLayer()
    params = model.parameters()
    model.first.weight.grad = np.ones((4, 3), dtype="float32")
    assert model.to(dtype="float64") is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model.first.weight.grad.dtype == np.float64
    y = model(minilora.tensor(np.ones((2, 3))))
    assert y.dtype == np.float64
    with pytest.raises(ValueError, match="float32, float64"):
        model.to(dtype="int64")
    with pytest.raises(ValueError, match="device"):
        model.to(device="tpu")


def test_freezing_stops_gradients_and_counts():
    model = TwoLayer()
    model.first.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) == model.num_parameters() - (12 + 4)
    loss = model(minilora.tensor(np.ones((2, 3), dtype="float32"))).sum()
    loss.backward()
    assert model.first.weight.grad is None and model.second.weight.grad is not None
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(True)
    assert model.num_parameters(trainable_only=True) == model.num_parameters()


def test_train_eval_reach_every_descendant():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.5)))
    assert model.eval() is model
    assert all(not m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    with pytest.raises(TypeError, match="bool"):
        model.train("no")


def test_missing_attribute_and_missing_super_init():
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = TwoLayer().nothing

    class Forgetful(nn.Module):
        def __init__(self):
            self.layer = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="super"):
        Forgetful()


def test_repr_is_a_tree():
    text = repr(TwoLayer())
    assert text.splitlines()[0] == "TwoLayer("
    assert "  (first): Linear(in_features=3, out_features=4, bias=True)" in text
    assert "  (second): Linear(in_features=4, out_features=2, bias=False)" in text
    assert repr(nn.Linear(2, 3)) == "Linear(in_features=2, out_features=3, bias=True)"


def test_parameter_table_rows_and_text():
    model = TwoLayer()
    model.norm.requires_grad_(False)
    table = model.parameter_table()
    assert [(r.module, r.type, r.parameters, r.trainable) for r in table.rows] == [
        ("(root)", "TwoLayer", 2, 2), ("first", "Linear", 16, 16), ("norm", "LayerNorm", 8, 0),
        ("second", "Linear", 8, 8)]
    assert table.total == model.num_parameters() and table.trainable == 26
    text = str(table)
    assert text.splitlines()[-1].split() == ["total", "34", "26"]
