"""Optimizers against the published update rules computed by hand, parameter groups, state,
gradient clipping and the learning-rate schedule."""

import math

import numpy as np
import pytest

import minilora
from minilora import nn, optim


def param(rng, *shape, dtype="float64"):
    return nn.Parameter(rng.standard_normal(shape).astype(dtype))


def run(optimizer, params, grads_per_step):
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.copy()
        optimizer.step()


# ---- SGD ----------------------------------------------------------------------------------------
def test_sgd_with_momentum_and_weight_decay_follows_the_published_rule(rng):
    p = param(rng, 3, 2)
    w = p.numpy().copy()
    grads = [rng.standard_normal((3, 2)) for _ in range(3)]
    lr, momentum, wd = 0.1, 0.9, 0.01
    run(optim.SGD([p], lr=lr, momentum=momentum, weight_decay=wd), [p], [[g] for g in grads])
    buf = None
    for g in grads:
        g = g + wd * w
        buf = g if buf is None else momentum * buf + g
        w = w - lr * buf
    np.testing.assert_allclose(p.numpy(), w, rtol=1e-14, atol=1e-14)


def test_plain_sgd_step(rng):
    p = param(rng, 4)
    w, g = p.numpy().copy(), rng.standard_normal(4)
    optimizer = optim.SGD([p], lr=0.5)
    run(optimizer, [p], [[g]])
    np.testing.assert_allclose(p.numpy(), w - 0.5 * g, rtol=1e-15, atol=1e-15)
    assert optimizer.state_nbytes() == 0  # no momentum, no state


# ---- AdamW --------------------------------------------------------------------------------------
def test_adamw_follows_the_decoupled_rule_with_bias_correction(rng):
    p = param(rng, 2, 3)
    w = p.numpy().copy()
    grads = [rng.standard_normal((2, 3)) for _ in range(3)]
    lr, (b1, b2), eps, wd = 0.05, (0.8, 0.95), 1e-6, 0.1
    run(optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd), [p], [[g] for g in grads])
    m = v = np.zeros((2, 3))
    for t, g in enumerate(grads, start=1):
        w = w - lr * wd * w  # decay the weights themselves, not the gradient
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(p.numpy(), w, rtol=1e-13, atol=1e-13)


def test_adamw_first_step_moves_each_element_by_about_lr(rng):
    # With bias correction, step 1 is lr · g / (|g| + eps): a sign step of size lr.
    p = param(rng, 50)
    w = p.numpy().copy()
    g = rng.choice([-1.0, 1.0], size=50) * rng.uniform(0.5, 2.0, size=50) * 1e-3  # |g| >> eps
    run(optim.AdamW([p], lr=0.01, eps=1e-12, weight_decay=0.0), [p], [[g]])
    np.testing.assert_allclose(w - p.numpy(), 0.01 * np.sign(g), rtol=1e-6)


def test_adamw_keeps_float32_and_two_moments_per_trained_parameter(rng):
    trained, frozen = param(rng, 10, 4, dtype="float32"), param(rng, 6, dtype="float32")
    frozen.requires_grad = False
    optimizer = optim.AdamW([trained, frozen], lr=1e-3)
    before = frozen.numpy().copy()
    run(optimizer, [trained, frozen], [[rng.standard_normal((10, 4)).astype("float32"), None]] * 2)
    assert trained.dtype == np.float32 and optimizer.state[id(trained)]["exp_avg"].dtype == np.float32
    np.testing.assert_array_equal(frozen.numpy(), before)  # grad None: skipped, no state
    assert id(frozen) not in optimizer.state
    assert optimizer.state_nbytes() == 2 * 10 * 4 * 4


