"""What every tokenizer offers, and the JSON file format they share.

A tokenizer maps text to a list of integer token ids and back. Both kinds in
:mod:`tensorc.text` (:class:`~tensorc.text.ByteBPETokenizer`,
:class:`~tensorc.text.CharTokenizer`) subclass :class:`Tokenizer` and save
themselves as one JSON object whose ``"type"`` field names the kind and whose
``"version"`` field names the layout, so :func:`tensorc.text.load_tokenizer`
can read any of them back.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..errors import TensorcError

PathLike = str | os.PathLike[str]
T = TypeVar("T", bound="Tokenizer")


class TokenizerError(TensorcError, ValueError):
    """A tokenizer was misused: a character or id outside its vocabulary, a bad or corrupt file."""


class Tokenizer(ABC):
    """The protocol of a tokenizer: ``encode``, ``decode``, ``vocab_size``, ``save``, ``load``.

    Subclasses set ``TYPE`` and ``VERSION`` and implement ``encode``, ``decode``,
    ``vocab_size``, ``to_dict`` and ``from_dict``; saving and loading are shared.
    """

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """The text of a list of token ids."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """The number of token ids: every id is in ``range(vocab_size)``."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The JSON-able state of the tokenizer, including ``"type"`` and ``"version"``."""

    @classmethod
    @abstractmethod
    def from_dict(cls: type[T], state: dict[str, Any]) -> T:
        """A tokenizer from :meth:`to_dict`'s output; raises :class:`TokenizerError` if it is malformed."""

    def save(self, path: PathLike) -> None:
        """Write the tokenizer to ``path`` as JSON (UTF-8)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls: type[T], path: PathLike) -> T:
        """Read a tokenizer that :meth:`save` wrote; raises :class:`TokenizerError` for a bad file."""
        return cls.from_file_state(read_tokenizer_json(path), path)

    @classmethod
    def from_file_state(cls: type[T], state: dict[str, Any], path: PathLike) -> T:
        """:meth:`from_dict` for the JSON object read from ``path`` (errors name the file)."""
        check_header(state, cls.TYPE, cls.VERSION, path)
        try:
            return cls.from_dict(state)
        except TokenizerError as e:
            raise TokenizerError(f"{os.fspath(path)}: {e}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def read_tokenizer_json(path: PathLike) -> dict[str, Any]:
    """The JSON object in a tokenizer file, or a :class:`TokenizerError` that says what is wrong with it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise TokenizerError(f"cannot read tokenizer file {os.fspath(path)!r}: {e.strerror or e}") from None
    try:
        state = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{os.fspath(path)}: not a tokenizer file: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{os.fspath(path)}: not a tokenizer file: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(state, dict):
        raise TokenizerError(f"{os.fspath(path)}: not a tokenizer file: expected a JSON object, found {type(state).__name__}")
    return state


def check_header(state: dict[str, Any], type_: str, version: int, path: PathLike | None = None) -> None:
    """Check the ``"type"`` and ``"version"`` fields of a tokenizer's state."""
    where = f"{os.fspath(path)}: " if path is not None else ""
    if state.get("type") != type_:
        raise TokenizerError(f"{where}expected a tokenizer of type {type_!r}, the file says {state.get('type')!r}")
    if state.get("version") != version:
        raise TokenizerError(f"{where}unsupported {type_} tokenizer version {state.get('version')!r} (this tensorc reads version {version})")


def field(state: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``state[name]``, checked to be present and of type ``kind`` (``bool`` is never an ``int``)."""
    if name not in state:
        raise TokenizerError(f"missing field {name!r}")
    value = state[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int,))):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise TokenizerError(f"field {name!r} should be {want}, found {type(value).__name__}")
    return value
