"""Lab 6: the backward of the cross-entropy loss, with targets that are left out.

The GPT's loss compares its logits with the next token: the mean over positions of -log p[target],
p = softmax(logits). Padding positions are left out by giving them the target ignore_index:

    p = softmax(logits) along the last axis          logits (..., C), targets (...) integers
    kept = (targets != ignore_index)                 n = the number of kept targets
    loss = -(1/n)·Σ over kept positions of log p[target]          a single number

cross_entropy_backward(grad, logits, targets, ignore_index) gets grad = dL/dloss, an array of
shape () (the loss is one number), and returns grad_logits = dL/dlogits, of logits' shape.

Derive it in steps:
  1. For one kept row, with lab 2's softmax Jacobian: d(-log p_t)/dlogits_j = p_j - [j = t].
     The vector [j = t] is the one-hot of the target.
  2. The loss is a mean over the kept rows: each kept row's gradient is divided by n.
  3. Ignored rows are not in the loss at all: their gradient is 0. Careful: ignore_index may be
     -100, which is no class (indexing with it fails), or a real class number, e.g. 0 for padding.
  4. Multiply by grad.

Check your work:

    minilora lab check cross_entropy                         # lab6_cross_entropy.py in this folder
    minilora lab check cross_entropy --file path/to/your/lab6_cross_entropy.py --seed 3
"""

import numpy as np  # noqa: F401 (your code will use it)


def cross_entropy_backward(grad, logits, targets, ignore_index):
    """grad () = dL/dloss, logits (..., C), targets (...) integers, ignore_index an int
    -> grad_logits (..., C)."""
    raise NotImplementedError("TODO: return grad_logits: (p - onehot) / n on kept rows, 0 on ignored ones")
