"""AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"): Adam's update plus a weight
decay applied to the weights directly rather than added to the gradient, so the decay is not
rescaled by Adam's per-element step size. At step t (counted per parameter, from 1):

    p   = p - lr · weight_decay · p                 decoupled decay
    m   = β1 · m + (1 - β1) · g                     first moment (mean of g)
    v   = β2 · v + (1 - β2) · g²                    second moment (mean of g²)
    m̂   = m / (1 - β1^t),   v̂ = v / (1 - β2^t)      bias correction: m and v start at zero
    p   = p - lr · m̂ / (sqrt(v̂) + eps)

m and v have the parameter's shape: two extra numbers per trainable parameter, the memory that
LoRA saves by training few parameters.
"""

import math

from minilora import backend
from minilora.optim.optimizer import Optimizer, check_number


class AdamW(Optimizer):
    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def check_options(self, group):
        super().check_options(group)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        check_number("betas[0]", betas[0], low=0.0, below=1.0)
        check_number("betas[1]", betas[1], low=0.0, below=1.0)
        check_number("eps", group["eps"], above=0.0)  # eps = 0 divides 0 by 0 where a gradient is 0
        check_number("weight_decay", group["weight_decay"], low=0.0)

    def update(self, p, grad, state, group):
        lr, eps, weight_decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        xp = backend.xp_of(p.data)
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)     # m
            state["exp_avg_sq"] = xp.zeros_like(p.data)  # v
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]

        # Everything in place, through one scratch array: no temporary per arithmetic step, and
        # Python floats as factors, so float32 stays float32. The bias corrections are folded into
        # two scalars: lr · m̂ / (sqrt(v̂) + eps) = (lr / c1) · m / (sqrt(v) / sqrt(c2) + eps).
        c1, c2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
        scratch = xp.multiply(grad, 1.0 - beta1, out=xp.empty_like(m))
        p.data *= 1.0 - lr * weight_decay
        m *= beta1
        m += scratch                      # m = β1·m + (1 - β1)·g
        xp.multiply(grad, grad, out=scratch)
        scratch *= 1.0 - beta2
        v *= beta2
        v += scratch                      # v = β2·v + (1 - β2)·g²
        xp.sqrt(v, out=scratch)
        scratch *= 1.0 / math.sqrt(c2)
        scratch += eps                    # sqrt(v̂) + eps
        xp.divide(m, scratch, out=scratch)
        scratch *= lr / c1
        p.data -= scratch

