"""Cutting a token stream into training and evaluation windows.

A language model learns to predict token ``t + 1`` from tokens ``..t``, so a
window of ``T + 1`` consecutive tokens gives an input row ``x`` (the first
``T``) and a target row ``y`` (the last ``T``): ``y[:, i] == x[:, i + 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from .corpus import DataError

S = TypeVar("S", np.ndarray, Sequence)
RngLike = np.random.Generator | int | None


def train_val_split(tokens: S, val_fraction: float = 0.1) -> tuple[S, S]:
    """Split a sequence into (train, val): the last ``val_fraction`` of it is held out, in order.

    The validation part has ``round(len(tokens) * val_fraction)`` items; both
    parts are slices of ``tokens`` (views, for a numpy array) and must be
    non-empty.

    >>> train, val = train_val_split(np.arange(100))
    >>> len(train), len(val), int(val[0])
    (90, 10, 90)
    >>> train_val_split("abcdefghij", val_fraction=0.3)
    ('abcdefg', 'hij')
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n = len(tokens)
    n_val = int(round(n * val_fraction))
    if n_val == 0 or n_val == n:
        raise DataError(f"cannot hold out {val_fraction:.0%} of {n} tokens: one of the parts would be empty")
    return tokens[:n - n_val], tokens[n - n_val:]


def _as_tokens(tokens: npt.ArrayLike, what: str) -> np.ndarray:
    array = np.asarray(tokens)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise DataError(f"{what} expects a 1-D array of integer token ids, got {array.dtype}{list(array.shape)}")
    return array


def _rng(rng: RngLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise DataError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def random_windows(tokens: npt.ArrayLike, batch_size: int, block_size: int, rng: RngLike = None,
                   dtype: npt.DTypeLike = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """A batch of windows at uniformly random offsets: ``(x, y)``, both ``(batch_size, block_size)``.

    ``y`` is ``x`` shifted left by one token. ``rng`` is a numpy Generator (pass
    the same one on every call for a stream of batches), an int seed (the same
    seed gives the same batch) or None (a fresh, unseeded generator). Every
    offset from 0 to ``len(tokens) - block_size - 1`` is equally likely.

    >>> x, y = random_windows(np.arange(100), batch_size=4, block_size=8, rng=0)
    >>> x.shape, y.shape, x.dtype.name
    ((4, 8), (4, 8), 'int64')
    >>> bool((y[:, :-1] == x[:, 1:]).all() and (y == x + 1).all())
    True
    """
    tokens = _as_tokens(tokens, "random_windows")
    if batch_size < 1 or block_size < 1:
        raise DataError(f"random_windows: batch_size and block_size must be >= 1, got {batch_size} and {block_size}")
    n = len(tokens)
    if n < block_size + 1:
        raise DataError(f"random_windows: {n} tokens are too few for a window of block_size {block_size} "
                        f"(need at least block_size + 1 = {block_size + 1})")
    starts = _rng(rng).integers(0, n - block_size, size=batch_size)  # (B,), at most n - block_size - 1
    windows = tokens[starts[:, None] + np.arange(block_size + 1)]  # (B, T + 1)
    return windows[:, :-1].astype(dtype), windows[:, 1:].astype(dtype)


def sequential_windows(tokens: npt.ArrayLike, block_size: int, *, drop_last: bool = True, ignore_index: int = -1,
                       dtype: npt.DTypeLike = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive, non-overlapping windows over the whole stream: ``(x, y)``, both ``(N, block_size)``.

    Row ``i`` predicts tokens ``i*T + 1 .. (i+1)*T`` from ``i*T .. (i+1)*T - 1``
    (``T = block_size``), so each target is scored once, with the context of its
    own window only: held-out scoring as the issue specifies. The ``(len - 1) %
    T`` targets after the last full window are dropped, unless ``drop_last`` is
    False: then they form one more row, whose inputs are padded with 0 and whose
    targets are padded with ``ignore_index`` (give the same value to the loss).

    >>> x, y = sequential_windows(np.arange(10), block_size=4)
    >>> x.tolist(), y.tolist()
    ([[0, 1, 2, 3], [4, 5, 6, 7]], [[1, 2, 3, 4], [5, 6, 7, 8]])
    >>> x, y = sequential_windows(np.arange(10), block_size=4, drop_last=False)
    >>> x[-1].tolist(), y[-1].tolist()
    ([8, 0, 0, 0], [9, -1, -1, -1])
    """
    tokens = _as_tokens(tokens, "sequential_windows")
    if block_size < 1:
        raise DataError(f"sequential_windows: block_size must be >= 1, got {block_size}")
    n_targets = len(tokens) - 1
    n_full, tail = divmod(max(n_targets, 0), block_size)
    if n_full == 0 and (drop_last or tail == 0):
        raise DataError(f"sequential_windows: {len(tokens)} tokens are too few for a window of block_size "
                        f"{block_size} (need at least {block_size + 1}" + (", or pass drop_last=False)" if tail else ")"))
    covered = n_full * block_size
    x = tokens[:covered].reshape(n_full, block_size).astype(dtype)  # (N, T)
    y = tokens[1:covered + 1].reshape(n_full, block_size).astype(dtype)  # (N, T)
    if not drop_last and tail:
        last_x = np.zeros((1, block_size), dtype)
        last_y = np.full((1, block_size), ignore_index, dtype)
        last_x[0, :tail] = tokens[covered:covered + tail]
        last_y[0, :tail] = tokens[covered + 1:]
        x, y = np.concatenate([x, last_x]), np.concatenate([y, last_y])
    return x, y
