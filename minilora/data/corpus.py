"""A real text corpus that ships with every Python: the help texts of the `pydoc_data` package.

`help("with")` in the Python shell prints one of these texts; `pydoc_data.topics.topics` holds all
of them, about half a million characters of English prose and code examples. No download, no
file to ship: the same text is there on every CPython install (its exact content varies a little
from one Python version to the next).

    corpus = TextCorpus.from_pydoc()
    idx, targets = corpus.get_batch("train", batch_size=32, block_size=64, rng=rng)   # (32, 64) each

The text is cut once into a training part (the first 90%) and a validation part (the rest), so the
validation loss measures text the model never saw. A window of block_size + 1 characters makes
one example: the model reads the first block_size and must predict each next character, so
targets are the inputs shifted left by one.
"""

import numpy as np

from minilora.checks import check_number
from minilora.data.tokenizer import CharTokenizer
from minilora.nn.checks import positive_int

SPLITS = ("train", "val")


def check_rng(rng):
    """Raise unless rng is a numpy.random.Generator, the one source of every random batch (so a
    seed gives the same batches again)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


def pydoc_text():
    """The pydoc topic texts, in sorted topic order, separated by blank lines (deterministic)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name].strip() for name in sorted(topics)) + "\n"


class TextCorpus:
    """text: a str; val_fraction: the share of the text (taken from its end) held out for validation."""

    def __init__(self, text, val_fraction=0.1):
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        check_number("val_fraction", val_fraction, above=0, below=1)
        self.tokenizer = CharTokenizer.from_text(text)
        ids = self.tokenizer.encode(text)
        n_val = int(len(ids) * val_fraction)
        if n_val < 2 or len(ids) - n_val < 2:
            raise ValueError(f"the text ({len(ids)} characters) is too short to split with val_fraction={val_fraction}")
        self.ids = {"train": ids[:-n_val], "val": ids[-n_val:]}

    @classmethod
    def from_pydoc(cls, val_fraction=0.1):
        return cls(pydoc_text(), val_fraction)

    @property
    def vocab_size(self):
        return self.tokenizer.vocab_size

    def split_ids(self, split):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.ids[split]

    def get_batch(self, split, batch_size, block_size, rng):
        """batch_size random windows of `split` -> (idx, targets), int64 arrays of shape
        (batch_size, block_size); targets[b, t] is the character after idx[b, t].
        rng: a numpy.random.Generator (the batches are reproducible from its seed)."""
        ids = self.split_ids(split)
        positive_int("batch_size", batch_size)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or not 1 <= block_size < len(ids):
            raise ValueError(f"block_size must be an int in [1, {len(ids)}) for the {split} split, got {block_size!r}")
        starts = check_rng(rng).integers(0, len(ids) - block_size, size=batch_size)
        window = starts[:, None] + np.arange(block_size + 1)  # (B, T + 1)
        tokens = ids[window]
        return tokens[:, :-1], tokens[:, 1:]

    def unigram_entropy(self, split="train"):
        """The entropy in nats of the character frequencies of `split`: the loss of a model that
        predicts every character from those frequencies alone, ignoring the context. A model that
        uses the context must get below it."""
        counts = np.bincount(self.split_ids(split), minlength=self.vocab_size)
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())