# ---- parameter groups ---------------------------------------------------------------------------
def test_param_groups_use_their_own_options_and_fill_in_defaults(rng):
    a, b, c = param(rng, 3), param(rng, 3), param(rng, 3)
    start = [p.numpy().copy() for p in (a, b, c)]
    grads = [rng.standard_normal(3) for _ in range(3)]
    optimizer = optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b, c], "weight_decay": 0.5, "name": "decayed"}],
                          lr=0.01)
    assert optimizer.param_groups[1]["lr"] == 0.01 and optimizer.param_groups[0]["weight_decay"] == 0.0
    run(optimizer, [a, b, c], [grads])
    np.testing.assert_allclose(a.numpy(), start[0] - 0.1 * grads[0], rtol=1e-15, atol=1e-15)
    for p, w, g in ((b, start[1], grads[1]), (c, start[2], grads[2])):
        np.testing.assert_allclose(p.numpy(), w - 0.01 * (g + 0.5 * w), rtol=1e-15, atol=1e-15)
    optimizer.param_groups[0]["lr"] = 0.0  # what a schedule does between steps
    before = a.numpy().copy()
    run(optimizer, [a, b, c], [grads])
    np.testing.assert_array_equal(a.numpy(), before)


def test_zero_grad_clears_every_group(rng):
    a, b = param(rng, 2), param(rng, 2)
    optimizer = optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1)
    a.grad, b.grad = np.ones(2), np.ones(2)
    optimizer.zero_grad()
    assert a.grad is None and b.grad is None


@pytest.mark.parametrize("make, error, message", [
    (lambda p: optim.SGD([p], lr=-0.1), ValueError, "lr must be >= 0"),
    (lambda p: optim.SGD([p], lr="fast"), TypeError, "lr must be a number"),
    (lambda p: optim.SGD([p], lr=0.1, momentum=-1), ValueError, "momentum"),
    (lambda p: optim.SGD([p], lr=0.1, weight_decay=-1), ValueError, "weight_decay"),
    (lambda p: optim.AdamW([p], lr=0.1, betas=(1.0, 0.9)), ValueError, r"betas\[0\] must be in \[0.0, 1.0\)"),
    (lambda p: optim.AdamW([p], lr=0.1, betas=(0.9,)), ValueError, "pair"),
    (lambda p: optim.AdamW([p], lr=0.1, eps=-1e-8), ValueError, "eps"),
    (lambda p: optim.AdamW([p], lr=0.1, eps=0.0), ValueError, r"eps must be > 0.0, got 0.0"),  # 0 / 0 at g = 0
    (lambda p: optim.AdamW([{"params": [p], "lr": -1}], lr=0.1), ValueError, "lr"),
    (lambda p: optim.AdamW([{"params": [p], "learning_rate": 1}], lr=0.1), ValueError, "unknown option"),
    (lambda p: optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1), ValueError, "listed twice"),
    (lambda p: optim.SGD([], lr=0.1), ValueError, "empty"),
    (lambda p: optim.SGD(nn.Linear(2, 2), lr=0.1), TypeError, "model.parameters()"),
    (lambda p: optim.SGD([p, "weight"], lr=0.1), TypeError, "floating Tensor"),
])
def test_bad_options_are_rejected_clearly(make, error, message, rng):
    with pytest.raises(error, match=message):
        make(param(rng, 2))


# ---- optimizer state_dict -------------------------------------------------------------------------
def test_optimizer_state_dict_round_trip_continues_identically(rng):
    grads = [[rng.standard_normal((3, 2)), rng.standard_normal(4)] for _ in range(3)]
    first = [param(rng, 3, 2), param(rng, 4)]
    second = [nn.Parameter(p.numpy().copy()) for p in first]
    opt_a = optim.AdamW([{"params": [first[0]]}, {"params": [first[1]], "lr": 0.02}], lr=0.01)
    run(opt_a, first, grads[:2])
    saved = opt_a.state_dict()
    for p, q in zip(first, second):
        q.data[...] = p.data
    opt_b = optim.AdamW([{"params": [second[0]]}, {"params": [second[1]]}], lr=0.5)
    opt_b.load_state_dict(saved)
    assert opt_b.param_groups[1]["lr"] == 0.02 and opt_b.state[id(second[0])]["step"] == 2
    run(opt_a, first, grads[2:])
    run(opt_b, second, grads[2:])
    for p, q in zip(first, second):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    saved["state"][0]["exp_avg"][...] = 9.0  # the saved state is a copy
    assert not np.any(opt_a.state[id(first[0])]["exp_avg"] == 9.0)
    with pytest.raises(ValueError, match="sizes"):
        optim.AdamW([param(rng, 3, 2)], lr=0.1).load_state_dict(saved)


