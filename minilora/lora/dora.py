"""DoRA (Liu et al., 2024): split the adapted weight into a magnitude and a direction.

    W' = m ⊙ (W + s·B·A) / ‖W + s·B·A‖        m (out,) trainable, the norm per output row
                                                (over the input axis), A and B as in LoRA

so y = x·W'ᵀ + b = (m / n) ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) + b with n = ‖W + s·B·A‖ (out,): the fused LoRA
op computes the bracket, and one per-column scale m / n turns LoRA into DoRA.

The norm is treated as a constant in the backward ("detached"), as the DoRA paper suggests
(section 4.3: ‖V + ΔV‖ "won't receive any gradient during backpropagation", which saves memory
and time and changes accuracy little) and as PEFT does. So n is computed under no_grad and
gradients reach x, A and B only through the bracket, and m through m / n:
    dm = Σ_rows dy ⊙ (x·Wᵀ + s·u·Bᵀ) / n,   and the LoRA backward runs on dy ⊙ (m / n).

m starts as ‖W + s·B·A‖ of the fresh adapter (‖W‖, since B = 0; PiSSA's start gives the same),
so the layer starts equal to the base layer. With LoRA dropout in training, PEFT's formula is
followed: y = x·Wᵀ + b + (m/n - 1) ⊙ (x̃·Wᵀ) + (m/n) ⊙ s·(x̃·Aᵀ)·Bᵀ with x̃ = dropout(x).

m is saved with the adapter (minilora.lora.files) and in PEFT's files as
`<module>.lora_magnitude_vector` (minilora.lora.peft). Lab 7 (`minilora lab start dora`) has
students write this layer's backward.
"""

from minilora import backend
from minilora import functional as F
from minilora.nn import Parameter
from minilora.quant.linear import NF4Linear
from minilora.tensor import Tensor, no_grad


def frozen_weight(base):
    """What the fused op takes as W: the Linear's weight Tensor, or an NF4Linear's NF4Tensor."""
    return base.weight_nf4 if isinstance(base, NF4Linear) else base.weight


def weight_array(base, dtype=None):
    """W (out, in) as a float array (an NF4 weight dequantized), in `dtype` (default: its own)."""
    if isinstance(base, NF4Linear):
        return base.weight_nf4.dequantize(dtype)
    return base.weight.data if dtype is None else base.weight.data.astype(dtype, copy=False)


def weight_norm(base, adapter, dtype=None):
    """n = ‖W + s·B·A‖ per output row, (out,), an array outside the graph (the detached norm)."""
    return row_norm(_combined(base, adapter, dtype or adapter.lora_A.dtype))


def init_magnitude(base, adapter):
    """Give `adapter` its magnitude m = ‖W + s·B·A‖ (out,), a trainable Parameter."""
    adapter.lora_magnitude = Parameter(weight_norm(base, adapter))


def dora_forward(base, adapter, x, dropout_active):
    """The DoRA layer's output for x (..., in) -> (..., out); see the module docstring."""
    with no_grad():
        norm = Tensor(weight_norm(base, adapter))                                   # (out,), detached
    scale = adapter.lora_magnitude / norm                                           # m / n, (out,)
    weight = frozen_weight(base)
    if not dropout_active:
        y = F.lora_linear(x, weight, adapter.lora_A, adapter.lora_B, adapter.scaling) * scale
        return y if base.bias is None else y + base.bias
    dropped = F.dropout(x, adapter.dropout, True)
    # (m/n - 1)·x̃Wᵀ + (m/n)·s·x̃AᵀBᵀ = (m/n)·(x̃Wᵀ + s·x̃AᵀBᵀ) - x̃Wᵀ
    lora_part = F.lora_linear(dropped, weight, adapter.lora_A, adapter.lora_B, adapter.scaling) * scale
    return base(x) + lora_part - F.linear(dropped, Tensor(weight_array(base, x.dtype)))


def merged_weight(base, adapter, dtype):
    """W' = (m / n) ⊙ (W + s·B·A) row by row, (out, in), computed in `dtype` (float64 for merging)."""
    combined = _combined(base, adapter, dtype)
    magnitude = adapter.lora_magnitude.data.astype(dtype)
    return combined * (magnitude / row_norm(combined))[:, None]


def _combined(base, adapter, dtype):
    """W + s·B·A (out, in) as an array in `dtype`."""
    lora_A, lora_B = adapter.lora_A.data.astype(dtype), adapter.lora_B.data.astype(dtype)
    return weight_array(base, dtype) + adapter.scaling * (lora_B @ lora_A)


def row_norm(matrix):
    """The Euclidean norm of every row of `matrix` (out, in) -> (out,): over the input axis."""
    return backend.xp_of(matrix).sqrt((matrix * matrix).sum(axis=1))
