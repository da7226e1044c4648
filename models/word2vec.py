"""word2vec: skip-gram with negative sampling (Mikolov et al. 2013), in tensorc's DSL.

Each word has a centre vector v (``center``) and a context vector u
(``context``). For a centre word c, a word o seen within ``window`` positions
of it, and ``negatives`` words k drawn from the unigram distribution raised to
the 3/4 power, the loss is::

    -log σ(u_o · v_c) - Σ_k log σ(-u_k · v_c)

averaged over the batch. After training, the centre vectors are the
embeddings: :meth:`Word2Vec.most_similar` and :meth:`Word2Vec.analogy`
(``a - b + c``, e.g. king - man + woman) rank words by cosine similarity.
Vectors are saved and loaded as ``.npz`` (with the vocabulary).

>>> import numpy as np, tensorc as tc
>>> model = Word2Vec(vocab_size=5, dim=3)
>>> params = model.init(tc.random.key(0))
>>> float(model.loss(params, np.array([0, 1]), np.array([2, 3]), np.array([[4, 4], [0, 2]]))) > 0
True
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import tensorc as tc
from tensorc import nn
from tensorc.data import load_text, train_val_split
from tensorc.training import run_json

__all__ = ["SkipGramTask", "Vectors", "Word2Vec", "Word2VecRecipe", "log_sigmoid", "skipgram_pairs", "train_word2vec",
           "word2vec_recipe", "words_of"]

Params = dict[str, Any]


def log_sigmoid(x: Any) -> tc.Tensor:
    """``log σ(x) = min(x, 0) - log(1 + exp(-|x|))``, stable for large |x|."""
    x = tc.as_tensor(x)
    return tc.minimum(x, 0.0) - tc.log(1.0 + tc.exp(-tc.abs(x)))


class Word2Vec(nn.Module):
    """Skip-gram with negative sampling; parameters ``center`` and ``context``, each (V, D).

    Centre vectors start U(-0.5/D, 0.5/D) and context vectors at zero, as the
    original C code does.
    """

    def __init__(self, vocab_size: int, dim: int = 50, dtype: Any = np.float32) -> None:
        self.vocab_size, self.dim, self.dtype = vocab_size, dim, dtype

    def init(self, key: Any) -> Params:
        bound = 0.5 / self.dim
        center = tc.random.uniform(key, (self.vocab_size, self.dim), minval=-bound, maxval=bound)
        return {"center": np.asarray(center.numpy(), self.dtype), "context": np.zeros((self.vocab_size, self.dim), self.dtype)}

    def loss(self, params: Params, centers: Any, contexts: Any, negatives: Any, *, key: Any = None,
             training: bool = False) -> tc.Tensor:
        """Mean SGNS loss over a batch: ``centers`` (B,), ``contexts`` (B,), ``negatives`` (B, K) ids.
        ``key`` and ``training`` are accepted, as every model's loss takes them, and unused."""
        v = tc.gather(params["center"], tc.as_tensor(centers), 0)  # (B, D)
        u_o = tc.gather(params["context"], tc.as_tensor(contexts), 0)  # (B, D)
        u_k = tc.gather(params["context"], tc.as_tensor(negatives), 0)  # (B, K, D)
        positive = log_sigmoid((u_o * v).sum(-1))  # (B,)
        negative = log_sigmoid(-(u_k * tc.unsqueeze(v, 1)).sum(-1)).sum(-1)  # (B,)
        return -(positive + negative).mean()


def skipgram_pairs(tokens: Sequence[int], window: int) -> np.ndarray:
    """Every (centre, context) pair with the context within ``window`` positions: (N, 2).

    >>> sorted(skipgram_pairs([7, 8, 9], 1).tolist())
    [[7, 8], [8, 7], [8, 9], [9, 8]]
    """
    ids = np.asarray(tokens, np.int64)
    pairs = [np.zeros((0, 2), np.int64)]
    for d in range(1, min(window, len(ids) - 1) + 1):
        pairs.append(np.stack([ids[:-d], ids[d:]], 1))  # context to the right
        pairs.append(np.stack([ids[d:], ids[:-d]], 1))  # context to the left
    return np.concatenate(pairs)


