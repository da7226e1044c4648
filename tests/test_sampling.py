"""tensorc.sampling: greedy, temperature, top-k and top-p, checked as properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorc as tc
from tensorc.sampling import filter_logits, sample_next

PROPS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])

finite_logits = hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-30, 30, allow_nan=False))


@st.composite
def logits_with_masked(draw: st.DrawFn) -> np.ndarray:
    """Finite logits, some already -inf (at least one finite)."""
    x = draw(finite_logits)
    masked = draw(hnp.arrays(bool, x.shape))
    masked[draw(st.integers(0, x.size - 1))] = False
    return np.where(masked, -np.inf, x)


any_logits = st.one_of(finite_logits, logits_with_masked(), finite_logits.map(lambda a: a.astype(np.float32)))


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def top_k_set(x: np.ndarray, k: int) -> set[int]:
    """Tokens whose logit is at least the k-th largest (ties at the k-th all stay), never -inf ones."""
    kth = np.sort(x)[::-1][min(k, x.size) - 1]
    return {i for i in range(x.size) if x[i] >= kth and x[i] > -np.inf}


def kept(x: np.ndarray) -> set[int]:
    return {int(i) for i in np.flatnonzero(np.isfinite(x))}


def check_nucleus(x: np.ndarray, p: float, keep: set[int]) -> None:
    """``keep`` is the smallest most-likely prefix whose probability reaches p (up to rounding)."""
    probs = softmax(x)
    assert keep, "top-p kept nothing"
    dropped = set(range(x.size)) - keep
    if dropped:  # a prefix of the most likely tokens
        assert min(x[i] for i in keep) >= max(x[i] for i in dropped)
    mass = sum(probs[i] for i in keep)
    assert mass >= p - 1e-9, f"kept mass {mass} < p={p}"
    if len(keep) > 1:  # smallest: without its least likely member it would not reach p
        least = min(keep, key=lambda i: x[i])
        assert mass - probs[least] < p + 1e-9, f"kept {sorted(keep)}: mass {mass - probs[least]} without {least} reaches {p}"


@PROPS
@given(any_logits, st.integers(1, 45), st.integers(0, 2**32 - 1))
def test_top_k_samples_only_allowed_tokens(x: np.ndarray, k: int, seed: int) -> None:
    allowed = top_k_set(x, k)
    assert kept(filter_logits(x, top_k=k)) == allowed
    rng = np.random.default_rng(seed)
    for temperature in (1.0, 3.0, 0.0):
        assert sample_next(x, temperature, top_k=k, rng=rng) in allowed


@PROPS
@given(any_logits, st.floats(1e-6, 1.0), st.integers(0, 2**32 - 1))
def test_top_p_keeps_the_smallest_prefix_reaching_p(x: np.ndarray, p: float, seed: int) -> None:
    keep = kept(filter_logits(x, top_p=p))
    check_nucleus(x, p, keep)
    rng = np.random.default_rng(seed)
    for temperature in (1.0, 0.5, 0.0):
        assert sample_next(x, temperature, top_p=p, rng=rng) in keep


@PROPS
@given(any_logits, st.integers(1, 45), st.floats(1e-6, 1.0), st.integers(0, 2**32 - 1))
def test_top_k_then_top_p(x: np.ndarray, k: int, p: float, seed: int) -> None:
    after_k = filter_logits(x, top_k=k)
    keep = kept(filter_logits(x, top_k=k, top_p=p))
    assert keep <= top_k_set(x, k)
    check_nucleus(after_k, p, keep)  # top-p applies to the distribution top-k left
    rng = np.random.default_rng(seed)
    assert all(sample_next(x, 1.0, top_k=k, top_p=p, rng=rng) in keep for _ in range(5))


def test_top_p_examples() -> None:
    x = np.log(np.array([0.1, 0.5, 0.15, 0.25]))
    assert kept(filter_logits(x, top_p=0.5)) == {1}
    assert kept(filter_logits(x, top_p=0.6)) == {1, 3}
    assert kept(filter_logits(x, top_p=0.75)) == {1, 3}
    assert kept(filter_logits(x, top_p=0.76)) == {1, 2, 3}
    assert kept(filter_logits(x, top_p=1.0)) == {0, 1, 2, 3}


@PROPS
@given(logits_with_masked())
def test_top_p_one_and_large_top_k_keep_everything(x: np.ndarray) -> None:
    np.testing.assert_array_equal(filter_logits(x, top_p=1.0), x)
    np.testing.assert_array_equal(filter_logits(x, top_k=x.size), x)
    np.testing.assert_array_equal(filter_logits(x, top_k=x.size + 5), x)


def test_filter_logits_is_batched_over_leading_axes() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 10))
    original = x.copy()
    both = filter_logits(x, top_k=6, top_p=0.7)
    for idx in np.ndindex(3, 4):
        np.testing.assert_array_equal(both[idx], filter_logits(x[idx], top_k=6, top_p=0.7))
    np.testing.assert_array_equal(x, original)  # the input is not modified


@st.composite
def untied_logits(draw: st.DrawFn) -> np.ndarray:
    """Logits whose maximum is unique, at least ``gap`` above the rest."""
    x = draw(finite_logits)
    best = draw(st.integers(0, x.size - 1))
    x[best] = x.max() + draw(st.floats(1.0, 10.0))
    return x


@PROPS
@given(untied_logits(), st.floats(5e-324, 1e-3), st.integers(0, 2**32 - 1))
def test_temperature_to_zero_is_greedy(x: np.ndarray, temperature: float, seed: int) -> None:
    greedy = int(np.argmax(x))
    assert sample_next(x, 0.0) == greedy
    assert sample_next(x, temperature, rng=np.random.default_rng(seed)) == greedy
    assert sample_next(x, temperature, top_k=3, top_p=0.5, rng=np.random.default_rng(seed)) == greedy


def test_greedy_takes_the_first_of_tied_maxima() -> None:
    assert sample_next(np.array([0.0, 2.0, 1.0, 2.0]), temperature=0.0) == 1


@PROPS
@given(any_logits, st.integers(0, 2**32 - 1), st.sampled_from([None, 1, 3]), st.sampled_from([None, 0.3, 0.9]),
       st.sampled_from([0.5, 1.0, 2.0]))
def test_same_seed_same_samples(x: np.ndarray, seed: int, k: int | None, p: float | None, temperature: float) -> None:
    def draw(seed: int) -> list[int]:
        rng = np.random.default_rng(seed)
        return [sample_next(x, temperature, k, p, rng) for _ in range(10)]

    assert draw(seed) == draw(seed)


def test_samples_follow_the_tempered_distribution() -> None:
    x = np.array([1.0, 0.0, 2.0, -1.0, 0.5])
    rng = np.random.default_rng(0)
    n = 4000
    for temperature, k in [(1.0, None), (0.5, None), (2.0, 3)]:
        z = filter_logits(x, top_k=k) / temperature
        want = softmax(z)
        counts = np.bincount([sample_next(x, temperature, top_k=k, rng=rng) for _ in range(n)], minlength=x.size)
        # 5 standard deviations of a binomial count
        assert np.all(np.abs(counts - n * want) <= 5 * np.sqrt(n * want * (1 - want)) + 1), (temperature, counts, n * want)


@pytest.mark.parametrize("kwargs", [
    dict(top_k=0), dict(top_k=-2), dict(top_p=0.0), dict(top_p=-0.1), dict(top_p=1.5), dict(top_p=math.nan),
    dict(temperature=-1.0), dict(temperature=math.nan), dict(temperature=math.inf),
])
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(tc.TensorcError):
        sample_next(np.array([0.0, 1.0, 2.0]), rng=np.random.default_rng(0), **kwargs)


def test_bad_logits_raise() -> None:
    with pytest.raises(tc.TensorcError, match="one vector"):
        sample_next(np.zeros((2, 3)))
    with pytest.raises(tc.TensorcError):
        sample_next(np.zeros(0))
    with pytest.raises(tc.TensorcError):
        filter_logits(np.zeros(4), top_p=2.0)


def test_default_rng_and_public_module() -> None:
    assert tc.sampling.sample_next is sample_next
    assert sample_next(np.array([0.0, 50.0]), top_k=1) == 1
