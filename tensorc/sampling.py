"""Choosing the next token from logits: greedy, temperature, top-k, top-p.

Sampling runs on the host with numpy, seeded, so generation is reproducible.
Temperature 0 is greedy (argmax, first index on ties). Top-k keeps the k
most likely tokens; top-p (nucleus) keeps the smallest set of most likely
tokens whose probability reaches p; both can be combined (top-k first).

>>> import numpy as np
>>> logits = np.array([1.0, 3.0, 2.0])
>>> sample_next(logits, temperature=0.0)
1
>>> rng = np.random.default_rng(0)
>>> sorted({sample_next(logits, top_k=2, rng=rng) for _ in range(50)})
[1, 2]
"""

from __future__ import annotations

import numpy as np

from .errors import TensorcError


def filter_logits(logits: np.ndarray, top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """``logits`` (last axis = vocabulary) with disallowed tokens set to -inf."""
    x = np.array(logits, dtype=np.float64, copy=True)
    v = x.shape[-1]
    if top_k is not None:
        if top_k < 1:
            raise TensorcError(f"top_k must be >= 1, got {top_k}")
        if top_k < v:
            kth = np.sort(x, axis=-1)[..., -top_k][..., None]
            x = np.where(x < kth, -np.inf, x)
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise TensorcError(f"top_p must be in (0, 1], got {top_p}")
    if top_p is not None and top_p < 1.0:  # 1.0 keeps everything (a rounded cumsum could drop tiny tails)
        order = np.argsort(-x, axis=-1, kind="stable")
        sorted_x = np.take_along_axis(x, order, -1)
        probs = np.exp(sorted_x - sorted_x[..., :1])
        probs /= probs.sum(-1, keepdims=True)
        before = np.cumsum(probs, -1) - probs  # mass of strictly more likely tokens
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False  # always keep the most likely token
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, -1)
        x = np.where(drop, -np.inf, x)
    return x


def sample_next(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                rng: np.random.Generator | None = None) -> int:
    """One token id from a 1-D vector of logits."""
    logits = np.asarray(logits)
    if logits.ndim != 1:
        raise TensorcError(f"sample_next takes one vector of logits, got shape {logits.shape}")
    if logits.size == 0:
        raise TensorcError("sample_next: empty vector of logits")
    if not 0 <= temperature < np.inf:
        raise TensorcError(f"temperature must be finite and >= 0, got {temperature}")
    x = filter_logits(logits, top_k, top_p)
    if temperature == 0.0:
        return int(np.argmax(x))
    with np.errstate(over="ignore"):  # shift first: x / tiny temperature would overflow to inf - inf
        p = np.exp((x - x.max()) / temperature)  # a tiny temperature sends the rest to -inf: greedy
    p /= p.sum()
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.choice(len(p), p=p))
