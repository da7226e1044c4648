"""The on-disk compile cache: object code keyed by what produced it.

An entry is one file ``<dir>/<key[:2]>/<key>.bin``: a header (magic, format
version, payload length, SHA-256 of the payload) and the payload (object code
for the host). The key is a SHA-256 over everything the code depends on: the
source (LLVM IR text, which holds every shape and stride), the target, the CPU
name and features, and the versions of tensorc and llvmlite.

- Directory: ``TENSORC_CACHE_DIR`` (or ``tc.config(cache_dir=...)``), else
  ``$XDG_CACHE_HOME/tensorc``, else ``~/.cache/tensorc``. ``off`` turns the
  cache off.
- A truncated or corrupted entry (wrong magic, length or checksum) is never
  loaded: :func:`load` deletes it and reports a miss, so the caller rebuilds.
- Two processes may compile the same program at once: each writes a private
  temporary file in the entry's directory and renames it into place
  (``os.replace`` is atomic on POSIX), so a reader sees a whole entry or none.

>>> import os, tempfile
>>> os.environ["TENSORC_CACHE_DIR"] = tempfile.mkdtemp()
>>> k = key("ir text", "llvm")
>>> load(k) is None
True
>>> store(k, b"object code")
>>> load(k)
b'object code'
>>> del os.environ["TENSORC_CACHE_DIR"]
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path

MAGIC = b"TCCACHE1"
_HEADER = struct.Struct("<8sQ32s")  # magic, payload length, sha256(payload)
stats = {"hits": 0, "misses": 0, "corrupt": 0, "stores": 0}


def cache_dir() -> Path | None:
    """Where entries live, or None when the cache is off (``TENSORC_CACHE_DIR=off``)."""
    from ..config import config

    # tc.config(cache_dir=...) (which also holds TENSORC_CACHE_DIR as read at import), else the variable now
    env = config.get("cache_dir") or os.environ.get("TENSORC_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tensorc"


def key(*parts: str | bytes) -> str:
    """A SHA-256 hex key over ``parts`` (each length-prefixed, so ``("ab", "c") != ("a", "bc")``)."""
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _path(k: str) -> Path | None:
    d = cache_dir()
    return None if d is None else d / k[:2] / f"{k}.bin"


def load(k: str) -> bytes | None:
    """The payload stored under ``k``, or None (missing, cache off, or a damaged entry, which is removed)."""
    path = _path(k)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        stats["misses"] += 1
        return None
    ok = len(data) >= _HEADER.size
    if ok:
        magic, length, digest = _HEADER.unpack_from(data)
        payload = data[_HEADER.size:]
        ok = magic == MAGIC and length == len(payload) and hashlib.sha256(payload).digest() == digest
    if not ok:
        stats["corrupt"] += 1
        try:
            path.unlink()
        except OSError:
            pass
        return None
    stats["hits"] += 1
    return payload


def store(k: str, payload: bytes) -> None:
    """Write ``payload`` under ``k`` atomically; a cache that cannot be written is skipped silently."""
    path = _path(k)
    if path is None:
        return
    blob = _HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest()) + payload
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{k[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:
        return
    stats["stores"] += 1