def adamw_state(rng):
    """An AdamW over two parameters after one step, and its state_dict."""
    params = [param(rng, 3, 2), param(rng, 4)]
    optimizer = optim.AdamW([{"params": [params[0]]}, {"params": [params[1]]}], lr=0.01)
    run(optimizer, params, [[rng.standard_normal((3, 2)), rng.standard_normal(4)]])
    return optimizer, optimizer.state_dict()


@pytest.mark.parametrize("change, error, message", [
    (lambda saved: {"state": saved["state"]}, ValueError, r"the state_dict lacks \['param_groups'\]"),
    (lambda saved: [saved], TypeError, r"needs a dict from Optimizer.state_dict\(\), got list"),
    (lambda saved: {**saved, "state": {5: saved["state"][0]}}, ValueError,
     "parameter index 5; this optimizer has parameters 0 to 1"),
    (lambda saved: {**saved, "state": {"0": saved["state"][0]}}, TypeError,
     r"keys must be parameter indices \(int\), got str '0'"),
    (lambda saved: {**saved, "state": {0: [1.0]}}, TypeError, "the state of parameter 0 must be a dict, got list"),
    (lambda saved: {**saved, "param_groups": None}, TypeError, r"state_dict\['param_groups'\] must be a list"),
    (lambda saved: {**saved, "optimizer": "SGD"}, ValueError, "the state_dict was saved by 'SGD', not by 'AdamW'"),
])
def test_load_state_dict_rejects_a_bad_state_dict_clearly(change, error, message, rng):
    optimizer, saved = adamw_state(rng)
    before = optimizer.state_dict()
    with pytest.raises(error, match=message):
        optimizer.load_state_dict(change(saved))
    assert optimizer.state_dict()["state"][0]["step"] == before["state"][0]["step"] == 1


def test_load_state_dict_refuses_another_optimizers_state(rng):
    _, saved = adamw_state(rng)
    sgd = optim.SGD([{"params": [param(rng, 3, 2)]}, {"params": [param(rng, 4)]}], lr=0.1)
    assert saved["optimizer"] == "AdamW"
    with pytest.raises(ValueError, match="the state_dict was saved by 'AdamW', not by 'SGD'"):
        sgd.load_state_dict(saved)
    # A state_dict saved before the class was recorded is refused by its options instead.
    del saved["optimizer"]
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['betas', 'eps'\] in a saved parameter group of SGD"):
        sgd.load_state_dict(saved)
    assert set(sgd.param_groups[0]) == {"params", "lr", "momentum", "weight_decay"} and sgd.state == {}


def test_load_state_dict_accepts_a_state_dict_without_the_class_name(rng):
    _, saved = adamw_state(rng)
    del saved["optimizer"]  # as state_dict() wrote it before recording the class
    optimizer = optim.AdamW([{"params": [param(rng, 3, 2)]}, {"params": [param(rng, 4)]}], lr=0.5)
    optimizer.load_state_dict(saved)
    assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.state_dict()["state"][1]["step"] == 1


def test_load_state_dict_changes_nothing_when_a_later_group_is_bad(rng):
    optimizer, saved = adamw_state(rng)
    saved["param_groups"][0]["lr"] = 0.5
    saved["param_groups"][1]["eps"] = 0.0
    with pytest.raises(ValueError, match="eps must be > 0.0"):
        optimizer.load_state_dict(saved)
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.01]


