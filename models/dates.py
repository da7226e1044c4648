"""Dates as people write them -> ISO dates: a generated translation task, and the recipes that train on it.

``random_dates`` writes random days between 1950 and 2049 in one of nine
human formats ("Tuesday, March 04, 1997", "04/03/1997", "04 mar 97" ...,
half of them lower-cased) next to their ISO form ("1997-03-04"). Models read
and write characters (:class:`Chars`: pad 0, bos 1, eos 2).
``examples/translate_dates.py`` trains on it, and so do ``tensorc train
seq2seq`` and ``tensorc train transformer`` through :class:`DateTranslation`,
the task of their recipes: every tenth day of the calendar is held out (never
trained on, in any format), and the held-out metric is the exact-match rate
of greedy decoding.

>>> random_dates(2, seed=0)
[('jan 23 2035', '2035-01-23'), ('13 october 1980', '1980-10-13')]
>>> chars = Chars(["0123456789-"])
>>> chars.encode(["1997-03-04"], 11, eos=True).tolist()
[[5, 13, 13, 11, 3, 4, 7, 3, 4, 8, 2]]
>>> chars.decode([5, 13, 13, 11, 3, 4, 7, 3, 4, 8, 2, 0])
'1997-03-04'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import tensorc as tc
from tensorc.training import run_json

from .seq2seq import Seq2Seq, Seq2SeqConfig, shift_right, strip_after_eos
from .transformer import Transformer, TransformerConfig

__all__ = ["FORMATS", "Chars", "DateRecipe", "DateTranslation", "random_dates", "seq2seq_recipe", "source_chars",
           "transformer_recipe"]

PAD, BOS, EOS = "\0", "^", "$"
FORMATS = ["%d %B %Y", "%B %d, %Y", "%A, %B %d, %Y", "%d/%m/%Y", "%d.%m.%y", "%b %d %Y", "%d %b %y", "%Y %b %d", "%A %d %B %Y"]
FIRST_DAY, DAYS = dt.date(1950, 1, 1).toordinal(), 36524  # 1950-01-01 .. 2049-12-31
SOURCE_LEN = 32  # the longest date written, "Wednesday, September 30, 2049", has 29 characters
TARGET_LEN = 11  # "yyyy-mm-dd" and eos
HELDOUT_EVERY = 10  # every tenth day (by ordinal) is held out


def _days(split: str) -> np.ndarray:
    offsets = np.arange(DAYS)
    heldout = (FIRST_DAY + offsets) % HELDOUT_EVERY == 0
    return offsets[heldout if split == "heldout" else ~heldout]


def random_dates(n: int, seed: int | Sequence[int], split: str | None = None) -> list[tuple[str, str]]:
    """``n`` (human-written, ISO) pairs between 1950 and 2049, a pure function of ``seed``.

    ``split="train"`` draws only days that are not held out, ``split="heldout"``
    only every tenth day (the ones whose ordinal is a multiple of 10); None, any day.
    """
    rng = np.random.default_rng(seed)
    days = None if split is None else _days(split)
    pairs = []
    for _ in range(n):
        offset = int(rng.integers(0, DAYS)) if days is None else int(days[rng.integers(len(days))])
        date = dt.date.fromordinal(FIRST_DAY + offset)
        text = date.strftime(FORMATS[rng.integers(len(FORMATS))])
        pairs.append((text.lower() if rng.random() < 0.5 else text, date.isoformat()))
    return pairs


class Chars:
    """Character vocabulary with pad (0), bos (1) and eos (2)."""

    def __init__(self, texts: list[str]) -> None:
        self.itos = [PAD, BOS, EOS] + sorted({ch for t in texts for ch in t} - {PAD, BOS, EOS})
        self.stoi = {ch: i for i, ch in enumerate(self.itos)}

    def encode(self, texts: list[str], length: int, eos: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), length), np.int64)  # (N, L), 0 = pad
        for row, text in enumerate(texts):
            ids = [self.stoi[ch] for ch in text] + ([2] if eos else [])
            out[row, : len(ids)] = ids[:length]
        return out

    def decode(self, ids: list[int]) -> str:
        return "".join(self.itos[i] for i in strip_after_eos(ids, 2))


def source_chars() -> Chars:
    """Every character :data:`FORMATS` writes, in either case: the source vocabulary of the task."""
    year = [dt.date(2000, 1, 1) + dt.timedelta(days=i) for i in range(366)]  # every month name and weekday
    texts = [d.strftime(f) for d in year for f in FORMATS]
    return Chars(texts + [t.lower() for t in texts] + ["0123456789"])


TARGET = Chars(["0123456789-"])


# ----------------------------------------------------------------------------- the task of `tensorc train seq2seq|transformer`


class DateTranslation:
    """The :class:`tensorc.training.Task` of the date recipes.

    Training batches are ``settings.batch_size`` random dates from the days not held
    out, drawn afresh for each step (``seed``, step); validation batches, the
    exact-match set (``eval_batches * batch_size`` dates) and the demo come from
    the held-out days. The vocabularies are kept in ``vocab.json``.
    """

    files = {"vocab": "vocab.json"}

    def __init__(self, settings: Any, run_dir: Path) -> None:
        if settings.data is not None:
            raise tc.TensorcError(f"--data {settings.data}: the date task generates its data; it reads no file")
        self.settings = settings
        saved = run_json(Path(run_dir) / self.files["vocab"], settings.resume,
                         lambda: {"source": source_chars().itos, "target": TARGET.itos})
        self.source, self.target = Chars(saved["source"]), Chars(saved["target"])
        self.vocab_size = len(self.source.itos)
        self._heldout: list[tuple[str, str]] | None = None

    def encode(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(src (N, 32), decoder input (N, 11), target (N, 11)) token ids."""
        src = self.source.encode([s for s, _ in pairs], SOURCE_LEN)  # (N, S)
        tgt = self.target.encode([t for _, t in pairs], TARGET_LEN, eos=True)  # (N, T)
        return src, shift_right(tgt, self.target.stoi[BOS]), tgt

    def batch(self, split: str, step: int, config: dict[str, Any]) -> tuple[np.ndarray, ...]:
        salt = 0 if split == "train" else 1
        return self.encode(random_dates(self.settings.batch_size, [self.settings.seed, salt, step],
                                        "train" if split == "train" else "heldout"))

    def heldout(self) -> list[tuple[str, str]]:
        """The fixed held-out dates that exact match is measured on."""
        if self._heldout is None:
            n = self.settings.eval_batches * self.settings.batch_size
            self._heldout = random_dates(n, [self.settings.seed, 2], "heldout")
        return self._heldout

    def translate(self, model: Any, params: Any, texts: list[str]) -> list[str]:
        """Greedy translations of ``texts`` (each at most 32 characters of the source vocabulary)."""
        decoded = model.greedy_decode(params, self.source.encode(texts, SOURCE_LEN), max_len=TARGET_LEN)
        tokens = decoded[0] if isinstance(decoded, tuple) else decoded  # Seq2Seq also returns attention weights
        pad, eos = self.target.stoi[PAD], self.target.stoi[EOS]
        texts = []
        for row in np.asarray(tokens).tolist():
            end = next((i for i, t in enumerate(row) if t in (pad, eos)), len(row))  # a (wrong) pad ends it too
            texts.append(self.target.decode(row[:end]))
        return texts

    def _scored(self, model: Any, params: Any) -> tuple[float, list[tuple[str, str, str]]]:
        pairs = self.heldout()
        guesses = self.translate(model, params, [s for s, _ in pairs])
        rows = [(text, truth, guess) for (text, truth), guess in zip(pairs, guesses)]
        return float(np.mean([guess == truth for _, truth, guess in rows])), rows

    def evaluate(self, model: Any, params: Any) -> dict[str, float]:
        return {"exact_match": self._scored(model, params)[0]}

    def demo(self, model: Any, params: Any) -> str:
        accuracy, rows = self._scored(model, params)
        lines = [f"held-out exact match: {accuracy:.1%} of {len(rows)} dates (days never seen in training)"]
        for text, truth, guess in rows[:6]:
            lines.append(f"  {text!r:32} -> {guess!r}" + ("" if guess == truth else f" (want {truth!r})"))
        return "\n".join(lines)

    def respond(self, model: Any, params: Any, prompt: str, **options: Any) -> str:
        """The ISO form of the date ``prompt`` (greedy decoding: sampling options are ignored)."""
        text = prompt.strip()
        if not text:
            raise tc.TensorcError("give a date to translate, e.g. --prompt '04 march 1997'")
        unknown = sorted(set(text) - set(self.source.itos[3:]))
        if unknown:
            raise tc.TensorcError(f"{text!r}: {''.join(unknown)!r} never occurs in the dates this model read; it knows "
                                  f"{''.join(self.source.itos[3:])!r}")
        if len(text) > SOURCE_LEN:
            raise tc.TensorcError(f"{text!r} is {len(text)} characters; the model reads at most {SOURCE_LEN}")
        return self.translate(model, params, [text])[0]


