"""All of tensorc's flags, in one place.

Each flag has an environment variable (read once at import) and can be set
for a block of code::

    >>> import tensorc as tc
    >>> with tc.config(debug=2):
    ...     tc.config.get("debug")
    2
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

_DEFAULTS: dict[str, tuple[str, Any, type]] = {
    # name: (environment variable, default, type)
    "debug": ("TENSORC_DEBUG", 0, int),
    "target": ("TENSORC_TARGET", "llvm", str),
    "cache_dir": ("TENSORC_CACHE_DIR", "", str),
    "dump_dir": ("TENSORC_DUMP_DIR", "", str),
    "verify": ("TENSORC_VERIFY", 0, int),
}


def _from_env(name: str) -> Any:
    env, default, kind = _DEFAULTS[name]
    raw = os.environ.get(env)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{env}={raw!r} is not a valid {kind.__name__}") from None


class _Config:
    """Holds current flag values; call it as a context manager to override."""

    def __init__(self) -> None:
        self._values = {name: _from_env(name) for name in _DEFAULTS}

    def get(self, name: str) -> Any:
        if name not in self._values:
            raise KeyError(f"unknown tensorc flag {name!r}; flags: {sorted(self._values)}")
        return self._values[name]

    def set(self, **flags: Any) -> None:
        for name, value in flags.items():
            self.get(name)
            self._values[name] = value

    @contextlib.contextmanager
    def __call__(self, **flags: Any) -> Iterator[None]:
        saved = dict(self._values)
        self.set(**flags)
        try:
            yield
        finally:
            self._values = saved

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.get(name)

    def __repr__(self) -> str:
        return f"tensorc.config({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"


config = _Config()
