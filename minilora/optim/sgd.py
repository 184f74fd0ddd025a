"""SGD with momentum and (coupled, L2) weight decay, as PyTorch publishes it:

    g   = grad + weight_decay · p
    buf = momentum · buf + g          (buf = g at the first step)
    p   = p - lr · buf                (p = p - lr · g without momentum)
"""

from minilora.optim.optimizer import Optimizer, check_number


class SGD(Optimizer):
    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def check_options(self, group):
        super().check_options(group)
        check_number("momentum", group["momentum"], low=0.0)
        check_number("weight_decay", group["weight_decay"], low=0.0)

    def update(self, p, grad, state, group):
        lr, momentum, weight_decay = float(group["lr"]), float(group["momentum"]), float(group["weight_decay"])
        if weight_decay != 0.0:
            decayed = p.data * weight_decay  # a fresh array: the gradient itself is never changed
            decayed += grad
            grad = decayed
        if momentum != 0.0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= momentum
                buf += grad
            grad = state["momentum_buffer"]
        p.data -= lr * grad
