"""Counter-based random numbers: Threefry-2x32 known answers, determinism,
key splitting, distributions, and eager == jit bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import tensorc as tc
from tensorc.ir.ops import threefry2x32

U32 = np.uint32


# Known answers for Threefry-2x32, 20 rounds: the Random123 test vectors (kat_vectors), as used by JAX's tests.
@pytest.mark.parametrize("key,counter,expected", [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
])
def test_threefry2x32_known_answers(key: tuple[int, int], counter: tuple[int, int], expected: tuple[int, int]) -> None:
    y0, y1 = threefry2x32(np.array(key, U32), np.array([counter[0]], U32), np.array([counter[1]], U32))
    assert (int(y0[0]), int(y1[0])) == expected
    assert y0.dtype == U32 and y1.dtype == U32


def test_threefry2x32_is_elementwise_over_counters() -> None:
    key = np.array([0x13198A2E, 0x03707344], U32)
    x0 = np.array([0, 0x243F6A88, 0xFFFFFFFF], U32)
    x1 = np.array([0, 0x85A308D3, 0xFFFFFFFF], U32)
    y0, y1 = threefry2x32(key, x0, x1)
    assert (int(y0[1]), int(y1[1])) == (0xC4923A9C, 0x483DF7A0)
    for i in range(3):
        one = threefry2x32(key, x0[i:i + 1], x1[i:i + 1])
        assert (int(one[0][0]), int(one[1][0])) == (int(y0[i]), int(y1[i]))


def test_key_from_seed() -> None:
    assert tc.random.key(0).tolist() == [0, 0]
    assert tc.random.key(5).tolist() == [0, 5]
    assert tc.random.key(2**40 + 7).tolist() == [256, 7]  # 64 bits of the seed are used
    assert tc.random.key(-1).tolist() == [0xFFFFFFFF, 0xFFFFFFFF]
    k = tc.random.key(1)
    assert k.dtype == tc.uint32 and k.shape == (2,)
    with pytest.raises(tc.TensorcError, match="integer seed"):
        tc.random.key(1.5)
    with pytest.raises(tc.TensorcError, match=r"u32\[2\]"):
        tc.random.uniform(tc.tensor([1, 2]), (3,))
    with pytest.raises(tc.TensorcError, match=r"u32\[2\]"):
        tc.random.bits(tc.tensor(np.zeros(3, U32)), (3,))


def test_same_key_same_bits() -> None:
    k = tc.random.key(42)
    a = tc.random.bits(k, (4, 5)).numpy()
    np.testing.assert_array_equal(tc.random.bits(k, (4, 5)).numpy(), a)
    np.testing.assert_array_equal(tc.random.bits(tc.random.key(42), (4, 5)).numpy(), a)
    assert not np.array_equal(tc.random.bits(tc.random.key(43), (4, 5)).numpy(), a)
    assert len(np.unique(a)) == a.size  # 20 distinct 32-bit words
    np.testing.assert_array_equal(tc.random.uniform(k, (100,)).numpy(), tc.random.uniform(k, (100,)).numpy())


def test_split_keys_differ() -> None:
    k = tc.random.key(0)
    subkeys = tc.random.split(k, 4)
    assert subkeys.shape == (4, 2) and subkeys.dtype == tc.uint32
    rows = {tuple(r) for r in subkeys.tolist()}
    assert len(rows) == 4 and tuple(k.tolist()) not in rows
    k1, k2 = tc.random.split(k)
    np.testing.assert_array_equal(k1.numpy(), tc.random.split(k)[0].numpy())  # splitting is deterministic too
    u1, u2 = tc.random.uniform(k1, (1000,)).numpy(), tc.random.uniform(k2, (1000,)).numpy()
    assert not np.array_equal(u1, u2)
    assert abs(np.corrcoef(u1, u2)[0, 1]) < 0.1  # no obvious relation between streams
    # fold_in: deterministic, different for different data and from the parent key
    f1, f1b, f2 = tc.random.fold_in(k, 1), tc.random.fold_in(k, 1), tc.random.fold_in(k, 2)
    assert f1.tolist() == f1b.tolist() and f1.tolist() != f2.tolist() and f1.tolist() != k.tolist()


def test_uniform_range_and_mean() -> None:
    u = tc.random.uniform(tc.random.key(1), (200_000,)).numpy()
    assert u.dtype == np.float32
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005  # sd of the mean: 0.29 / sqrt(2e5) = 0.00065
    assert abs(u.var() - 1 / 12) < 0.002
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert counts.min() > 19_000 and counts.max() < 21_000
    v = tc.random.uniform(tc.random.key(2), (10_000,), "float64", minval=-3.0, maxval=5.0).numpy()
    assert v.dtype == np.float64 and v.min() >= -3.0 and v.max() < 5.0 and abs(v.mean() - 1.0) < 0.1
    assert tc.random.uniform(tc.random.key(3), (3,), "bfloat16").dtype == tc.bfloat16
    with pytest.raises(tc.TensorcError, match="float"):
        tc.random.uniform(tc.random.key(3), (3,), "int32")


def test_normal_moments() -> None:
    z = tc.random.normal(tc.random.key(3), (200_000,)).numpy()
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert abs(np.mean(np.abs(z) < 1.0) - 0.6827) < 0.005  # the 68% rule: shape, not just moments
    s = tc.random.normal(tc.random.key(4), (100_000,), "float64", mean=2.0, std=3.0).numpy()
    assert s.dtype == np.float64 and abs(s.mean() - 2.0) < 0.05 and abs(s.std() - 3.0) < 0.05


def test_bernoulli_frequency() -> None:
    b = tc.random.bernoulli(tc.random.key(5), 0.3, (200_000,)).numpy()
    assert b.dtype == np.bool_ and abs(b.mean() - 0.3) < 0.005
    p = np.array([0.0, 0.25, 1.0], np.float32)
    many = tc.random.bernoulli(tc.random.key(6), tc.tensor(np.broadcast_to(p, (50_000, 3)).copy())).numpy()
    assert many.shape == (50_000, 3)
    freq = many.mean(axis=0)
    assert freq[0] == 0.0 and freq[2] == 1.0 and abs(freq[1] - 0.25) < 0.01


def test_randint_and_permutation() -> None:
    r = tc.random.randint(tc.random.key(7), (10_000,), -3, 4).numpy()
    assert r.dtype == np.int64 and r.min() == -3 and r.max() == 3
    assert set(np.unique(r)) == set(range(-3, 4))
    p = tc.random.permutation(tc.random.key(8), 50).numpy()
    assert sorted(p.tolist()) == list(range(50)) and p.tolist() != list(range(50))
    with pytest.raises(tc.TensorcError, match="low < high"):
        tc.random.randint(tc.random.key(7), (3,), 2, 2)


def test_jit_and_eager_give_identical_bits() -> None:
    def sample(key: tc.Tensor) -> dict[str, tc.Tensor]:
        k1, k2, k3, k4 = tc.random.split(key, 4)
        return {
            "bits": tc.random.bits(k1, (3, 7)),
            "uniform": tc.random.uniform(k2, (5, 5), minval=-1.0, maxval=2.0),
            "normal": tc.random.normal(k3, (9,), "float64"),
            "bernoulli": tc.random.bernoulli(k4, 0.4, (11,)),
            "folded": tc.random.uniform(tc.random.fold_in(key, 3), (4,)),
        }

    key = tc.random.key(2024)
    eager = sample(key)
    jitted = tc.jit(sample)(key.numpy())
    assert set(eager) == set(jitted)
    for name in eager:
        e, j = eager[name].numpy(), jitted[name]
        assert e.dtype == j.dtype and e.shape == j.shape, name
        np.testing.assert_array_equal(e, j, err_msg=name)


def test_bits_of_odd_and_empty_sizes() -> None:
    k = tc.random.key(9)
    assert tc.random.bits(k, (0, 3)).shape == (0, 3)
    odd = tc.random.bits(k, (7,)).numpy()
    # The layout: n words come from counters (i, i + half), i < half = ceil(n / 2); first words, then second words.
    y0, y1 = threefry2x32(k.numpy(), np.arange(4, dtype=U32), np.arange(4, 8, dtype=U32))
    np.testing.assert_array_equal(odd, np.concatenate([y0, y1])[:7])
