"""The on-disk compile cache: hits, misses, damaged entries, concurrent writers, and the LLVM backend on top."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tensorc.runtime import cache


@pytest.fixture
def cache_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    import tensorc as tc

    monkeypatch.setenv("TENSORC_CACHE_DIR", str(tmp_path))  # for subprocesses
    with tc.config(cache_dir=str(tmp_path)):
        yield tmp_path


def entry(root: Path, k: str) -> Path:
    return root / k[:2] / f"{k}.bin"


def test_round_trip_and_keys(cache_in: Path) -> None:
    k = cache.key("ir", "llvm", "znver3")
    assert cache.load(k) is None
    cache.store(k, b"\x7fELF code")
    assert cache.load(k) == b"\x7fELF code"
    assert entry(cache_in, k).exists()
    assert cache.key("ab", "c") != cache.key("a", "bc")  # parts are length-prefixed
    assert cache.key("ir", "llvm", "znver4") != k


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_damaged_entries_are_removed_not_loaded(cache_in: Path, damage: str) -> None:
    k = cache.key("damaged", damage)
    cache.store(k, bytes(range(256)) * 4)
    path = entry(cache_in, k)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-100]
    elif damage == "flip":
        data[-1] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"not a cache entry at all")
    path.write_bytes(bytes(data))
    before = cache.stats["corrupt"]
    assert cache.load(k) is None
    assert cache.stats["corrupt"] == before + 1
    assert not path.exists()


def test_cache_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorc as tc

    monkeypatch.setenv("TENSORC_CACHE_DIR", "off")
    with tc.config(cache_dir=""):  # the variable, read now
        assert cache.cache_dir() is None
    with tc.config(cache_dir="off"):
        assert cache.cache_dir() is None
        cache.store("0" * 64, b"x")
        assert cache.load("0" * 64) is None


def test_default_directory_is_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tensorc as tc

    monkeypatch.delenv("TENSORC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with tc.config(cache_dir=""):
        assert cache.cache_dir() == tmp_path / "tensorc"
    with tc.config(cache_dir=str(tmp_path / "mine")):  # set in code
        assert cache.cache_dir() == tmp_path / "mine"


def _writer(args: tuple[str, str, int]) -> bool:
    root, k, seed = args
    os.environ["TENSORC_CACHE_DIR"] = root
    payload = bytes([seed % 256]) * 200_000
    for _ in range(20):
        cache.store(k, payload)
        got = cache.load(k)
        if got is None or len(got) != 200_000 or len(set(got)) != 1:
            return False
    return True


def test_concurrent_writers_never_expose_a_partial_entry(cache_in: Path) -> None:
    k = cache.key("shared program")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert all(pool.map(_writer, [(str(cache_in), k, i) for i in range(4)]))
    assert not list(cache_in.rglob("*.tmp"))  # no temporary file left behind


def test_llvm_module_comes_from_the_cache_the_second_time(cache_in: Path) -> None:
    pytest.importorskip("llvmlite")
    import tensorc as tc

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    lowered = tc.jit(lambda a: tc.exp(a) * 2.0 + a).lower(x)
    first = lowered.compile("llvm")
    assert not first.executable.module.cached
    second = lowered.compile("llvm")
    assert second.executable.module.cached
    np.testing.assert_array_equal(first(x), second(x))
    # A damaged entry is rebuilt, not loaded.
    for path in cache_in.rglob("*.bin"):
        path.write_bytes(path.read_bytes()[:50])
    third = lowered.compile("llvm")
    assert not third.executable.module.cached
    np.testing.assert_array_equal(first(x), third(x))


def test_cached_parallel_code_runs_in_a_fresh_process(cache_in: Path) -> None:
    """Code with OpenMP regions, loaded from the cache by a process that never built its IR
    (so nothing else loaded libgomp), must still resolve GOMP_parallel."""
    pytest.importorskip("llvmlite")
    import subprocess
    import sys

    script = ("import numpy as np, tensorc as tc\n"
              "x = np.arange(1 << 17, dtype=np.float32).reshape(128, 1024)\n"
              "c = tc.jit(lambda a: tc.softmax(a * 0.001, -1) + a).lower(x).compile('llvm')\n"
              "total = float(np.asarray(c(x)).sum())  # run before anything builds the IR\n"
              "print(c.executable.module.cached, 'GOMP_parallel' in c.executable.ir_text, total)\n")
    env = {**os.environ, "TENSORC_CACHE_DIR": str(cache_in), "OMP_NUM_THREADS": "2"}
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    first, second = (r.stdout.split() for r in runs)
    assert first[:2] == ["False", "True"] and second[:2] == ["True", "True"]
    assert first[2] == second[2]
