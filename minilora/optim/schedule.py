"""The learning-rate schedule GPT training uses: linear warm-up, then cosine decay to a floor.

    lr
    max_lr |    ____
           |   /    ``--.
           |  /          `\\
    min_lr | /              `--.______
           +------------------------------ step
             warmup      total_steps

Warm-up keeps the first steps small while AdamW's second-moment estimates are still poor; the
cosine decay lowers the lr smoothly so training settles instead of bouncing.
"""

import math

from minilora.optim.optimizer import check_number


def cosine_lr(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """The learning rate at `step` (counted from 0).

    step < warmup_steps:           max_lr · (step + 1) / warmup_steps   (never 0: no wasted step)
    warmup_steps <= step < total:  min_lr + (max_lr - min_lr) · (1 + cos(π · progress)) / 2,
                                   progress = (step - warmup_steps) / (total_steps - warmup_steps)
    step >= total_steps:           min_lr (where the cosine has arrived)
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    check_number("max_lr", max_lr, low=0.0)
    check_number("min_lr", min_lr, low=0.0)
    if min_lr > max_lr:
        raise ValueError(f"min_lr ({min_lr}) must not exceed max_lr ({max_lr})")
    for name, value in (("warmup_steps", warmup_steps), ("total_steps", total_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    if total_steps < warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must be >= warmup_steps ({warmup_steps})")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return float(min_lr)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def check_min_lr_ratio(value):
    """Raise unless value is a number in [0, 1]: the floor as a fraction of the peak lr."""
    check_number("min_lr_ratio", value, low=0.0)
    if value > 1:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {value!r}")
    return value


class CosineWithWarmup:
    """Sets every group's lr from cosine_lr, with that group's lr at construction as its max_lr
    and min_lr_ratio · max_lr as its floor (groups keep their ratios to each other).

        scheduler = CosineWithWarmup(optimizer, warmup_steps=100, total_steps=2000)
        for step in range(2000):
            ...; optimizer.step(); scheduler.step()
    """

    def __init__(self, optimizer, warmup_steps, total_steps, min_lr_ratio=0.1):
        check_min_lr_ratio(min_lr_ratio)
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = float(min_lr_ratio)
        self.max_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def step(self):
        """Advance one step and set the groups' lr for it; returns the new lrs."""
        self.last_step += 1
        return self._apply()

    def _apply(self):
        lrs = [cosine_lr(self.last_step, max_lr, self.warmup_steps, self.total_steps,
                         self.min_lr_ratio * max_lr) for max_lr in self.max_lrs]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        return lrs