# ---- gradient clipping --------------------------------------------------------------------------
def test_clip_grad_norm_scales_all_gradients_together(rng):
    a, b, unused = param(rng, 3, 4), param(rng, 5), param(rng, 2)
    ga, gb = rng.standard_normal((3, 4)) * 3, rng.standard_normal(5) * 3
    a.grad, b.grad = ga.copy(), gb.copy()
    total = optim.clip_grad_norm([a, b, unused], max_norm=1.0)
    expected = math.sqrt((ga ** 2).sum() + (gb ** 2).sum())
    assert isinstance(total, float) and math.isclose(total, expected, rel_tol=1e-12)
    scale = 1.0 / (expected + 1e-6)
    np.testing.assert_allclose(a.grad, ga * scale, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.grad, gb * scale, rtol=1e-12, atol=1e-12)
    assert math.isclose(math.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum()), 1.0, rel_tol=1e-5)
    assert unused.grad is None


def test_clip_grad_norm_leaves_small_gradients_alone(rng):
    p = param(rng, 4, dtype="float32")
    g = np.array([0.1, -0.2, 0.0, 0.2], dtype="float32")
    p.grad = g.copy()
    assert math.isclose(optim.clip_grad_norm([p], 1.0), 0.3, rel_tol=1e-6)
    np.testing.assert_array_equal(p.grad, g)
    assert p.grad.dtype == np.float32
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_grad_norm([p], -1.0)


# ---- learning-rate schedule ---------------------------------------------------------------------
def test_cosine_lr_at_key_steps():
    kw = dict(max_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    assert math.isclose(optim.cosine_lr(0, **kw), 0.1)        # (0 + 1) / 10 of max: never zero
    assert math.isclose(optim.cosine_lr(4, **kw), 0.5)
    assert math.isclose(optim.cosine_lr(9, **kw), 1.0)
    assert math.isclose(optim.cosine_lr(10, **kw), 1.0)       # the top of the cosine
    assert math.isclose(optim.cosine_lr(60, **kw), 0.55)      # halfway: (max + min) / 2
    assert math.isclose(optim.cosine_lr(35, **kw), 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert math.isclose(optim.cosine_lr(110, **kw), 0.1)
    assert math.isclose(optim.cosine_lr(500, **kw), 0.1)
    values = [optim.cosine_lr(s, **kw) for s in range(10, 111)]
    assert all(x >= y for x, y in zip(values, values[1:]))    # decays monotonically
    assert math.isclose(optim.cosine_lr(3, 2.0, 0, 4), 2.0 * 0.5 * (1 + math.cos(math.pi * 3 / 4)))


@pytest.mark.parametrize("args, message", [
    ((-1, 1.0, 10, 100), "step"),
    ((0, -1.0, 10, 100), "max_lr"),
    ((0, 1.0, 10, 5), "total_steps"),
    ((0, 1.0, 1.5, 5), "warmup_steps"),
    ((0, 0.1, 1, 5, 0.2), "min_lr"),
])
def test_cosine_lr_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        optim.cosine_lr(*args)


def test_cosine_with_warmup_sets_each_group_relative_to_its_own_lr(rng):
    optimizer = optim.SGD([{"params": [param(rng, 2)], "lr": 1.0}, {"params": [param(rng, 2)], "lr": 0.1}], lr=1.0)
    scheduler = optim.CosineWithWarmup(optimizer, warmup_steps=4, total_steps=20, min_lr_ratio=0.1)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.25, 0.025])
    for _ in range(3):
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1.0, 0.1])
    for _ in range(100):
        lrs = scheduler.step()
    assert lrs == pytest.approx([0.1, 0.01]) and optimizer.param_groups[1]["lr"] == pytest.approx(0.01)


def test_a_frozen_model_part_gets_no_update_and_no_state(rng):
    minilora.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    model[0].requires_grad_(False)
    frozen = model[0].weight.numpy().copy()
    optimizer = optim.AdamW(model.parameters(), lr=0.1)
    loss = model(minilora.tensor(rng.standard_normal((4, 3)).astype("float32"))).sum()
    loss.backward()
    optimizer.step()
    np.testing.assert_array_equal(model[0].weight.numpy(), frozen)
    assert optimizer.state_nbytes() == 2 * 4 * (3 + 1)  # float32 moments of the last layer only


