"""Turning the model's last logits into the next token: greedy, temperature and top-k sampling.

Works on raw arrays (NumPy or CuPy) of shape (B, vocab) and draws from minilora.random, so
`minilora.manual_seed(s)` makes a generated text reproducible.
"""

from minilora import backend, random
from minilora.checks import check_number


def check_options(temperature, top_k):
    check_number("temperature (0 means greedy)", temperature, low=0)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")


def next_token(logits, temperature=1.0, top_k=None):
    """logits: (B, V) array -> (B, 1) int64 array of chosen token ids.

    temperature 0: the argmax. Otherwise sample from softmax(logits / temperature), restricted to
    the top_k largest logits when top_k is given (ties with the k-th are kept; top_k > V means V).
    """
    check_options(temperature, top_k)
    xp = backend.xp_of(logits)
    if temperature == 0:
        return xp.argmax(logits, axis=-1)[:, None].astype("int64")
    # float64: exp of large logits / a small temperature must not overflow or lose the small ones.
    scaled = logits.astype("float64") / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth_largest = xp.sort(scaled, axis=-1)[:, -top_k][:, None]
        scaled = xp.where(scaled < kth_largest, -xp.inf, scaled)
    probs = xp.exp(scaled - scaled.max(axis=-1, keepdims=True))
    cdf = xp.cumsum(probs, axis=-1)                                  # unnormalised, ends at the total
    u = random.rand((logits.shape[0], 1), dtype="float64", device=backend.device_of(logits)) * cdf[:, -1:]
    # The chosen id is the first whose cdf exceeds u; tokens of probability 0 can never be chosen.
    chosen = (cdf <= u).sum(axis=-1, keepdims=True)
    return xp.minimum(chosen, logits.shape[-1] - 1).astype("int64")
