"""DoRA against PEFT's `use_dora` Linear layer, in float64: the same W, b, A, B and magnitude give
the same output and the same gradients of x, A, B and m; a fresh adapter's magnitude is the same;
the merged weights agree. Skipped where torch or peft is not installed (neither is a dependency
of minilora; `pip install torch peft` to run these).
"""

import numpy as np
import pytest

import minilora
from minilora.lora import LoRALinear
from minilora.nn import Linear

torch = pytest.importorskip("torch", reason="torch is not installed (only this comparison needs it)")
peft = pytest.importorskip("peft", reason="peft is not installed (only this comparison needs it)")


def peft_dora_layer(W, b, r, alpha, use_rslora=False):
    """PEFT's DoRA layer around a torch Linear holding W (out, in) and b, in float64."""
    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=b is not None, dtype=torch.float64)

    wrapper = Wrapper()
    with torch.no_grad():
        wrapper.lin.weight.copy_(torch.from_numpy(W))
        if b is not None:
            wrapper.lin.bias.copy_(torch.from_numpy(b))
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["lin"], use_dora=True, lora_dropout=0.0,
                             use_rslora=use_rslora)
    model = peft.get_peft_model(wrapper, config)
    return model.base_model.model.lin


def minilora_dora_layer(W, b, r, alpha, use_rslora=False):
    linear = Linear(W.shape[1], W.shape[0], bias=b is not None, dtype="float64")
    linear.weight.data[...] = W
    if b is not None:
        linear.bias.data[...] = b
    return LoRALinear(linear, r=r, alpha=alpha, use_rslora=use_rslora, use_dora=True)


@pytest.mark.parametrize("M, K, N, r, bias, rslora", [(4, 7, 5, 3, True, False), (1, 3, 1, 1, False, False),
                                                     (6, 16, 9, 4, True, True)])
def test_output_and_gradients_equal_peft(rng, M, K, N, r, bias, rslora):
    W, b = rng.standard_normal((N, K)), (rng.standard_normal(N) if bias else None)
    theirs, ours = peft_dora_layer(W, b, r, 6.0, rslora), minilora_dora_layer(W, b, r, 6.0, rslora)
    # a fresh adapter: the magnitude is ‖W‖ per output row in both
    np.testing.assert_allclose(ours.lora_magnitude.numpy(),
                               theirs.lora_magnitude_vector["default"].weight.detach().numpy(), rtol=1e-14, atol=0)
    assert ours.scaling == pytest.approx(theirs.scaling["default"], rel=1e-15)

    A, B, m = rng.standard_normal((r, K)), rng.standard_normal((N, r)), rng.uniform(0.5, 2.0, N)
    with torch.no_grad():
        theirs.lora_A["default"].weight.copy_(torch.from_numpy(A))
        theirs.lora_B["default"].weight.copy_(torch.from_numpy(B))
        theirs.lora_magnitude_vector["default"].weight.copy_(torch.from_numpy(m))
    ours.lora_A.data[...], ours.lora_B.data[...], ours.lora_magnitude.data[...] = A, B, m

    x, dy = rng.standard_normal((M, K)), rng.standard_normal((M, N))
    x_torch = torch.from_numpy(x).requires_grad_(True)
    y_torch = theirs(x_torch)
    (y_torch * torch.from_numpy(dy)).sum().backward()
    x_ours = minilora.tensor(x, requires_grad=True)
    y_ours = ours(x_ours)
    y_ours.backward(dy)

    close = dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y_ours.numpy(), y_torch.detach().numpy(), **close)
    np.testing.assert_allclose(x_ours.grad, x_torch.grad.numpy(), **close)
    np.testing.assert_allclose(ours.lora_A.grad, theirs.lora_A["default"].weight.grad.numpy(), **close)
    np.testing.assert_allclose(ours.lora_B.grad, theirs.lora_B["default"].weight.grad.numpy(), **close)
    np.testing.assert_allclose(ours.lora_magnitude.grad,
                               theirs.lora_magnitude_vector["default"].weight.grad.numpy(), **close)

    # merging: PEFT's merged weight is ours
    theirs.merge()
    ours.merge()
    np.testing.assert_allclose(ours.base.weight.numpy(), theirs.base_layer.weight.detach().numpy(), **close)