def test_clip_grad_norm_clips_a_norm_just_above_max_norm(rng):
    # 1.5 times max_norm: a clip that fires only far above max_norm (say at twice) would miss it.
    p = param(rng, 6)
    g = rng.standard_normal(6)
    g *= 1.5 * 2.0 / np.linalg.norm(g)
    p.grad = g.copy()
    assert math.isclose(optim.clip_grad_norm([p], max_norm=2.0), 3.0, rel_tol=1e-12)
    np.testing.assert_allclose(p.grad, g * (2.0 / (3.0 + 1e-6)), rtol=1e-12, atol=1e-15)
    assert math.isclose(float(np.linalg.norm(p.grad)), 2.0, rel_tol=1e-6)


@pytest.mark.parametrize("make, name", [
    (lambda p, v: optim.SGD([p], lr=v), "lr"),
    (lambda p, v: optim.SGD([p], lr=0.1, momentum=v), "momentum"),
    (lambda p, v: optim.SGD([p], lr=0.1, weight_decay=v), "weight_decay"),
    (lambda p, v: optim.AdamW([p], lr=v), "lr"),
    (lambda p, v: optim.AdamW([p], lr=0.1, betas=(v, 0.999)), r"betas\[0\]"),
    (lambda p, v: optim.AdamW([p], lr=0.1, betas=(0.9, v)), r"betas\[1\]"),
    (lambda p, v: optim.AdamW([p], lr=0.1, eps=v), "eps"),
    (lambda p, v: optim.AdamW([p], lr=0.1, weight_decay=v), "weight_decay"),
    (lambda p, v: optim.AdamW([{"params": [p], "lr": v}], lr=0.1), "lr"),
])
def test_nan_options_are_refused(make, name, rng):
    for value in (float("nan"), np.float32("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"{name} must be a finite number"):
            make(param(rng, 2), value)


def test_clip_grad_norm_refuses_nan_and_accepts_inf(rng):
    p = param(rng, 3)
    p.grad = np.array([3.0, 4.0, 0.0])
    with pytest.raises(ValueError, match="max_norm must be a number"):
        optim.clip_grad_norm([p], float("nan"))
    assert optim.clip_grad_norm([p], float("inf")) == 5.0
    np.testing.assert_array_equal(p.grad, [3.0, 4.0, 0.0])


def test_clip_grad_norm_sums_float32_squares_without_overflow():
    # 1e20 is a finite float32, its square (1e40) is not: summed in float32 the norm would be inf.
    p = nn.Parameter(np.zeros(2, dtype="float32"))
    p.grad = np.full(2, 1e20, dtype="float32")
    total = optim.clip_grad_norm([p], max_norm=1.0)
    assert math.isclose(total, math.sqrt(2) * 1e20, rel_tol=1e-6)
    np.testing.assert_allclose(p.grad, [2 ** -0.5] * 2, rtol=1e-6)
    assert p.grad.dtype == np.float32


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_clip_grad_norm_refuses_inf_or_nan_gradients_and_changes_none(bad, rng):
    params = [param(rng, 3), param(rng, 2, 2), param(rng, 2)]
    params[0].grad, params[2].grad = rng.standard_normal(3) * 10, rng.standard_normal(2)
    params[1].grad = np.array([[1.0, bad], [2.0, 3.0]])
    before = [p.grad.copy() for p in params]
    with pytest.raises(ValueError, match=r"the gradients hold inf or NaN: the grad of parameter 1 \(shape \(2, 2\)\)"):
        optim.clip_grad_norm(params, max_norm=1.0)
    for p, g in zip(params, before):
        np.testing.assert_array_equal(p.grad, g)


def test_clip_grad_norm_refuses_a_norm_beyond_float64():
    p = nn.Parameter(np.zeros(2))
    p.grad = np.full(2, 1e200)
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="total norm overflows float64"):
        optim.clip_grad_norm([p], max_norm=1.0)
    np.testing.assert_array_equal(p.grad, [1e200, 1e200])
