"""Shape, dtype and finiteness of the returned gradients, with a hint read from the wrong shape.

A gradient has exactly its input's shape and dtype. Most wrong shapes come from two slips: a
missing (or extra) transpose, and a broadcast that was not undone. Broadcasting copies an input
along leading axes or along axes of size 1, so the gradient of each copy must be added back into
the one element it came from: summed over those axes.
"""

import numpy as np

from minilora.labs.errors import Failure


def check_gradients(function, gradients, inputs, output_shape=None):
    """Failure unless every gradient has the shape and dtype of its input and only finite values.

    gradients: the student's arrays, in the order of function.gradients; inputs: name -> array;
    output_shape: the forward's output shape (it tells how many axes a broadcast added).
    """
    for name, wrt, grad in zip(function.gradients, function.wrt, gradients):
        expected = inputs[wrt]
        if grad.shape != expected.shape:
            hint = shape_hint(wrt, grad.shape, expected.shape, wrt in function.broadcast, output_shape)
            raise Failure(f"{name} has shape {grad.shape}, expected {expected.shape}, the shape of {wrt}",
                          hints=[hint])
        if grad.dtype != expected.dtype:
            raise Failure(f"{name} is {grad.dtype}, but {wrt} is {expected.dtype}: a gradient has its input's dtype",
                          hints=[_dtype_hint(grad.dtype, expected.dtype)])
        bad = ~np.isfinite(grad)
        if bad.any():
            element = tuple(int(i) for i in np.argwhere(bad)[0])
            raise Failure(f"{name} has {int(bad.sum())} NaN or inf values (the first at element {element})",
                          hints=[("a division by zero or an overflow: is a denominator (a sum, a variance) "
                                  "computed along the right axis?")])


def shape_hint(wrt, got, expected, broadcast, output_shape=None):
    """What a gradient of shape `got` for an input of shape `expected` most likely missed, or None.
    broadcast: whether the forward may have broadcast the input (only then is a missing sum likely);
    output_shape: the forward's output shape, whose leading axes the input was broadcast over."""
    if len(got) >= 2 and got[:-2] == expected[:-2] and got[-2:] == expected[-2:][::-1]:
        return f"{got} is {expected} with the last two axes swapped: a missing or extra transpose?"
    extra = len(got) - len(expected)
    if extra > 0 and got[extra:] == tuple(expected) and all(n == 1 for n in got[:extra]):
        return (f"{got} is {expected} with {extra} more axes of size 1 in front: a sum with keepdims=True keeps "
                f"the summed axes; {wrt} has no such axes, so sum without keepdims")
    if broadcast and extra >= 0 and _broadcasts(expected, got[extra:]):
        ones = tuple(i for i, (e, g) in enumerate(zip(expected, got[extra:])) if e == 1 and g != 1)
        ones_axis = ones[0] if len(ones) == 1 else ones
        if extra == 0:
            return (f"{wrt} has size 1 on axis {ones_axis}, which was broadcast: sum its gradient over that axis "
                    "with keepdims=True")
        added = extra if output_shape is None else max(len(output_shape) - len(expected), extra)
        if extra < added:  # some of the leading axes were summed, not all
            hint = (f"{wrt} is shared across all {added} leading axes of the output {tuple(output_shape)}, so its "
                    f"gradient is summed over every one of them; yours still has {extra} of them: sum over all "
                    f"leading axes at once, axis={tuple(range(added))} of the full product")
        else:
            leading = tuple(range(extra))
            hint = (f"{wrt} was broadcast over the leading axes, so its gradient must be summed over them "
                    f"(axis={leading[0] if extra == 1 else leading})")
        if ones:
            hint += f"; its axis {ones_axis} of size 1 was broadcast too: then sum over it with keepdims=True"
        return hint
    if extra < 0:
        return ("axes are missing: was a sum taken over an axis that the input has? "
                "(keepdims=True keeps a summed axis as size 1)")
    if int(np.prod(got)) == int(np.prod(expected)):
        return "the right number of elements in the wrong layout: a reshape or a transpose is off"
    return None


def _broadcasts(small, big):
    """True when `small` broadcasts to `big` of the same length: every axis equal or 1 in small."""
    return len(small) == len(big) and all(s == b or s == 1 for s, b in zip(small, big))


def _dtype_hint(got, expected):
    if expected == np.float32 and got == np.float64:
        return ("something promoted float32 to float64: np.zeros/np.ones/np.eye without dtype= (they default "
                "to float64; use np.zeros_like or dtype=x.dtype), a np.float64 number, or a NumPy integer such as "
                "a count from .sum() (divide by int(count))")
    return None
