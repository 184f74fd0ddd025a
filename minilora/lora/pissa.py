"""PiSSA (Meng et al., 2024): start the adapter from W's principal singular vectors.

    W = U·S·Vᵀ                          (its SVD, singular values in decreasing order)
    B = U_r·√(S_r / s)   (out, r)       A = √(S_r / s)·V_rᵀ   (r, in)       with s the scaling
    W_res = W − s·B·A = W − U_r·S_r·V_rᵀ  (the rest of W stays frozen in the base layer)

so s·B·A is the best rank-r approximation of W (Eckart-Young), and W_res + s·B·A = W: the layer's
function is unchanged at the start (up to rounding), unlike LoRA's B = 0 start, where the update
is zero but the trained directions are random. Training then moves the principal part, the
directions along which W acts most, while the residual stays frozen. The factors are computed in
float64 and rounded once to the layer's dtype. (Dividing S_r by s is PEFT's convention, so that
the *scaled* product equals the principal part for any alpha.)
"""

import numpy as np

from minilora import backend


def pissa_factors(weight, r, scaling):
    """(lora_A (r, in), lora_B (out, r), residual (out, in)) for W = `weight` (out, in), an array.

    In float64 NumPy; the caller rounds them to its dtype. s·B·A + residual = W up to rounding.
    """
    W = backend.to_numpy(weight).astype(np.float64)
    U, S, Vt = np.linalg.svd(W, full_matrices=False)
    root = np.sqrt(S[:r] / scaling)                       # (r,)
    lora_A = root[:, None] * Vt[:r]                        # (r, in)
    lora_B = U[:, :r] * root                               # (out, r)
    residual = W - scaling * (lora_B @ lora_A)
    return lora_A, lora_B, residual


def pissa_init(base, adapter):
    """Overwrite `adapter`'s A and B with W's principal factors and put the residual into the
    `base` Linear's weight, in place (the adapter must be for this layer, with its r and scaling)."""
    weight = base.weight
    lora_A, lora_B, residual = pissa_factors(weight.data, adapter.r, adapter.scaling)
    xp = backend.xp_of(weight.data)
    adapter.lora_A.data = xp.asarray(lora_A, dtype=weight.dtype)
    adapter.lora_B.data = xp.asarray(lora_B, dtype=weight.dtype)
    weight.data = xp.asarray(residual, dtype=weight.dtype)
