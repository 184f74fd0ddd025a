"""CharTokenizer: encode/decode round trips and clear errors for what it cannot handle."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora.data import CharTokenizer

ALPHABET = "abcdefgh =.,\n"


def test_ids_follow_the_order_of_chars():
    tok = CharTokenizer("ba.")
    assert tok.vocab_size == 3
    np.testing.assert_array_equal(tok.encode("abba."), [1, 0, 0, 1, 2])
    assert tok.encode("abba.").dtype == np.int64
    assert tok.decode([2, 0, 1]) == ".ba"


def test_from_text_uses_the_sorted_distinct_characters():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == " dehlorw"
    np.testing.assert_array_equal(tok.encode("hello"), [3, 2, 4, 4, 5])


@given(st.text(alphabet=ALPHABET, max_size=50))
def test_round_trip(text):
    tok = CharTokenizer(ALPHABET)
    ids = tok.encode(text)
    assert ids.shape == (len(text),)
    assert tok.decode(ids) == text


def test_decode_accepts_lists_and_arrays_of_any_int_dtype():
    tok = CharTokenizer("xyz")
    assert tok.decode(np.array([2, 1], dtype=np.int32)) == "zy"
    assert tok.decode([]) == ""


def test_decode_accepts_a_tensor_of_ids():
    import minilora

    tok = CharTokenizer("xyz")
    assert tok.decode(minilora.tensor([2, 0, 1])) == "zxy"
    with pytest.raises(TypeError, match="decode needs integer ids, got dtype float32"):
        tok.decode(minilora.tensor([0.0, 1.0]))


def test_unknown_character_is_named_with_its_position():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"cannot encode 'z' at position 2: it is not among the 3 characters"):
        tok.encode("abzc")


def test_out_of_range_id_is_an_error():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"cannot decode id 3: ids must be in \[0, 3\)"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="cannot decode id -1"):
        tok.decode([-1])


@pytest.mark.parametrize("ids, error, fragment", [
    (np.zeros((2, 2), dtype=np.int64), ValueError, "1-D"),
    (np.array([0.0, 1.0]), TypeError, "integer ids"),
])
def test_decode_rejects_bad_arrays(ids, error, fragment):
    with pytest.raises(error, match=fragment):
        CharTokenizer("abc").decode(ids)


@pytest.mark.parametrize("chars, fragment", [
    ("abca", "must not repeat"),
    (["ab", "c"], "single characters"),
    ("", "at least one"),
])
def test_bad_vocabularies_are_rejected(chars, fragment):
    with pytest.raises(ValueError, match=fragment):
        CharTokenizer(chars)


def test_encode_needs_a_str():
    with pytest.raises(TypeError, match="encode needs a str, got bytes"):
        CharTokenizer("ab").encode(b"ab")
