"""The fixed-window neural language model (Bengio et al., 2003) and the add-ε
n-gram model it is measured against.

Fixed-window LM: to predict token ``t + 1`` it looks at the ``context``
tokens ``t - context + 1 .. t`` only::

    e = [e⁽¹⁾; …; e⁽ⁿ⁾]          the n embeddings, concatenated (oldest first)
    h = tanh(W e + b₁)
    ŷ = softmax(U h + b₂)

At the start of a window, positions before the first token read a learned
``pad`` vector instead of an embedding.

n-gram LM (counting, numpy): p(w | c) = (count(c, w) + ε) / (count(c) + ε |V|)
for the previous ``n - 1`` tokens ``c``. Its memory grows as the number of
distinct n-grams seen (up to |V|ⁿ), and it knows nothing beyond n - 1 tokens.

>>> import numpy as np, tensorc as tc
>>> model = FixedWindowLM(WindowLMConfig(vocab_size=10, context=3, n_embd=4, hidden_size=8))
>>> params = model.init(tc.random.key(0))
>>> model(params, np.zeros((2, 5), np.int64)).shape
(2, 5, 10)
>>> ngram = NGramLM(n=2, vocab_size=3, eps=1.0).fit([0, 1, 0, 1, 2])
>>> ngram.probs([0]).tolist()  # count(0, ·) = [0, 2, 0], count(0) = 2: (c + 1) / (2 + 3)
[0.2, 0.6, 0.2]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import tensorc as tc
import tensorc.nn.functional as F
from tensorc import nn

Params = dict[str, Any]

# ----------------------------------------------------------------------------- fixed-window neural LM


@dataclass(frozen=True)
class WindowLMConfig:
    vocab_size: int = 65
    block_size: int = 64  # the training window length (predictions are made at every position of it)
    context: int = 4  # n: how many previous tokens each prediction sees
    n_embd: int = 32
    hidden_size: int = 256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FixedWindowLM(nn.Module):
    """``model(params, idx) -> logits``: (B, T) ids -> (B, T, V), position t seeing tokens t-n+1..t.

    Parameters: ``embedding.weight`` (V, E), ``pad`` (E,), ``hidden`` (W: (H, n*E), b₁),
    ``head`` (U: (V, H), b₂).
    """

    def __init__(self, config: WindowLMConfig) -> None:
        if config.context < 1:
            raise tc.TensorcError(f"the window LM needs context >= 1, got {config.context}")
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.n_embd)
        self.hidden = nn.Linear(c.context * c.n_embd, c.hidden_size)
        self.head = nn.Linear(c.hidden_size, c.vocab_size)

    def init(self, key: Any) -> Params:
        k_emb, k_pad, k_hidden, k_head = tc.random.split(key, 4)
        pad = np.asarray(tc.random.normal(k_pad, (self.config.n_embd,)).numpy(), np.float32)
        return {"embedding": self.embedding.init(k_emb), "pad": pad, "hidden": self.hidden.init(k_hidden),
                "head": self.head.init(k_head)}

    def windows(self, params: Params, idx: Any) -> tc.Tensor:
        """The concatenated embeddings e = [e⁽ᵗ⁻ⁿ⁺¹⁾; …; e⁽ᵗ⁾] at every position: (B, T, n*E)."""
        idx = tc.as_tensor(idx)
        b, t = idx.shape
        n, e = self.config.context, self.config.n_embd
        emb = self.embedding(params["embedding"], idx)  # (B, T, E)
        if n > 1:
            pad = tc.broadcast_to(tc.as_tensor(params["pad"]).reshape(1, 1, e), (b, n - 1, e))  # (B, n-1, E)
            emb = tc.concat([pad, emb], axis=1)  # (B, T+n-1, E)
        return tc.concat([emb[:, k:k + t] for k in range(n)], axis=-1)  # (B, T, n*E), oldest first

    def __call__(self, params: Params, idx: Any, *, key: Any = None, training: bool = False) -> tc.Tensor:
        x = self.windows(params, idx)  # (B, T, n*E)
        b, t, ne = x.shape
        h = tc.tanh(self.hidden(params["hidden"], x.reshape(b * t, ne)))  # (B*T, H)
        logits = self.head(params["head"], h)  # (B*T, V)
        return logits.reshape(b, t, self.config.vocab_size)  # (B, T, V)

    def loss(self, params: Params, idx: Any, targets: Any, *, key: Any = None, training: bool = False) -> tc.Tensor:
        """Mean next-token cross-entropy over (B, T), in nats per token."""
        return F.cross_entropy(self(params, idx), targets)


def perplexity(model: Any, params: Params, tokens: Sequence[int] | np.ndarray, block_size: int, batch_size: int = 16) -> float:
    """exp(mean cross-entropy) of ``model`` over ``tokens`` in non-overlapping windows."""
    from tensorc.training import heldout_loss

    return math.exp(heldout_loss(model, params, np.asarray(tokens, np.int64), block_size, batch_size))


def generate(model: FixedWindowLM, params: Params, prompt: list[int], max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0, stop_token: int | None = None) -> list[int]:
    """Sample token by token; each step sees only the last ``context`` tokens, so it is
    one compiled call on a window of that length (shorter prompts: padded at the start)."""
    tokens = list(prompt)
    if not tokens:
        raise tc.TensorcError("generate needs a non-empty prompt")
    rng = np.random.default_rng(seed)
    step = getattr(model, "_next_logits", None)
    if step is None:
        step = model._next_logits = tc.jit(lambda p, idx: model(p, idx)[:, -1])  # (1, V)
    for _ in range(max_new_tokens):
        window = np.asarray([tokens[-model.config.context:]], np.int64)
        nxt = tc.sampling.sample_next(np.asarray(step(params, window))[0], temperature, top_k, top_p, rng)
        tokens.append(nxt)
        if nxt == stop_token:
            break
    return tokens


WINDOW_PRESETS: dict[str, dict[str, Any]] = {
    "nano": dict(block_size=16, context=3, n_embd=8, hidden_size=16),
    "mini": dict(block_size=32, context=4, n_embd=16, hidden_size=64),
    "tiny": dict(block_size=64, context=8, n_embd=32, hidden_size=256),
}


@dataclass
class WindowRecipe:
    """How ``tensorc train window`` builds and samples the fixed-window LM."""

    name: str = "window"
    presets: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(WINDOW_PRESETS))

    def config_for(self, preset: str, vocab_size: int, **overrides: Any) -> dict[str, Any]:
        if preset not in self.presets:
            raise tc.TensorcError(f"unknown window preset {preset!r}; presets: {', '.join(self.presets)}")
        return WindowLMConfig(**{**self.presets[preset], "vocab_size": vocab_size, **overrides}).to_dict()

    def build(self, config: dict[str, Any]) -> FixedWindowLM:
        return FixedWindowLM(WindowLMConfig(**config))

    def generate(self, model: FixedWindowLM, params: Any, prompt: list[int], max_new_tokens: int, **sampling: Any) -> list[int]:
        return generate(model, params, prompt, max_new_tokens, **sampling)


recipe = WindowRecipe()

# ----------------------------------------------------------------------------- add-ε n-gram baseline


class NGramLM:
    """An n-gram LM with add-ε smoothing, counted with numpy.

    Counts are kept sparse: each (n-1)-token context is coded as one integer
    (base |V|), and only the n-grams that occur are stored. A context never
    seen gives the uniform distribution. :meth:`log_probs` and
    :meth:`perplexity` score the tokens that have a full context: positions
    ``n - 1`` onwards.
    """

    def __init__(self, n: int, vocab_size: int, eps: float = 1.0) -> None:
        if n < 1:
            raise tc.TensorcError(f"an n-gram model needs n >= 1, got {n}")
        if eps <= 0:
            raise tc.TensorcError(f"add-ε smoothing needs ε > 0, got {eps}")
        if vocab_size ** n >= 2 ** 62:
            raise tc.TensorcError(f"|V|^n = {vocab_size}^{n} does not fit the int64 n-gram codes")
        self.n, self.vocab_size, self.eps = n, vocab_size, eps
        self.ngram_codes = np.zeros(0, np.int64)  # sorted codes of the n-grams seen
        self.ngram_counts = np.zeros(0, np.int64)
        self.context_codes = np.zeros(0, np.int64)  # sorted codes of the contexts seen
        self.context_counts = np.zeros(0, np.int64)

    def _codes(self, tokens: np.ndarray, width: int) -> np.ndarray:
        """The base-|V| code of every run of ``width`` consecutive tokens."""
        count = len(tokens) - width + 1
        codes = np.zeros(max(count, 0), np.int64)
        for k in range(width):
            codes = codes * self.vocab_size + tokens[k:k + count]
        return codes

    def _tokens(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(tokens, np.int64)
        if ids.ndim != 1 or (ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size)):
            raise tc.TensorcError(f"n-gram tokens must be a 1-D sequence of ids in [0, {self.vocab_size})")
        return ids

    def fit(self, tokens: Sequence[int] | np.ndarray) -> NGramLM:
        """Count the n-grams (and their contexts) of ``tokens``; returns ``self``."""
        ids = self._tokens(tokens)
        if len(ids) < self.n:
            raise tc.TensorcError(f"{len(ids)} tokens hold no {self.n}-gram")
        grams = self._codes(ids, self.n)
        self.ngram_codes, self.ngram_counts = np.unique(grams, return_counts=True)
        self.context_codes, self.context_counts = np.unique(grams // self.vocab_size, return_counts=True)
        return self

    @staticmethod
    def _lookup(codes: np.ndarray, counts: np.ndarray, queries: np.ndarray) -> np.ndarray:
        at = np.clip(np.searchsorted(codes, queries), 0, max(len(codes) - 1, 0))
        found = (codes[at] == queries) if len(codes) else np.zeros(queries.shape, bool)
        return np.where(found, counts[at] if len(counts) else 0, 0)

    def probs(self, context: Sequence[int]) -> np.ndarray:
        """p(· | context): a (|V|,) distribution (``context`` = the previous n - 1 tokens)."""
        ctx = self._tokens(context)
        if len(ctx) != self.n - 1:
            raise tc.TensorcError(f"a {self.n}-gram model takes a context of {self.n - 1} tokens, got {len(ctx)}")
        code = int(self._codes(ctx, self.n - 1)[0]) if self.n > 1 else 0
        ngram = self._lookup(self.ngram_codes, self.ngram_counts, code * self.vocab_size + np.arange(self.vocab_size))
        total = self._lookup(self.context_codes, self.context_counts, np.array([code]))[0]
        return (ngram + self.eps) / (total + self.eps * self.vocab_size)

    def log_probs(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """log p(x_i | x_{i-n+1..i-1}) for i = n-1 .. len(tokens)-1."""
        ids = self._tokens(tokens)
        grams = self._codes(ids, self.n)
        ngram = self._lookup(self.ngram_codes, self.ngram_counts, grams)
        total = self._lookup(self.context_codes, self.context_counts, grams // self.vocab_size)
        return np.log(ngram + self.eps) - np.log(total + self.eps * self.vocab_size)

    def perplexity(self, tokens: Sequence[int] | np.ndarray) -> float:
        """exp of the mean negative log-likelihood per scored token."""
        lp = self.log_probs(tokens)
        if lp.size == 0:
            raise tc.TensorcError(f"perplexity needs at least {self.n} tokens")
        return float(np.exp(-lp.mean()))
