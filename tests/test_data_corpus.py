"""TextCorpus: the pydoc texts that ship with Python, split once, cut into (idx, targets) windows."""

import numpy as np
import pytest

from minilora.data import TextCorpus, pydoc_text


def test_pydoc_text_is_there_and_deterministic():
    from pydoc_data.topics import topics

    text = pydoc_text()
    assert text == pydoc_text()
    assert len(text) > 300_000
    assert topics["with"].strip() in text
    # sorted topic order: "assert" comes before "with"
    assert text.index(topics["assert"].strip()) < text.index(topics["with"].strip())


def test_split_is_train_then_val_and_covers_the_text():
    text = "abcdefghij" * 10
    corpus = TextCorpus(text, val_fraction=0.2)
    assert corpus.tokenizer.decode(corpus.ids["train"]) == text[:80]
    assert corpus.tokenizer.decode(corpus.ids["val"]) == text[80:]


def test_batches_are_windows_with_targets_shifted_by_one():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    corpus = TextCorpus(text)
    idx, targets = corpus.get_batch("train", 8, 16, np.random.default_rng(0))
    assert idx.shape == targets.shape == (8, 16) and idx.dtype == np.int64
    np.testing.assert_array_equal(idx[:, 1:], targets[:, :-1])
    train = corpus.tokenizer.decode(corpus.ids["train"])
    for row, nxt in zip(idx, targets):
        window = corpus.tokenizer.decode(row) + corpus.tokenizer.decode(nxt[-1:])
        assert window in train
    again, _ = corpus.get_batch("train", 8, 16, np.random.default_rng(0))
    np.testing.assert_array_equal(idx, again)


def test_val_batches_come_from_the_val_part_only():
    corpus = TextCorpus("a" * 900 + "b" * 100, val_fraction=0.1)
    idx, _ = corpus.get_batch("val", 4, 8, np.random.default_rng(1))
    assert set(corpus.tokenizer.decode(idx.ravel())) == {"b"}


def test_unigram_entropy_against_the_formula():
    corpus = TextCorpus("aaab" * 30 + "ab" * 10, val_fraction=0.1)   # val: the last 14 characters
    counts = np.bincount(corpus.ids["train"])
    p = counts / counts.sum()
    assert corpus.unigram_entropy() == pytest.approx(-(p * np.log(p)).sum(), rel=1e-12)
    # val is "ab" repeated: half and half, entropy log 2
    assert corpus.unigram_entropy("val") == pytest.approx(np.log(2), rel=1e-12)


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(split="test"), ValueError, "split must be one of"),
    (dict(block_size=1000), ValueError, r"block_size must be an int in \[1, 90\) for the train split, got 1000"),
    (dict(block_size=4.0), ValueError, r"block_size must be an int in \[1, 90\) for the train split, got 4.0"),
    (dict(batch_size=-1), ValueError, "batch_size must be a positive int, got -1"),
    (dict(batch_size=2.5), ValueError, "batch_size must be a positive int, got 2.5"),
    (dict(rng=None), TypeError,
     r"rng must be a numpy.random.Generator \(numpy.random.default_rng\(seed\)\), got NoneType"),
])
def test_bad_batch_arguments(kwargs, error, fragment):
    corpus = TextCorpus("x" * 100)
    arguments = dict(split="train", batch_size=2, block_size=4, rng=np.random.default_rng(0)) | kwargs
    with pytest.raises(error, match=fragment):
        corpus.get_batch(**arguments)


def test_bad_corpus_arguments():
    with pytest.raises(ValueError, match="val_fraction must be > 0 and < 1, got 1.0"):
        TextCorpus("abc", val_fraction=1.0)
    with pytest.raises(TypeError, match="val_fraction must be a number, got str '0.1'"):
        TextCorpus("abc", val_fraction="0.1")
    with pytest.raises(ValueError, match="too short"):
        TextCorpus("abc", val_fraction=0.1)
