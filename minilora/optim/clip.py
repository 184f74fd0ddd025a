"""Gradient clipping by global norm: if the gradients of all parameters, seen as one long vector,
are longer than max_norm, scale them all down by the same factor so that their norm is max_norm.
The direction of the update is kept; only a rare huge step (a loss spike) is shortened."""

import math

import numpy as np

from minilora import backend
from minilora.nn.module import Module
from minilora.optim.optimizer import check_number
from minilora.tensor import Tensor


def clip_grad_norm(params, max_norm):
    """Scale the grads of `params` in place so their total L2 norm is at most max_norm.

    params: an iterable of Tensors (parameters without a grad are ignored).
    max_norm: a number >= 0 (not NaN; inf never clips).
    Returns the total norm before clipping, as a Python float (handy to log).
    Raises ValueError, changing no gradient, when the norm is not finite (a gradient holds inf or
    NaN): no scale repairs that, and scaling by 0 or NaN would spread it to every gradient.
    """
    if isinstance(params, Tensor):
        params = [params]
    elif isinstance(params, Module):
        raise TypeError("clip_grad_norm needs an iterable of parameters; pass model.parameters()")
    check_number("max_norm", max_norm, low=0.0, allow_inf=True)  # inf: measure the norm, never clip
    params = list(params)
    grads = [(i, p.grad) for i, p in enumerate(params) if p.grad is not None]
    total = math.sqrt(sum(_squared_norm(g) for _, g in grads))
    if not math.isfinite(total):
        bad = [i for i, g in grads if not backend.xp_of(g).isfinite(g).all()]
        if bad:
            raise ValueError(f"the gradients hold inf or NaN: the grad of parameter {bad[0]} (shape "
                             f"{params[bad[0]].shape}){f' and {len(bad) - 1} more' if len(bad) > 1 else ''}; "
                             "no clipping can repair them")
        raise ValueError("the gradients' total norm overflows float64 (gradients above about 1e154)")
    # The 1e-6 keeps the clipped norm just under max_norm and avoids dividing by zero.
    scale = float(max_norm) / (total + 1e-6)
    if scale < 1.0:
        for _, g in grads:
            g *= scale
    return total


def _squared_norm(g):
    """Sum of g's squares. float32 squares overflow above 1.8e19, so finite float32 gradients of
    1e20 would give an infinite norm: such a sum is taken again in float64 (only then, since a
    float64 copy of every gradient at every step would double the memory the clipping touches)."""
    with np.errstate(over="ignore"):  # an overflow is caught just below
        total = float((g * g).sum())
    if math.isinf(total) and g.dtype != "float64":
        g = g.astype("float64")
        total = float((g * g).sum())
    return total
