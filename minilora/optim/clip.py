"""Gradient clipping by global norm: if the gradients of all parameters, seen as one long vector,
are longer than max_norm, scale them all down by the same factor so that their norm is max_norm.
The direction of the update is kept; only a rare huge step (a loss spike) is shortened."""

import math

from minilora.nn.module import Module
from minilora.optim.optimizer import check_number
from minilora.tensor import Tensor


def clip_grad_norm(params, max_norm):
    """Scale the grads of `params` in place so their total L2 norm is at most max_norm.

    params: an iterable of Tensors (parameters without a grad are ignored).
    max_norm: a number >= 0 (not NaN; inf never clips).
    Returns the total norm before clipping, as a Python float (handy to log).
    """
    if isinstance(params, Tensor):
        params = [params]
    elif isinstance(params, Module):
        raise TypeError("clip_grad_norm needs an iterable of parameters; pass model.parameters()")
    check_number("max_norm", max_norm, low=0.0, allow_inf=True)  # inf: measure the norm, never clip
    grads = [p.grad for p in params if p.grad is not None]
    total = math.sqrt(sum(float((g * g).sum()) for g in grads))
    # The 1e-6 keeps the clipped norm just under max_norm and avoids dividing by zero.
    scale = float(max_norm) / (total + 1e-6)
    if scale < 1.0:
        for g in grads:
            g *= scale
    return total
