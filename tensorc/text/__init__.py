"""Tokenizers: byte-level BPE (GPT-2 style) and characters, saved and loaded as JSON.

>>> import tensorc.text as text
>>> tok = text.ByteBPETokenizer().train("the cat sat on the mat " * 10, vocab_size=270)
>>> tok.decode(tok.encode("the rat")) == "the rat"
True
>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "tok.json")
>>> tok.save(path)
>>> text.load_tokenizer(path).encode("the rat") == tok.encode("the rat")
True
"""

from __future__ import annotations

import os

from .base import PathLike, Tokenizer, TokenizerError, read_tokenizer_json
from .bpe import GPT2_SPLIT_PATTERN, ByteBPETokenizer
from .char import CharTokenizer

TOKENIZER_TYPES: dict[str, type[Tokenizer]] = {cls.TYPE: cls for cls in (ByteBPETokenizer, CharTokenizer)}
"""Every tokenizer kind, by the ``"type"`` field of its JSON file."""


def load_tokenizer(path: PathLike) -> Tokenizer:
    """Read any tokenizer saved by :meth:`Tokenizer.save`: the file's ``"type"`` field picks the class.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "chars.json")
    >>> CharTokenizer("abc").save(path)
    >>> load_tokenizer(path)
    CharTokenizer(vocab_size=3)
    """
    state = read_tokenizer_json(path)
    kind = state.get("type")
    cls = TOKENIZER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise TokenizerError(f"{os.fspath(path)}: unknown tokenizer type {kind!r} (known: {sorted(TOKENIZER_TYPES)})")
    return cls.from_file_state(state, path)


__all__ = ["GPT2_SPLIT_PATTERN", "TOKENIZER_TYPES", "ByteBPETokenizer", "CharTokenizer", "Tokenizer", "TokenizerError",
           "load_tokenizer"]
