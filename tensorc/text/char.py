"""A character-level tokenizer: one id per distinct character, in sorted order."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .base import Tokenizer, TokenizerError, check_header, field


class CharTokenizer(Tokenizer):
    """One token per character of a fixed set (ids in sorted character order), plus an optional ``unk``.

    Build it from a text (its distinct characters) or any iterable of single
    characters. A character outside the set is an error, unless ``unk`` is given:
    then it maps to ``unk``'s id (``unk``'s own id when it is one of the
    characters, else one more id after them), and decodes as ``unk``.

    >>> tok = CharTokenizer("hello world")
    >>> tok.vocab_size, tok.chars
    (8, [' ', 'd', 'e', 'h', 'l', 'o', 'r', 'w'])
    >>> tok.encode("hold"), tok.decode(tok.encode("hold"))
    ([3, 5, 4, 1], 'hold')
    >>> CharTokenizer("abc", unk="?").encode("abz")
    [0, 1, 3]
    """

    TYPE = "char"
    VERSION = 1

    def __init__(self, chars: Iterable[str], unk: str | None = None) -> None:
        charset = set(chars)
        bad = [c for c in charset if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise TokenizerError(f"CharTokenizer takes single characters, got {sorted(map(repr, bad))[:5]}")
        self._itos: list[str] = sorted(charset)
        self._stoi: dict[str, int] = {c: i for i, c in enumerate(self._itos)}
        self._unk = unk
        self._unk_id: int | None = None
        if unk is not None:
            if not isinstance(unk, str) or not unk:
                raise TokenizerError(f"unk must be a non-empty string, got {unk!r}")
            self._unk_id = self._stoi.get(unk, len(self._itos))

    @classmethod
    def from_text(cls, text: str, unk: str | None = None) -> CharTokenizer:
        """The tokenizer of the distinct characters of ``text``.

        >>> CharTokenizer.from_text("banana").chars
        ['a', 'b', 'n']
        """
        return cls(text, unk=unk)

    @property
    def chars(self) -> list[str]:
        """The characters, in id order."""
        return list(self._itos)

    @property
    def unk(self) -> str | None:
        """The stand-in for unknown characters, or None (they are an error)."""
        return self._unk

    @property
    def vocab_size(self) -> int:
        """The number of characters, plus one if ``unk`` is not among them."""
        return len(self._itos) + (self._unk_id == len(self._itos))

    def encode(self, text: str) -> list[int]:
        """The id of each character of ``text``.

        >>> CharTokenizer("ab").encode("abc")
        Traceback (most recent call last):
          ...
        tensorc.text.base.TokenizerError: CharTokenizer.encode: character 'c' (U+0063) at index 2 is not in the vocabulary of 2 characters; build the tokenizer from text that contains it, or pass unk=...
        """
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects a str, got {type(text).__name__}")
        stoi = self._stoi
        if self._unk_id is not None:
            unk_id = self._unk_id
            return [stoi.get(c, unk_id) for c in text]
        try:
            return [stoi[c] for c in text]
        except KeyError:
            i, c = next((i, c) for i, c in enumerate(text) if c not in stoi)
            raise TokenizerError(f"CharTokenizer.encode: character {c!r} (U+{ord(c):04X}) at index {i} is not in the "
                                 f"vocabulary of {len(stoi)} characters; build the tokenizer from text that contains it, "
                                 f"or pass unk=...") from None

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of a sequence of ids (the ``unk`` id gives ``unk``).

        >>> CharTokenizer("ab").decode([1, 0, 1])
        'bab'
        """
        itos = self._itos
        if self._unk_id == len(itos):
            itos = [*itos, self._unk]  # type: ignore[list-item]
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(itos):
                raise TokenizerError(f"token id {i} is out of range for a vocabulary of {len(itos)}")
            out.append(itos[i])
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, "version": self.VERSION, "vocab_size": self.vocab_size,
                "chars": list(self._itos), "unk": self._unk}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> CharTokenizer:
        """A tokenizer from :meth:`to_dict`'s output, checked field by field."""
        check_header(state, cls.TYPE, cls.VERSION)
        chars = field(state, "chars", list)
        unk = state.get("unk")
        if unk is not None and not isinstance(unk, str):
            raise TokenizerError(f"field 'unk' should be a string or null, found {type(unk).__name__}")
        if len(set(chars)) != len(chars) or chars != sorted(chars):
            raise TokenizerError("field 'chars' should list distinct characters in sorted order")
        tok = cls(chars, unk=unk)
        if tok.vocab_size != field(state, "vocab_size", int):
            raise TokenizerError(f"vocab_size is {state['vocab_size']}, but the characters and unk make {tok.vocab_size}")
        return tok
