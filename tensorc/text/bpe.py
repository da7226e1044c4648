"""Byte-level BPE, as in GPT-2: UTF-8 bytes, merged pair by pair in the order learned.

Text is first split into chunks by a GPT-2-style regular expression (runs of
letters, runs of digits, runs of punctuation, each with at most one leading
space, and whitespace), and merges never cross a chunk boundary. Each chunk's
UTF-8 bytes (ids 0..255) are then merged by the learned merges, lowest rank
first, which is the same as applying the merges one after another in the order
they were learned (not longest match). Special tokens such as
``<|endoftext|>`` get the ids after the merges and are never split.

Because every string is a sequence of bytes, any text encodes, and decoding the
ids gives the text back exactly (a ``str`` holding lone surrogates, which is not
valid Unicode, comes back with ``decode(ids, errors="surrogatepass")``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any, Literal

from .base import Tokenizer, TokenizerError, check_header, field
from .bpe_train import N_BYTES, learn_merges, merge_pair

GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
"""GPT-2's pre-tokenization regex written for the standard ``re`` module.

GPT-2 writes it with the ``regex`` module's ``\\p{L}`` (letters) and ``\\p{N}``
(numbers); here letters are ``[^\\W\\d_]`` (word characters that are not decimal
digits or ``_``) and numbers are ``\\d`` (decimal digits), so the only
difference is that numeric symbols such as ``²`` or ``Ⅻ`` group with letters.
The five alternatives cover every character, so the chunks always join back
into the text.
"""

_CACHE_LIMIT = 1 << 16  # distinct chunks remembered by encode before the cache is cleared
AllowedSpecial = Literal["all", "none"] | Collection[str]


class ByteBPETokenizer(Tokenizer):
    """A byte-level BPE tokenizer: 256 byte tokens, then one token per merge, then the special tokens.

    Train one with :meth:`train` (it returns the tokenizer), or build one from a
    merge list.

    >>> tok = ByteBPETokenizer().train("low lower lowest " * 20, vocab_size=262)
    >>> tok.vocab_size, len(tok.merges), tok.special_tokens
    (262, 5, {'<|endoftext|>': 261})
    >>> [tok.token_to_bytes(i) for i in range(256, 262)]
    [b'lo', b'low', b' low', b' lowe', b'st', b'<|endoftext|>']
    >>> ids = tok.encode(" lowest<|endoftext|>")
    >>> ids, tok.decode(ids)
    ([259, 260, 261], ' lowest<|endoftext|>')
    """

    TYPE = "byte_bpe"
    VERSION = 1

    def __init__(self, merges: Iterable[tuple[int, int]] = (), special_tokens: Iterable[str] = (),
                 pattern: str = GPT2_SPLIT_PATTERN) -> None:
        self._setup(list(merges), list(special_tokens), pattern)

    # ------------------------------------------------------------------------- state

    def _setup(self, merges: list[tuple[int, int]], special_tokens: list[str], pattern: str) -> None:
        token_bytes = [bytes([i]) for i in range(N_BYTES)]
        ranks: dict[tuple[int, int], int] = {}
        for k, pair in enumerate(merges):
            if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                    or not all(isinstance(t, int) and not isinstance(t, bool) for t in pair)):
                raise TokenizerError(f"merge {k} should be a pair of token ids, got {pair!r}")
            a, b = pair
            if not (0 <= a < N_BYTES + k and 0 <= b < N_BYTES + k):
                raise TokenizerError(f"merge {k} {(a, b)} uses an id that does not exist yet (ids so far: 0..{N_BYTES + k - 1})")
            if (a, b) in ranks:
                raise TokenizerError(f"merge {k} {(a, b)} repeats merge {ranks[a, b]}")
            ranks[a, b] = k
            token_bytes.append(token_bytes[a] + token_bytes[b])
        specials: dict[str, int] = {}
        for s in special_tokens:
            if not isinstance(s, str) or not s:
                raise TokenizerError(f"a special token must be a non-empty string, got {s!r}")
            if s in specials:
                raise TokenizerError(f"special token {s!r} is listed twice")
            try:
                token_bytes.append(s.encode("utf-8"))
            except UnicodeEncodeError:
                raise TokenizerError(f"special token {s!r} is not valid Unicode text") from None
            specials[s] = len(token_bytes) - 1
        try:
            compiled = re.compile(pattern)
        except (re.error, TypeError) as e:
            raise TokenizerError(f"bad pre-tokenization pattern {pattern!r}: {e}") from None
        self._merges = [(int(a), int(b)) for a, b in merges]
        self._ranks = ranks
        self._token_bytes = token_bytes
        self._specials = specials
        self._pattern = pattern
        self._split = compiled
        self._special_splitters: dict[frozenset[str], re.Pattern[str]] = {}
        self._cache: dict[str, list[int]] = {}

    @property
    def merges(self) -> list[tuple[int, int]]:
        """The merges in the order learned: merge ``k`` joins its pair into token ``256 + k``."""
        return list(self._merges)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Each special token's id."""
        return dict(self._specials)

    @property
    def pattern(self) -> str:
        """The pre-tokenization regex (merges never cross its chunks)."""
        return self._pattern

    @property
    def vocab_size(self) -> int:
        """``256 + len(merges) + len(special_tokens)``."""
        return len(self._token_bytes)

    def token_to_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (a special token: its UTF-8 text).

        >>> ByteBPETokenizer().token_to_bytes(65)
        b'A'
        """
        if not 0 <= token_id < len(self._token_bytes):
            raise TokenizerError(f"token id {token_id} is out of range for a vocabulary of {self.vocab_size}")
        return self._token_bytes[token_id]

    # ------------------------------------------------------------------------- training

    def train(self, text: str, vocab_size: int, special_tokens: Sequence[str] = ("<|endoftext|>",),
              verbose: bool = False, min_frequency: int = 2) -> ByteBPETokenizer:
        """Learn merges from ``text`` until the vocabulary has ``vocab_size`` tokens; returns ``self``.

        ``vocab_size`` counts the 256 byte tokens and the special tokens. Special
        tokens in ``text`` are cut out before counting, so no merge learns them.
        Training stops early (with a smaller vocabulary) if no adjacent pair
        occurs ``min_frequency`` times.

        >>> tok = ByteBPETokenizer().train("aaabdaaabac", vocab_size=259, special_tokens=())
        >>> tok.merges      # aa, then ab, then (aa)(ab)
        [(97, 97), (97, 98), (256, 257)]
        >>> tok.encode("aaabdaaabac")
        [258, 100, 258, 97, 99]
        """
        special_tokens = list(special_tokens)
        n_merges = vocab_size - N_BYTES - len(special_tokens)
        if n_merges < 0:
            raise TokenizerError(f"vocab_size {vocab_size} is smaller than the {N_BYTES} byte tokens "
                                 f"plus {len(special_tokens)} special tokens")
        pieces = self._special_splitter(frozenset(special_tokens)).split(text) if special_tokens else [text]
        chunk_counts: Counter[str] = Counter()
        for i, piece in enumerate(pieces):
            if i % 2 == 0:  # odd pieces are the special tokens themselves
                chunk_counts.update(self.split_chunks(piece))
        byte_counts = {chunk.encode("utf-8", "surrogatepass"): n for chunk, n in chunk_counts.items()}
        merges = learn_merges(byte_counts, n_merges, min_frequency=min_frequency, verbose=verbose)
        self._setup(merges, special_tokens, self._pattern)
        return self

    # ------------------------------------------------------------------------- encoding

    def split_chunks(self, text: str) -> list[str]:
        """The pre-tokenized chunks of ``text``, which join back into it; no token crosses their boundaries.

        Text that a custom ``pattern`` skips becomes chunks of its own.

        >>> ByteBPETokenizer().split_chunks("Hello, world!  It's 2024...\\n")
        ['Hello', ',', ' world', '!', ' ', ' It', "'s", ' 2024', '...', '\\n']
        """
        if self._pattern == GPT2_SPLIT_PATTERN:  # covers every character, so findall loses nothing
            return self._split.findall(text)
        chunks, pos = [], 0
        for m in self._split.finditer(text):
            if m.start() > pos:
                chunks.append(text[pos:m.start()])
            if m.end() > m.start():
                chunks.append(m.group())
            pos = max(pos, m.end())
        if pos < len(text):
            chunks.append(text[pos:])
        return chunks

    def _special_splitter(self, allowed: frozenset[str]) -> re.Pattern[str]:
        """A regex whose ``split`` keeps the allowed special tokens as the odd pieces (longest first)."""
        splitter = self._special_splitters.get(allowed)
        if splitter is None:
            names = sorted(allowed, key=lambda s: (-len(s), s))
            splitter = re.compile("(" + "|".join(re.escape(s) for s in names) + ")")
            self._special_splitters[allowed] = splitter
        return splitter

    def _encode_chunk(self, chunk: str) -> list[int]:
        """The BPE of one chunk: merge the lowest-rank pair present until none is left (cached)."""
        ids = self._cache.get(chunk)
        if ids is not None:
            return ids
        ids = list(chunk.encode("utf-8", "surrogatepass"))
        ranks = self._ranks
        while len(ids) >= 2:
            best = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, 1 << 62))
            rank = ranks.get(best)
            if rank is None:
                break
            ids = merge_pair(ids, best[0], best[1], N_BYTES + rank)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[chunk] = ids
        return ids

    def encode(self, text: str, allowed_special: AllowedSpecial = "all") -> list[int]:
        """The token ids of ``text``.

        ``allowed_special`` says which special tokens written in the text become
        their ids: ``"all"`` (the default), ``"none"``, or a collection of them;
        any other occurrence is encoded as ordinary text. Lone surrogates (not
        valid Unicode, but possible in a Python ``str``) are encoded as their
        ``surrogatepass`` bytes.

        >>> tok = ByteBPETokenizer(special_tokens=["<|endoftext|>"])
        >>> tok.encode("hi<|endoftext|>")
        [104, 105, 256]
        >>> len(tok.encode("hi<|endoftext|>", allowed_special="none"))
        15
        """
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects a str, got {type(text).__name__}")
        allowed = self._allowed(allowed_special)
        ids: list[int] = []
        pieces = self._special_splitter(allowed).split(text) if allowed else [text]
        extend, cache, encode_chunk = ids.extend, self._cache, self._encode_chunk
        for i, piece in enumerate(pieces):
            if i % 2:
                ids.append(self._specials[piece])
            elif piece:
                for chunk in self.split_chunks(piece):
                    chunk_ids = cache.get(chunk)
                    extend(chunk_ids if chunk_ids is not None else encode_chunk(chunk))
        return ids

    def _allowed(self, allowed_special: AllowedSpecial) -> frozenset[str]:
        if allowed_special == "all":
            return frozenset(self._specials)
        if allowed_special == "none":
            return frozenset()
        if isinstance(allowed_special, str):
            raise TokenizerError(f"allowed_special should be 'all', 'none' or a collection of special tokens, got {allowed_special!r}")
        allowed = frozenset(allowed_special)
        unknown = sorted(allowed - self._specials.keys())
        if unknown:
            raise TokenizerError(f"allowed_special names {unknown}, which are not special tokens of this tokenizer "
                                 f"(it has {sorted(self._specials)})")
        return allowed

    def encode_iter(self, texts: Iterable[str], allowed_special: AllowedSpecial = "all") -> Iterator[list[int]]:
        """:meth:`encode` each text of an iterable, lazily (the chunk cache is shared)."""
        for text in texts:
            yield self.encode(text, allowed_special)

    # ------------------------------------------------------------------------- decoding

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of a sequence of token ids (a special token gives its UTF-8 text).

        >>> ByteBPETokenizer().decode_bytes([226, 130, 172])
        b'\\xe2\\x82\\xac'
        """
        table = self._token_bytes
        ids = list(ids)
        if ids and (min(ids) < 0 or max(ids) >= len(table)):
            bad = next(i for i in ids if not 0 <= i < len(table))
            raise TokenizerError(f"token id {bad} is out of range for a vocabulary of {len(table)}")
        return b"".join([table[i] for i in ids])

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """The text of a sequence of token ids; ``decode(encode(s)) == s`` for every valid string ``s``.

        Byte sequences that are not UTF-8 (a model can emit them) decode by the
        ``errors`` handler of :meth:`bytes.decode`: by default each becomes
        U+FFFD. Pass ``errors="surrogatepass"`` to get back strings holding lone
        surrogates.

        >>> tok = ByteBPETokenizer()
        >>> tok.decode(tok.encode("naïve 🙂 日本"))
        'naïve 🙂 日本'
        >>> tok.decode([226, 130]) == "\\ufffd"    # two of the three bytes of "€"
        True
        """
        return self.decode_bytes(ids).decode("utf-8", errors)

    # ------------------------------------------------------------------------- files

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "version": self.VERSION,
            "vocab_size": self.vocab_size,
            "pattern": self._pattern,
            "merges": [list(pair) for pair in self._merges],
            "special_tokens": dict(self._specials),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ByteBPETokenizer:
        """A tokenizer from :meth:`to_dict`'s output, checked field by field.

        >>> tok = ByteBPETokenizer([(104, 105)], ["<|endoftext|>"])
        >>> ByteBPETokenizer.from_dict(tok.to_dict()).encode("hi<|endoftext|>")
        [256, 257]
        """
        check_header(state, cls.TYPE, cls.VERSION)
        merges = field(state, "merges", list)
        specials = field(state, "special_tokens", dict)
        pattern = field(state, "pattern", str)
        vocab_size = field(state, "vocab_size", int)
        for k, pair in enumerate(merges):
            if not isinstance(pair, list) or len(pair) != 2:
                raise TokenizerError(f"merge {k} should be a list of two token ids, found {pair!r}")
        tok = cls([tuple(pair) for pair in merges], list(specials), pattern)
        if tok.special_tokens != specials:
            raise TokenizerError(f"special token ids {specials} do not follow the merges "
                                 f"(expected {tok.special_tokens})")
        if tok.vocab_size != vocab_size:
            raise TokenizerError(f"vocab_size is {vocab_size}, but 256 bytes + {len(merges)} merges + "
                                 f"{len(specials)} special tokens make {tok.vocab_size}")
        return tok
