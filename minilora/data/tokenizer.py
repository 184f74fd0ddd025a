"""CharTokenizer: text <-> integer token ids, one id per character.

The first step of the data path: a string becomes an int64 array of ids that the model's token
embedding (wte) looks up, and the ids the model generates become a string again. With characters
as tokens the vocabulary is tiny (tens of symbols) and every id can be read off by eye.

    tok = CharTokenizer.from_text("hello world")   # vocabulary: the sorted distinct characters
    tok.encode("hello")                            # array([3, 2, 4, 4, 5])
    tok.decode([3, 2, 4, 4, 5])                    # 'hello'
"""

import numpy as np

from minilora import backend
from minilora.tensor import Tensor


class CharTokenizer:
    """chars: the vocabulary, a str (or sequence of single characters) without repeats; the
    character chars[i] has id i."""

    def __init__(self, chars):
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"chars must be single characters, got {c!r}")
        repeated = sorted({c for c in chars if chars.count(c) > 1})
        if repeated:
            raise ValueError(f"chars must not repeat a character, got {repeated} more than once")
        if not chars:
            raise ValueError("chars must hold at least one character")
        self.chars = "".join(chars)
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text):
        """The tokenizer whose vocabulary is the sorted distinct characters of `text`."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, text):
        """text (str) -> int64 array of shape (len(text),)."""
        if not isinstance(text, str):
            raise TypeError(f"encode needs a str, got {type(text).__name__}")
        try:
            return np.fromiter((self.stoi[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError:
            position = next(i for i, c in enumerate(text) if c not in self.stoi)
            raise ValueError(f"cannot encode {text[position]!r} at position {position}: it is not among the "
                             f"{self.vocab_size} characters of this tokenizer ({self.chars!r})") from None

    def decode(self, ids):
        """ids: a 1-D sequence or array of ints (NumPy, CuPy, a minilora Tensor, or a list) -> str."""
        ids = id_array(ids)
        bad = [int(i) for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"cannot decode id {bad[0]}: ids must be in [0, {self.vocab_size}) for this tokenizer")
        return "".join(self.chars[i] for i in ids)

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size}, chars={self.chars!r})"


def id_array(ids):
    """Token ids to decode as a 1-D NumPy integer array: from a list, a NumPy or CuPy array, or a
    minilora Tensor (what model.generate returns, one row of it)."""
    if isinstance(ids, Tensor):
        ids = ids.data
    ids = np.asarray(backend.to_numpy(ids) if hasattr(ids, "dtype") else ids)
    if ids.ndim != 1:
        raise ValueError(f"decode needs a 1-D sequence of ids, got shape {ids.shape}; decode rows one by one")
    if ids.size and ids.dtype.kind not in "iu":
        raise TypeError(f"decode needs integer ids, got dtype {ids.dtype}")
    return ids
