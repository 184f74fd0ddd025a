"""cross_entropy: the language-model loss, from logits and integer targets to one number.

loss = mean over the targets t (those not equal to ignore_index) of -log softmax(logits)[t].
Its gradient with respect to the logits is (softmax - one_hot(t)) / count, zero on ignored rows.
"""

import numpy as np

from minilora.function import Function
from minilora.tensor import Tensor


class CrossEntropy(Function):
    index_inputs = (1,)
    float_inputs = True

    @staticmethod
    def forward(ctx, logits, targets, ignore_index):
        xp = ctx.xp
        ctx.shape = logits.shape
        num_classes = logits.shape[-1]
        logits = logits.reshape(-1, num_classes)  # (N, C)
        targets = targets.reshape(-1)  # (N,)
        valid = xp.ones(targets.shape, dtype=bool) if ignore_index is None else targets != ignore_index
        targets = xp.where(valid, targets, 0)  # any real class on ignored rows; they are masked out below
        count = int(valid.sum())
        rows = xp.arange(len(targets))
        # log softmax without materialising it: with shifted = logits - max, log p[t] is
        # shifted[t] - log Σ exp(shifted); the softmax itself (for the backward) is exp(shifted)
        # normalised in place.
        probs = xp.subtract(logits, logits.max(axis=-1, keepdims=True), out=xp.empty_like(logits))
        picked = probs[rows, targets]  # (N,) shifted logit of each target
        xp.exp(probs, out=probs)
        sums = probs.sum(axis=-1)  # (N,)
        probs /= sums[:, None]
        picked -= xp.log(sums)  # (N,) log-probability of each target
        ctx.save_for_backward(probs, targets, valid)
        ctx.count = count
        # With every target ignored there is nothing to average: the loss is 0 and so is its gradient.
        return -(picked * valid).sum() / max(count, 1)

    @staticmethod
    def backward(ctx, grad):
        probs, targets, valid = ctx.saved
        # (softmax - one_hot(t)) · grad / count on the valid rows, zero on the ignored ones; the
        # row weights go in with the one multiplication that also makes the fresh result array.
        weight = valid * (grad / max(ctx.count, 1))  # (N,)
        grad_logits = ctx.xp.multiply(probs, weight[:, None], out=ctx.xp.empty_like(probs))  # (N, C)
        grad_logits[ctx.xp.arange(len(targets)), targets] -= weight
        return grad_logits.reshape(ctx.shape), None


def cross_entropy(logits, targets, ignore_index=None):
    """Mean negative log-likelihood of `targets` under softmax(logits).

    logits: (..., C) float; targets: (...) integers in [0, C), or equal to ignore_index to leave
    that position out of the mean. Returns a scalar Tensor. If every target is ignored the loss is
    0 (with zero gradient) rather than 0/0 = nan, so a batch that is all padding does no harm.
    """
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(f"cross_entropy needs Tensors, got {type(logits).__name__} and {type(targets).__name__}")
    if logits.ndim == 0:
        raise ValueError("cross_entropy: logits must have a class axis (shape (..., C)), got a scalar")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class indices, got dtype {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: targets must have shape {logits.shape[:-1]} (logits' shape "
                         f"{logits.shape} without the class axis), got {targets.shape}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer, type(None))):
        raise TypeError(f"cross_entropy: ignore_index must be an int or None, got {ignore_index!r}")
    num_classes = logits.shape[-1]
    t = targets.data
    bad = (t < 0) | (t >= num_classes)
    if ignore_index is not None:
        bad &= t != ignore_index
    if bad.any():
        where = np.unravel_index(int(bad.reshape(-1).argmax()), targets.shape)
        allowed = f"[0, {num_classes})" + ("" if ignore_index is None else f" or ignore_index={ignore_index}")
        raise ValueError(f"cross_entropy: target {int(t[where])} at position {tuple(int(i) for i in where)} "
                         f"is out of range: targets must be in {allowed}")
    return CrossEntropy.apply(logits, targets, ignore_index=ignore_index)