# ----------------------------------------------------------------------------- recipes for `tensorc train`

SEQ2SEQ_PRESETS: dict[str, dict[str, Any]] = {
    "nano": dict(n_embd=8, hidden_size=16),  # tests and smoke runs
    "tiny": dict(n_embd=16, hidden_size=64),  # examples/translate_dates.py's model
    "small": dict(n_embd=32, hidden_size=128),
}
TRANSFORMER_PRESETS: dict[str, dict[str, Any]] = {
    "nano": dict(d_model=16, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=32, max_len=SOURCE_LEN, pre_ln=True),
    "tiny": dict(d_model=64, n_heads=4, n_enc_layers=2, n_dec_layers=2, d_ff=128, max_len=SOURCE_LEN, pre_ln=True),
    "small": dict(d_model=128, n_heads=4, n_enc_layers=3, n_dec_layers=3, d_ff=512, max_len=SOURCE_LEN, pre_ln=True),
}
_TASK_KEYS = ("src_vocab", "tgt_vocab", "pad_id", "bos_id", "eos_id")  # set by the task's vocabularies


@dataclass
class DateRecipe:
    """How ``tensorc train seq2seq|transformer`` builds a model for :class:`DateTranslation`."""

    name: str
    presets: dict[str, dict[str, Any]]
    config_type: Any
    model_type: Any
    train_defaults: dict[str, Any] = field(default_factory=lambda: dict(batch_size=64, lr=1e-2, warmup=50, eval_every=100,
                                                                        weight_decay=0.0))

    def config_for(self, preset: str, vocab_size: int, **overrides: Any) -> dict[str, Any]:
        if preset not in self.presets:
            raise tc.TensorcError(f"unknown {self.name} preset {preset!r}; presets: {', '.join(self.presets)}")
        fixed = [k for k in _TASK_KEYS if k in overrides]
        if fixed:
            raise tc.TensorcError(f"{self.name}: {', '.join(fixed)} is set by the date task's vocabulary, not by --override")
        task_keys = dict(src_vocab=vocab_size, tgt_vocab=len(TARGET.itos), pad_id=0, bos_id=1, eos_id=2)
        return self.config_type(**{**self.presets[preset], **overrides, **task_keys}).to_dict()

    def build(self, config: dict[str, Any]) -> Any:
        return self.model_type(self.config_type(**config))

    def task(self, settings: Any, run_dir: Path) -> DateTranslation:
        return DateTranslation(settings, run_dir)


seq2seq_recipe = DateRecipe("seq2seq", dict(SEQ2SEQ_PRESETS), Seq2SeqConfig, Seq2Seq)
transformer_recipe = DateRecipe("transformer", dict(TRANSFORMER_PRESETS), TransformerConfig, Transformer)
