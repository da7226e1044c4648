"""Training data: the default corpus, text files, train/val splits and windows; and docs/text-and-data.md runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorc.data import DataError, default_corpus, load_text, random_windows, sequential_windows, train_val_split
from tensorc.errors import TensorcError

QUICK = settings(deadline=None, max_examples=60)


# ----------------------------------------------------------------------------- corpus


def test_default_corpus_is_python_docs_and_deterministic() -> None:
    from pydoc_data.topics import topics

    text = default_corpus()
    assert text == "\n".join(topics[k] for k in sorted(topics))
    default_corpus.cache_clear()
    assert default_corpus() == text
    assert len(text) > 300_000  # 465,048 characters (79 topics) on CPython 3.11
    assert text.startswith('The "assert" statement') and "Python" in text and "def " in text
    assert len(set(text)) > 80


def test_load_text(tmp_path: Path) -> None:
    assert load_text(None) == load_text() == default_corpus()
    path = tmp_path / "t.txt"
    path.write_text("héllo\nwörld 🙂", encoding="utf-8")
    assert load_text(path) == load_text(str(path)) == "héllo\nwörld 🙂"
    with pytest.raises(DataError, match="cannot read training text .*missing.txt.*No such file"):
        load_text(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="cannot read training text"):
        load_text(tmp_path)  # a directory
    path.write_bytes(b"ok\nstill ok\n\xff\xfe bad")
    with pytest.raises(DataError, match=r"is not UTF-8: invalid start byte at byte 12 \(line 3\)"):
        load_text(path)
    assert isinstance(DataError("x"), TensorcError) and isinstance(DataError("x"), ValueError)


# ----------------------------------------------------------------------------- splits


@QUICK
@given(st.integers(2, 5000), st.floats(0.01, 0.99))
def test_train_val_split_sizes(n: int, fraction: float) -> None:
    tokens = np.arange(n)
    n_val = round(n * fraction)
    if n_val in (0, n):
        with pytest.raises(DataError, match="would be empty"):
            train_val_split(tokens, fraction)
        return
    train, val = train_val_split(tokens, fraction)
    assert len(val) == n_val and len(train) == n - n_val
    assert np.array_equal(np.concatenate([train, val]), tokens)  # in order: the last fraction is held out
    assert np.shares_memory(train, tokens)


def test_train_val_split_default_is_last_ten_percent() -> None:
    train, val = train_val_split(list(range(1000)))
    assert train == list(range(900)) and val == list(range(900, 1000))
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(DataError, match="between 0 and 1"):
            train_val_split([1, 2, 3], bad)


# ----------------------------------------------------------------------------- random windows


@QUICK
@given(st.integers(1, 300), st.integers(1, 8), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_random_windows_shapes_shift_and_bounds(n_extra: int, batch: int, block: int, seed: int) -> None:
    n = block + n_extra
    tokens = np.arange(n, dtype=np.uint16) * 3  # distinct values: the window's offset is recoverable
    x, y = random_windows(tokens, batch, block, rng=seed)
    assert x.shape == y.shape == (batch, block) and x.dtype == y.dtype == np.int64
    starts = x[:, 0] // 3
    assert (starts >= 0).all() and (starts + block + 1 <= n).all()
    expected = tokens[starts[:, None] + np.arange(block + 1)].astype(np.int64)
    assert np.array_equal(x, expected[:, :-1]) and np.array_equal(y, expected[:, 1:])
    assert np.array_equal(y[:, :-1], x[:, 1:])


def test_random_windows_are_reproducible() -> None:
    tokens = np.arange(10_000)
    a = random_windows(tokens, 8, 16, rng=123)
    b = random_windows(tokens, 8, 16, rng=123)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], random_windows(tokens, 8, 16, rng=124)[0])
    g1, g2 = np.random.default_rng(7), np.random.default_rng(7)
    stream1 = [random_windows(tokens, 4, 16, rng=g1)[0] for _ in range(3)]
    stream2 = [random_windows(tokens, 4, 16, rng=g2)[0] for _ in range(3)]
    assert all(np.array_equal(p, q) for p, q in zip(stream1, stream2))
    assert not np.array_equal(stream1[0], stream1[1])  # a Generator advances between calls


def test_random_windows_reach_every_offset() -> None:
    tokens = np.arange(12)
    x, _ = random_windows(tokens, 2000, 4, rng=0)
    assert set(x[:, 0].tolist()) == set(range(12 - 4))  # offsets 0..7, the last one ending at the last token


def test_random_windows_errors() -> None:
    with pytest.raises(DataError, match="5 tokens are too few for a window of block_size 5"):
        random_windows(np.arange(5), 2, 5, rng=0)
    x, y = random_windows(np.arange(6), 2, 5, rng=0)  # exactly block_size + 1: one possible window
    assert (x == np.arange(5)).all() and (y == np.arange(1, 6)).all()
    with pytest.raises(DataError, match="1-D array of integer token ids"):
        random_windows(np.zeros((4, 4), np.int64), 1, 2)
    with pytest.raises(DataError, match="1-D array of integer token ids"):
        random_windows(np.linspace(0, 1, 100), 1, 2)
    with pytest.raises(DataError, match="must be >= 1"):
        random_windows(np.arange(100), 0, 2)
    with pytest.raises(DataError, match="rng must be"):
        random_windows(np.arange(100), 1, 2, rng="seed")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- sequential windows


@QUICK
@given(st.integers(2, 500), st.integers(1, 64))
def test_sequential_windows_cover_each_target_once(n: int, block: int) -> None:
    tokens = np.arange(n) + 10
    n_full, tail = divmod(n - 1, block)
    if n_full:
        x, y = sequential_windows(tokens, block)
        assert x.shape == y.shape == (n_full, block)
        assert np.array_equal(x.ravel(), tokens[:n_full * block])  # non-overlapping, in order
        assert np.array_equal(y.ravel(), tokens[1:n_full * block + 1])
    else:
        with pytest.raises(DataError, match="too few"):
            sequential_windows(tokens, block)
    x, y = sequential_windows(tokens, block, drop_last=False)
    assert x.shape == y.shape == (n_full + (tail > 0), block)
    scored = y.ravel() != -1
    assert np.array_equal(y.ravel()[scored], tokens[1:])  # every target exactly once
    assert np.array_equal(x.ravel()[scored], tokens[:-1])  # with its own previous token as input
    assert (x.ravel()[~scored] == 0).all()


def test_sequential_windows_errors_and_options() -> None:
    with pytest.raises(DataError, match="too few"):
        sequential_windows(np.arange(1), 4, drop_last=False)
    with pytest.raises(DataError, match="or pass drop_last=False"):
        sequential_windows(np.arange(3), 4)
    x, y = sequential_windows(np.arange(7, dtype=np.uint8), 4, drop_last=False, ignore_index=-100, dtype=np.int32)
    assert x.dtype == np.int32 and y[-1].tolist() == [5, 6, -100, -100]


# ----------------------------------------------------------------------------- docs