class Vectors:
    """Trained word vectors with their vocabulary: similarity queries, save and load.

    >>> vecs = Vectors(["a", "b", "c"], np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]))
    >>> vecs.most_similar("a", 1)[0][0]
    'b'
    """

    def __init__(self, words: Sequence[str], vectors: np.ndarray) -> None:
        self.words = list(words)
        self.vectors = np.asarray(vectors, np.float64)  # (V, D)
        self.index = {w: i for i, w in enumerate(self.words)}
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self.unit = self.vectors / np.maximum(norms, 1e-12)  # (V, D)

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self.index[word]]

    def nearest(self, query: np.ndarray, n: int = 10, exclude: Sequence[str] = ()) -> list[tuple[str, float]]:
        """The ``n`` words whose vectors have the highest cosine similarity to ``query``."""
        q = np.asarray(query, np.float64)
        sims = self.unit @ (q / max(np.linalg.norm(q), 1e-12))  # (V,)
        for w in exclude:
            sims[self.index[w]] = -np.inf
        order = np.argsort(-sims, kind="stable")[:n]
        return [(self.words[i], float(sims[i])) for i in order]

    def most_similar(self, word: str, n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` words nearest to ``word`` by cosine similarity (``word`` itself excluded)."""
        return self.nearest(self[word], n, exclude=[word])

    def analogy(self, a: str, b: str, c: str, n: int = 1) -> list[tuple[str, float]]:
        """Words nearest to ``a - b + c`` (of unit vectors), the three inputs excluded:
        ``analogy("king", "man", "woman")`` ≈ queen."""
        query = self.unit[self.index[a]] - self.unit[self.index[b]] + self.unit[self.index[c]]
        return self.nearest(query, n, exclude=[a, b, c])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``vectors`` and ``words`` to an ``.npz`` file."""
        path = Path(path)
        np.savez(path, vectors=self.vectors, words=np.array(self.words))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vectors:
        with np.load(path, allow_pickle=False) as archive:
            return cls([str(w) for w in archive["words"]], archive["vectors"])


def train_word2vec(tokens: Sequence[str], *, dim: int = 16, window: int = 2, negatives: int = 5, batch_size: int = 256,
                   steps: int = 500, lr: float = 0.01, seed: int = 0, min_count: int = 1) -> tuple[Vectors, list[float]]:
    """Train skip-gram with negative sampling on a token stream; returns the vectors and the loss curve.

    Batches of (centre, context) pairs are drawn at random from every pair
    within ``window``; negatives from unigram^0.75. One compiled Adam step is
    reused for every batch.

    >>> vecs, losses = train_word2vec("a b a b a c".split(), dim=4, steps=3, batch_size=4)
    >>> sorted(vecs.words), len(losses)
    (['a', 'b', 'c'], 3)
    """
    counts = Counter(tokens)
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    index = {w: i for i, w in enumerate(words)}
    ids = [index[w] for w in tokens if w in index]
    pairs = skipgram_pairs(ids, window)  # (N, 2)
    if not len(pairs):
        raise tc.TensorcError("train_word2vec: the token stream has no pairs within the window")
    noise = np.array([counts[w] for w in words], np.float64) ** 0.75
    noise /= noise.sum()
    model = Word2Vec(len(words), dim)
    params = model.init(tc.random.key(seed))
    opt = tc.optim.Adam(lr=lr)
    state = opt.init(params)

    def train_step(params: Params, state: Any, centers: Any, contexts: Any, negs: Any) -> tuple[Any, Any, tc.Tensor]:
        loss, grads = tc.value_and_grad(lambda p: model.loss(p, centers, contexts, negs))(params)
        params, state = opt.update(grads, state, params)
        return params, state, loss

    step = tc.jit(train_step)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        batch = pairs[rng.integers(0, len(pairs), batch_size)]  # (B, 2)
        negs = rng.choice(len(words), size=(batch_size, negatives), p=noise).astype(np.int64)  # (B, K)
        params, state, loss = step(params, state, batch[:, 0], batch[:, 1], negs)
        losses.append(float(loss))
    return Vectors(words, np.asarray(params["center"])), losses


# ----------------------------------------------------------------------------- the recipe of `tensorc train word2vec`

WORD2VEC_PRESETS: dict[str, dict[str, Any]] = {
    "nano": dict(dim=8, window=2, negatives=3),  # tests and smoke runs
    "tiny": dict(dim=64, window=2, negatives=5),
    "small": dict(dim=128, window=4, negatives=10),
}
MIN_COUNT = 5  # rarer words are dropped from the vocabulary (and from the text, before pairing)
DEMO_WORDS = ("list", "true", "class", "exception", "string")
DEMO_ANALOGY = ("methods", "method", "function")  # methods - method + function: functions?


def words_of(text: str) -> list[str]:
    """The lower-cased runs of letters of ``text``: the words word2vec trains on.

    >>> words_of("The __init__() method, e.g. of a list.")
    ['the', 'init', 'method', 'e', 'g', 'of', 'a', 'list']
    """
    return re.findall(r"[a-z]+", text.lower())


class SkipGramTask:
    """The :class:`tensorc.training.Task` of ``tensorc train word2vec``: skip-gram pairs of the corpus.

    The words (:func:`words_of`) of ``settings.data`` (default: the corpus that ships
    with Python) seen at least ``MIN_COUNT`` times make the vocabulary (kept in
    ``vocab.json``, most frequent first); the last 10 % of the text is held out. A
    batch is ``batch_size`` (centre, context) pairs within ``config["window"]`` words,
    drawn at random for each step, with ``config["negatives"]`` negatives per pair
    from the unigram distribution to the 3/4 power. The demo prints the nearest
    words of a few words and an analogy; ``respond`` the nearest words of a word.
    """

    files = {"vocab": "vocab.json"}

    def __init__(self, settings: Any, run_dir: Path) -> None:
        self.settings = settings

        def build() -> dict[str, Any]:
            counts = Counter(words_of(load_text(settings.data)))
            words = sorted((w for w, n in counts.items() if n >= MIN_COUNT), key=lambda w: (-counts[w], w))
            if not words:
                raise tc.TensorcError(f"word2vec: no word occurs {MIN_COUNT} times in the training text")
            return {"words": words, "counts": [counts[w] for w in words]}

        saved = run_json(Path(run_dir) / self.files["vocab"], settings.resume, build)
        self.words, self.counts = list(saved["words"]), list(saved["counts"])
        self.vocab_size = len(self.words)
        self.index = {w: i for i, w in enumerate(self.words)}
        noise = np.asarray(self.counts, np.float64) ** 0.75
        self.noise = noise / noise.sum()
        self._pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def pairs(self, window: int) -> tuple[np.ndarray, np.ndarray]:
        """(train pairs (N, 2), held-out pairs (M, 2)) of word ids within ``window``."""
        if window not in self._pairs:
            ids = np.asarray([self.index[w] for w in words_of(load_text(self.settings.data)) if w in self.index], np.int64)
            train_ids, val_ids = train_val_split(ids, 0.1)
            self._pairs[window] = skipgram_pairs(train_ids, window), skipgram_pairs(val_ids, window)
            if not len(self._pairs[window][1]):
                raise tc.TensorcError("word2vec: the held-out 10 % of the text has no word pairs; use a longer text")
        return self._pairs[window]

    def batch(self, split: str, step: int, config: dict[str, Any]) -> tuple[np.ndarray, ...]:
        train, val = self.pairs(config["window"])
        pairs = train if split == "train" else val
        rng = np.random.default_rng([self.settings.seed, 0 if split == "train" else 1, step])
        b = self.settings.batch_size
        rows = pairs[rng.integers(0, len(pairs), b)]  # (B, 2)
        negatives = rng.choice(self.vocab_size, size=(b, config["negatives"]), p=self.noise).astype(np.int64)  # (B, K)
        return rows[:, 0].copy(), rows[:, 1].copy(), negatives

    def vectors(self, params: Any) -> Vectors:
        return Vectors(self.words, np.asarray(params["center"]))

    def evaluate(self, model: Any, params: Any) -> dict[str, float]:
        return {}  # the held-out loss is the metric

    def demo(self, model: Any, params: Any) -> str:
        vecs = self.vectors(params)
        words = [w for w in DEMO_WORDS if w in vecs.index] or self.words[:3]
        lines = ["nearest words (cosine similarity):"]
        for word in words:
            lines.append(f"  {word}: " + ", ".join(f"{w} {s:.2f}" for w, s in vecs.most_similar(word, 5)))
        if all(w in vecs.index for w in DEMO_ANALOGY):
            a, b, c = DEMO_ANALOGY
            lines.append(f"analogy {a} - {b} + {c}: " + ", ".join(f"{w} {s:.2f}" for w, s in vecs.analogy(a, b, c, 3)))
        return "\n".join(lines)

    def respond(self, model: Any, params: Any, prompt: str, **options: Any) -> str:
        """The 10 words nearest to one word, or to ``a - b + c`` for three (sampling options are ignored)."""
        words = words_of(prompt)
        if len(words) not in (1, 3):
            raise tc.TensorcError(f"give one word (its nearest words) or three, a b c (the words nearest a - b + c); "
                                  f"got {prompt!r}")
        unknown = [w for w in words if w not in self.index]
        if unknown:
            raise tc.TensorcError(f"{', '.join(map(repr, unknown))} not in the vocabulary ({self.vocab_size} words seen "
                                  f"at least {MIN_COUNT} times)")
        vecs = self.vectors(params)
        found = vecs.most_similar(words[0], 10) if len(words) == 1 else vecs.analogy(*words, n=10)
        return "\n".join(f"{w:16} {s:.3f}" for w, s in found)


@dataclass
class Word2VecRecipe:
    """How ``tensorc train word2vec`` builds the model for :class:`SkipGramTask`."""

    name: str = "word2vec"
    presets: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(WORD2VEC_PRESETS))
    train_defaults: dict[str, Any] = field(default_factory=lambda: dict(batch_size=512, lr=1e-2, warmup=20,
                                                                        weight_decay=0.0))

    def config_for(self, preset: str, vocab_size: int, **overrides: Any) -> dict[str, Any]:
        if preset not in self.presets:
            raise tc.TensorcError(f"unknown word2vec preset {preset!r}; presets: {', '.join(self.presets)}")
        return {**self.presets[preset], **overrides, "vocab_size": vocab_size}

    def build(self, config: dict[str, Any]) -> Word2Vec:
        return Word2Vec(config["vocab_size"], config["dim"])

    def task(self, settings: Any, run_dir: Path) -> SkipGramTask:
        return SkipGramTask(settings, run_dir)


word2vec_recipe = Word2VecRecipe()
