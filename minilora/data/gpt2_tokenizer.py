"""GPT2Tokenizer: GPT-2's byte-level BPE, from its vocab.json and merges.txt, written from scratch.

    tok = GPT2Tokenizer.from_files("gpt2/vocab.json", "gpt2/merges.txt")
    ids = tok.encode("Hello world")       # [15496, 995] with GPT-2's files
    tok.decode(ids)                       # "Hello world"

Three steps turn text into ids:
1. Pre-tokenise: split the text into pieces with GPT-2's pattern (words with their leading space,
   runs of digits, runs of punctuation, whitespace, and the contractions 's 't 're 've 'm 'll 'd).
   BPE never merges across two pieces.
2. Bytes to symbols: each piece is UTF-8 encoded and each byte becomes one printable character
   (`byte_to_unicode`), so every string, any language or emoji, has a spelling in 256 symbols and
   nothing is ever unknown.
3. BPE: starting from single symbols, repeatedly join the adjacent pair that comes earliest in
   merges.txt (its rank), until no pair of the piece is in the list. Each final symbol string is
   looked up in vocab.json.
decode runs it backwards: ids -> symbol strings -> bytes -> UTF-8 text.

The pattern without the `regex` package. GPT-2's pattern uses the Unicode classes \\p{L} (letters)
and \\p{N} (numbers), which Python's `re` does not have. Here \\p{L} is written [^\\W\\d_] (word
characters that are neither digits nor the underscore) and \\p{N} is \\d. Two things differ, both
rare: numbers that are not decimal digits (Unicode categories Nl and No, such as "²", "½", "Ⅻ")
count as letters here, where GPT-2 counts them as numbers; and Python's \\s also matches the four
separator controls U+001C..U+001F, which are not Unicode White_Space (GPT-2's \\s). Text made of
letters, decimal digits, punctuation, symbols and whitespace is split exactly as GPT-2 splits it.
tests/test_gpt2_tokenizer.py checks the three classes over every code point, and (where
transformers is installed) the ids against transformers' GPT-2 tokenizer.
"""

import json
import os
import re

from minilora.data.tokenizer import id_array

# GPT-2's pre-tokenisation pattern, with \p{L} -> [^\W\d_] and \p{N} -> \d (see above).
LETTERS = r"[^\W\d_]"
NUMBERS = r"\d"
PATTERN = re.compile(
    r"'s|'t|'re|'ve|'m|'ll|'d"                    # English contractions, split off the word
    rf"| ?{LETTERS}+"                              # a word, with the space before it
    rf"| ?{NUMBERS}+"                              # a run of digits, with the space before it
    rf"| ?(?:[^\s\w]|_)+"                          # a run of anything else (\p{{L}}\p{{N}} excluded), ditto
    r"|\s+(?!\S)"                                  # whitespace, leaving the last space for the next word
    r"|\s+"                                        # whitespace at the end of the text
)


def byte_to_unicode():
    """{byte value: one printable character}, GPT-2's table. The printable Latin-1 bytes stand for
    themselves; the other 68 (controls, space, ...) are shifted to code points 256 and up, in order,
    so that no symbol is whitespace or invisible (a space is "Ġ", a newline "Ċ")."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def pre_tokenize(text):
    """The pieces of `text` that BPE works on, in order; "".join(pieces) == text."""
    return PATTERN.findall(text)


class GPT2Tokenizer:
    """Byte-level BPE. vocab: {symbol string: id}; merges: [(left, right)] in rank order."""

    def __init__(self, vocab, merges):
        if not isinstance(vocab, dict) or not vocab:
            raise TypeError(f"vocab must be a non-empty dict {{token string: id}}, got {type(vocab).__name__}")
        ids = list(vocab.values())
        if not all(isinstance(i, int) and i >= 0 for i in ids) or len(set(ids)) != len(ids):
            raise ValueError("vocab ids must be distinct ints >= 0")
        self.byte_to_unicode = byte_to_unicode()
        self.unicode_to_byte = {u: b for b, u in self.byte_to_unicode.items()}
        missing = [u for u in self.byte_to_unicode.values() if u not in vocab]
        if missing:
            raise ValueError(f"vocab lacks {len(missing)} of the 256 single-byte symbols (e.g. {missing[0]!r}); "
                             "byte-level BPE needs all of them so that any text can be encoded")
        self.encoder = dict(vocab)
        self.decoder = {i: s for s, i in vocab.items()}
        self.ranks = {}
        for rank, pair in enumerate(merges):
            if len(pair) != 2 or (pair[0] + pair[1]) not in vocab:
                raise ValueError(f"merge {rank} {pair!r} must be two symbols whose join is in the vocab")
            self.ranks.setdefault(tuple(pair), rank)
        self._cache = {}

    @classmethod
    def from_files(cls, vocab_json, merges_txt):
        """Read GPT-2's vocab.json ({symbol string: id}) and merges.txt (a "#version" line, then one
        "left right" pair per line, earliest merge first)."""
        with open(os.fspath(vocab_json), encoding="utf-8") as f:
            vocab = json.load(f)
        merges = []
        with open(os.fspath(merges_txt), encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\n")
                if not line or (number == 1 and line.startswith("#version")):
                    continue
                pair = line.split(" ")
                if len(pair) != 2:
                    raise ValueError(f"{merges_txt}, line {number}: expected two symbols separated by one "
                                     f"space, got {line!r}")
                merges.append(tuple(pair))
        return cls(vocab, merges)

    @property
    def vocab_size(self):
        return len(self.encoder)

    def bpe(self, symbols):
        """Merge the symbols of one piece (a string of byte symbols) -> a list of vocab strings."""
        if symbols in self._cache:
            return self._cache[symbols]
        parts = list(symbols)
        while len(parts) > 1:
            pairs = [(self.ranks.get(pair, float("inf")), i) for i, pair in enumerate(zip(parts, parts[1:]))]
            rank, first = min(pairs)  # the earliest merge; the leftmost place it occurs
            if rank == float("inf"):
                break
            best = (parts[first], parts[first + 1])
            merged, i = [], 0
            while i < len(parts):  # join every occurrence of the best pair, left to right
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[symbols] = parts
        return parts

    def encode(self, text):
        """str -> list of token ids."""
        if not isinstance(text, str):
            raise TypeError(f"encode needs a str, got {type(text).__name__}")
        ids = []
        for piece in pre_tokenize(text):
            symbols = "".join(self.byte_to_unicode[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[token] for token in self.bpe(symbols))
        return ids

    def decode(self, ids):
        """Token ids -> str. Bytes that are not valid UTF-8 on their own (half of a character, when
        the ids are a slice) become U+FFFD, as in transformers. ids: as CharTokenizer.decode takes them."""
        ids = id_array(ids)
        unknown = [int(i) for i in ids if int(i) not in self.decoder]
        if unknown:
            raise ValueError(f"decode: ids {unknown[:5]} are not in the vocabulary (ids 0..{max(self.decoder)})")
        symbols = "".join(self.decoder[int(i)] for i in ids)
        return bytes(self.unicode_to_byte[u] for u in symbols).decode("utf-8", errors="replace")
