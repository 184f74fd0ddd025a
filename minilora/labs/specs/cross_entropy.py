"""Lab 6, cross_entropy: the gradient of the mean cross-entropy, with targets that are ignored.

    p = softmax(logits) along the last axis        kept = targets != ignore_index
    loss = -Σ_kept log p[target] / n,  n = the number of kept targets
    grad_logits = grad·(p - onehot(target)) / n on kept rows, 0 on ignored rows

grad is the gradient of the (scalar) loss, shape (). One case ignores the target -100 (PyTorch's
default, not a class: indexing with it fails), the other a real class, 0 (padding), so a backward
that never looks at ignore_index gives those rows a gradient. Each case ignores some targets and
keeps several, so dividing by every row instead of the kept ones shows.
"""

import numpy as np

from minilora.labs.draw import sizes
from minilora.labs.spec import Case, Lab, LabFunction, Mistake
from minilora.ops.softmax import log_softmax_array


def forward(logits, targets, ignore_index):
    log_p = log_softmax_array(np, logits, axis=-1)
    kept = targets != ignore_index
    picked = np.take_along_axis(log_p, np.where(kept, targets, 0)[..., None], axis=-1)[..., 0]
    return np.asarray(-(picked * kept).sum() / int(kept.sum()), dtype=logits.dtype), {}


def _targets(rng, shape, classes, ignore_index):
    targets = rng.integers(1, classes, size=shape)  # never 0, so that ignoring class 0 below is the only 0s
    flat = targets.reshape(-1)
    ignored = rng.choice(flat.size, size=max(1, flat.size // 3), replace=False)
    flat[ignored] = ignore_index
    return targets


def cases(rng):
    classes, n, batch, time = sizes(rng, 4, low=3, high=9)
    return [Case(f"logits {shape + (classes,)}, targets {shape}, ignore_index {ignore}{why}",
                 {"logits": 2 * rng.standard_normal(shape + (classes,)),
                  "targets": _targets(rng, shape, classes, ignore)},
                 {"ignore_index": ignore})
            for shape, ignore, why in (((n,), -100, ""), ((batch, time), 0, ", two leading axes, class 0 ignored"))]


def _grad(grad, logits, targets, ignore_index, keep_ignored=False, divide_by="kept", onehot=1.0, probs="softmax",
          axis=-1):
    """grad_logits, right by default; each option makes one of the mistakes below."""
    kept = targets != ignore_index
    has_gradient = np.ones(targets.shape, bool) if keep_ignored else kept
    if probs == "softmax":
        p = np.exp(log_softmax_array(np, logits, axis=axis))
    else:
        p = log_softmax_array(np, logits, axis=-1)
    classes = logits.shape[-1]
    hot = (np.arange(classes) == np.where(has_gradient, targets, -1)[..., None]) * onehot
    count = {"kept": kept.sum(), "all": targets.size, "elements": logits.size}[divide_by]
    return grad * (p - hot) * has_gradient[..., None] / count


def _wrong(hint, **mistake):
    return Mistake("grad_logits", lambda **a: _grad(**a, **mistake), hint)


MISTAKES = (
    _wrong("the mean is over the kept targets only: divide by their number, (targets != ignore_index).sum(), "
           "not by every row", divide_by="all"),
    _wrong("rows whose target is ignore_index are not in the loss, so their gradient is 0", keep_ignored=True),
    _wrong("ignore_index is not used: rows whose target is ignore_index are not in the loss, so their gradient "
           "is 0, and the mean divides by the number of kept targets only", keep_ignored=True, divide_by="all"),
    _wrong("the one-hot of the target is missing: d(-log p_t)/dlogits = p - onehot(t)", onehot=0.0),
    _wrong("the mean is over the targets (the rows), not over every logit: divide by the number of kept "
           "targets", divide_by="elements"),
    _wrong("this uses log p where softmax's p belongs: d(-log p_t)/dlogits = p - onehot(t)", probs="log_softmax"),
    _wrong("softmax normalises over the classes, the last axis: p = softmax(logits, axis=-1)", axis=0),
)

LAB = Lab(
    number=6,
    name="cross_entropy",
    title="the mean cross-entropy with ignore_index: grad_logits",
    file_name="lab6_cross_entropy.py",
    functions=(
        LabFunction(name="cross_entropy_backward", arguments=("grad", "logits", "targets", "ignore_index"),
                    gradients=("grad_logits",), wrt=("logits",), forward=forward, make_cases=cases,
                    mistakes=MISTAKES,
                    error_hints=(("out of bounds", "a target equal to ignore_index (-100 here) is not a class: "
                                                   "leave those rows out before indexing with the targets"),)),
    ),
)
