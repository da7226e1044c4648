"""The text a model trains on: a default corpus that ships with Python, or a UTF-8 file.

No function here downloads anything.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from ..errors import TensorcError


class DataError(TensorcError, ValueError):
    """Training data is missing, unreadable, or too short for what was asked of it."""


@lru_cache(maxsize=1)
def default_corpus() -> str:
    """The default training text: Python's own reference documentation, which ships with Python.

    It is built from ``pydoc_data.topics.topics`` (the dict ``help()`` reads its
    topic pages from, keys like ``"assert"`` or ``"typesseq"``): the values in
    sorted order of their keys, joined with one ``"\\n"``. It is fixed by the
    Python version (CPython 3.11: 79 topics, about 465,000 characters of English
    prose and code, nearly all ASCII), deterministic, and needs no download.

    >>> text = default_corpus()
    >>> text.startswith('The "assert" statement')
    True
    >>> len(text) > 100_000
    True
    """
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def load_text(path: str | os.PathLike[str] | None = None) -> str:
    """The text of a UTF-8 file, or :func:`default_corpus` when ``path`` is None.

    Raises :class:`DataError` if the file is missing, unreadable or not UTF-8.

    >>> load_text() == default_corpus()
    True
    >>> load_text("no/such/file.txt")
    Traceback (most recent call last):
      ...
    tensorc.data.corpus.DataError: cannot read training text 'no/such/file.txt': No such file or directory
    """
    if path is None:
        return default_corpus()
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read training text {os.fspath(path)!r}: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"training text {os.fspath(path)!r} is not UTF-8: {e.reason} at byte {e.start} "
                        f"(line {line}); convert it, e.g. with iconv -t utf-8") from None
