"""minilora.optim: optimizers (SGD, AdamW), gradient clipping and the learning-rate schedule.

Optimizers update the raw arrays of parameters in place, under no_grad; see optimizer.py for
parameter groups and state.
"""

from minilora.optim.adamw import AdamW
from minilora.optim.clip import clip_grad_norm
from minilora.optim.optimizer import Optimizer
from minilora.optim.schedule import CosineWithWarmup, cosine_lr
from minilora.optim.sgd import SGD

__all__ = ["SGD", "AdamW", "CosineWithWarmup", "Optimizer", "clip_grad_norm", "cosine_lr"]
