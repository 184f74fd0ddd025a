"""GPT2Tokenizer: byte-level BPE on a tiny vocab.json + merges.txt written here, with expected
ids worked out by hand from the merge ranks, GPT-2's pre-tokenisation on strings whose pieces are
known, every string round-tripping, and (where transformers is installed) the same ids as
transformers' GPT-2 tokenizer on the same files."""

import importlib.util
import json
import re
import sys
import unicodedata

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minilora
from minilora.data import GPT2Tokenizer
from minilora.data.gpt2_tokenizer import LETTERS, NUMBERS, byte_to_unicode, pre_tokenize

# (left, right) in rank order; "Ġ" is the symbol of the space byte.
MERGES = [("h", "e"), ("Ġ", "t"), ("Ġt", "he"), ("l", "l"), ("e", "ll"), ("Ġ", "w"), ("o", "r"),
          ("Ġw", "or"), ("Ġwor", "l"), ("Ġworl", "d"), ("1", "2")]


def tiny_vocab():
    symbols = list(byte_to_unicode().values()) + [a + b for a, b in MERGES] + ["<|endoftext|>"]
    return {s: i for i, s in enumerate(symbols)}


@pytest.fixture
def files(tmp_path):
    vocab_path, merges_path = tmp_path / "vocab.json", tmp_path / "merges.txt"
    vocab_path.write_text(json.dumps(tiny_vocab()), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES), encoding="utf-8")
    return vocab_path, merges_path


@pytest.fixture
def tok(files):
    return GPT2Tokenizer.from_files(*files)


def tokens(tok, text):
    return [tok.decoder[i] for i in tok.encode(text)]


def test_the_byte_table_is_gpt2s():
    table = byte_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"
    assert table[0] == chr(256) and table[0xAD] == "Ń"  # the soft hyphen is the 68th shifted byte
    assert not any(u.isspace() for u in table.values())


def test_bpe_follows_the_merge_ranks(tok):
    assert tokens(tok, "the") == ["t", "he"]                 # (h, e) merges; (t, he) is not a merge
    assert tokens(tok, " the") == ["Ġthe"]                   # he, then Ġt, then Ġt+he
    assert tokens(tok, " world") == ["Ġworld"]               # a chain of five merges
    assert tokens(tok, "hello") == ["he", "ll", "o"]         # (h,e) rank 0 before (l,l) rank 3; (e,ll) never forms
    assert tokens(tok, "1212") == ["12", "12"]               # every occurrence of the best pair at once
    assert tokens(tok, " the world") == ["Ġthe", "Ġworld"]   # the two pieces never merge with each other


def test_unicode_becomes_bytes(tok):
    assert tokens(tok, "é") == ["Ã", "©"]                   # U+00E9 is the two bytes C3 A9
    assert tok.encode("😀") == [tok.encoder[byte_to_unicode()[b]] for b in "😀".encode("utf-8")]


@pytest.mark.parametrize("text, pieces", [
    ("Hello world", ["Hello", " world"]),
    ("I'm here's", ["I", "'m", " here", "'s"]),
    ("they'll've", ["they", "'ll", "'ve"]),
    ("a  b", ["a", " ", " b"]),
    ("x\n\ny", ["x", "\n", "\n", "y"]),
    ("3.14 and 2025!", ["3", ".", "14", " and", " 2025", "!"]),
    ("trailing   ", ["trailing", "   "]),
    ("under_score", ["under", "_", "score"]),
    ("naïve café", ["naïve", " café"]),
    ("(x+y)...", ["(", "x", "+", "y", ")..."]),
    ("Ünïcödé 北京 ١٢٣", ["Ünïcödé", " 北京", " ١٢٣"]),
])
def test_pre_tokenisation_as_gpt2(text, pieces):
    assert pre_tokenize(text) == pieces


def test_where_the_pattern_differs_from_gpt2s():
    """The documented difference: numbers that are not decimal digits count as letters here."""
    assert pre_tokenize("x²") == ["x²"]   # GPT-2's \p{N} would give ["x", "²"]


# Unicode's White_Space property (PropList.txt), which GPT-2's \s matches.
WHITE_SPACE = {*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F,
               0x205F, 0x3000}


def test_the_classes_against_unicode_on_every_code_point():
    """[^\\W\\d_] is \\p{L} plus the Nl and No numbers; \\d is exactly Nd (\\p{N} minus Nl, No);
    Python's \\s is White_Space plus U+001C..U+001F. Nothing else differs."""
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    categories = list(zip(every, map(unicodedata.category, every)))
    letters, numbers = set(re.findall(LETTERS, every)), set(re.findall(NUMBERS, every))
    assert letters == {c for c, cat in categories if cat[0] == "L" or cat in ("Nl", "No")}
    assert numbers == {c for c, cat in categories if cat == "Nd"}
    assert {ord(c) for c in re.findall(r"\s", every)} == WHITE_SPACE | {0x1C, 0x1D, 0x1E, 0x1F}


@given(st.text(max_size=40))
def test_any_text_round_trips(text):
    tok = GPT2Tokenizer(tiny_vocab(), MERGES)
    assert "".join(pre_tokenize(text)) == text
    assert tok.decode(tok.encode(text)) == text


def test_decode_of_half_a_character_gives_the_replacement_character(tok):
    ids = tok.encode("é")
    assert tok.decode(ids[:1]) == "\ufffd"


def test_decode_takes_what_generate_returns(tok):
    ids = tok.encode("hello é")
    assert tok.decode(minilora.tensor(np.array(ids))) == tok.decode(np.array(ids)) == "hello é"
    with pytest.raises(ValueError, match=rf"decode needs a 1-D sequence of ids, got shape \(1, {len(ids)}\)"):
        tok.decode(minilora.tensor(np.array([ids])))


def test_errors(tmp_path, files):
    vocab = tiny_vocab()
    del vocab["Ġ"]
    with pytest.raises(ValueError, match="lacks 1 of the 256 single-byte symbols"):
        GPT2Tokenizer(vocab, [])
    with pytest.raises(ValueError, match=r"merge 0 \('a', 'b'\)"):
        GPT2Tokenizer(tiny_vocab(), [("a", "b")])
    bad = tmp_path / "bad_merges.txt"
    bad.write_text("#version: 0.2\nh e\nhe llo there\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3: expected two symbols"):
        GPT2Tokenizer.from_files(files[0], bad)
    tok = GPT2Tokenizer.from_files(*files)
    with pytest.raises(TypeError, match="encode needs a str"):
        tok.encode(b"bytes")
    with pytest.raises(ValueError, match=r"ids \[9999\] are not in the vocabulary"):
        tok.decode([1, 9999])


HAVE_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


@pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="transformers is not installed (it is never a dependency "
                                                  "of minilora); the ids are compared with it where it is")
def test_the_same_ids_as_transformers(files):
    from transformers import GPT2Tokenizer as HFTokenizer

    ours = GPT2Tokenizer.from_files(*files)
    theirs = HFTokenizer.from_pretrained(str(files[0].parent))  # reads vocab.json and merges.txt there
    for text in ["Hello world", " the world, the hello!", "I'm here's they'll", "x\n\n  y  ", "3.14 and 2025",
                 "naïve café 北京 😀", "under_score (x+y)...", "tab\tand\r\nnewline"]:
        assert ours.encode(text) == theirs.encode(text), text
        assert ours.decode(ours.encode(text)) == theirs.decode(theirs.encode(text)) == text
