"""Training models from the command line: the loop behind ``tensorc train``.

Models plug in as *recipes* (see ``models/gpt.py``'s ``recipe``), found through
the ``tensorc.models`` entry-point group, so tensorc never imports ``models/``.
A recipe knows its presets, builds a model from a config dict, and says what the
model trains on: its *task* (:class:`Task`). A recipe without a ``task`` method
is a language model: it gets :class:`CorpusLM` (character-level tokens of the
corpus, the last 10 % held out; a sample of generated text at the end) and
supplies ``generate``. A recipe with its own data (``models/dates.py``'s
seq2seq and Transformer, ``models/word2vec.py``) returns its own task: its
batches, a held-out metric logged with the validation loss, the demo printed
after training, and the answer ``tensorc generate`` prints for a prompt.

The loop is the same for every task: one compiled step (value_and_grad of
``model.loss(params, *batch, key=..., training=True)``, gradient clipping,
AdamW with warmup + cosine) reused every step; a tqdm progress bar; validation
loss (and the task's metrics) every ``eval_every`` steps; metrics as JSON
lines; a loss-curve PNG; atomic checkpoints (and one on Ctrl-C); and the
task's demo at the end.

Batches and dropout keys are pure functions of (seed, step), so resuming from
a checkpoint continues bit-identically.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import optim
from . import random as tcrandom
from .autodiff import value_and_grad
from .checkpoint import load_checkpoint, save_checkpoint
from .data import load_text, random_windows, sequential_windows, train_val_split
from .errors import TensorcError
from .frontend.jit import jit
from .text import CharTokenizer, load_tokenizer


class Recipe(Protocol):
    """How the CLI builds and trains one kind of model (see ``models/gpt.py``'s ``recipe``).

    Optional members, looked up with ``getattr``: ``task(settings, run_dir) -> Task``
    (without it the recipe is a language model on :class:`CorpusLM`, and
    ``generate`` is what samples from it), and ``train_defaults``, a dict of
    :class:`TrainSettings` fields (e.g. ``{"batch_size": 64}``) that
    :func:`settings_for` and the CLI use in place of the general defaults.
    """
    name: str
    presets: dict[str, dict[str, Any]]

    def config_for(self, preset: str, vocab_size: int, **overrides: Any) -> dict[str, Any]: ...

    def build(self, config: dict[str, Any]) -> Any: ...

    def generate(self, model: Any, params: Any, prompt: list[int], max_new_tokens: int, **sampling: Any) -> list[int]: ...


class Task(Protocol):
    """What a model trains on, how it is scored on held-out data, and how it is shown.

    ``batch`` returns the arguments of ``model.loss`` after ``params``, as a
    pure function of ``(split, step)`` and the settings the task was made with
    (``split`` is ``"train"``, or ``"val"`` with ``step`` counting validation
    batches); ``config`` is the model's config dict. ``evaluate`` returns extra
    held-out metrics (e.g. ``{"exact_match": 0.97}``), logged as ``val_NAME``
    next to ``val_loss``; ``demo`` the text printed after training; ``respond``
    what ``tensorc generate --prompt`` prints. ``files`` names what the task keeps in
    the run directory (recorded in the checkpoint's config); the task writes them
    on a fresh run and reads them back when ``settings.resume`` is set.
    """
    vocab_size: int
    files: dict[str, str]

    def batch(self, split: str, step: int, config: dict[str, Any]) -> tuple[np.ndarray, ...]: ...

    def evaluate(self, model: Any, params: Any) -> dict[str, float]: ...

    def demo(self, model: Any, params: Any) -> str: ...

    def respond(self, model: Any, params: Any, prompt: str, **options: Any) -> str: ...


def find_recipe(name: str) -> Recipe:
    """The recipe registered under ``name`` in the ``tensorc.models`` entry-point group."""
    found = {ep.name: ep for ep in entry_points(group="tensorc.models")}
    if name not in found:
        known = ", ".join(sorted(found)) or "none (is the project installed with `pip install -e .`?)"
        raise TensorcError(f"no model named {name!r}; models: {known}")
    return found[name].load()


@dataclass
class TrainSettings:
    """Everything ``tensorc train`` can set; the CLI flags map one to one."""
    preset: str = "tiny"
    data: str | None = None
    steps: int = 2000
    out: str = "runs/gpt"
    resume: bool = False
    target: str | None = None
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_batches: int = 8
    checkpoint_every: int = 500
    seed: int = 1337
    time_budget: float | None = None  # seconds of training time, then stop
    sample_tokens: int = 300
    progress: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)


def settings_for(recipe: Recipe, **settings: Any) -> TrainSettings:
    """:class:`TrainSettings` with the recipe's ``train_defaults`` in place of the general defaults.

    >>> class Recipe:
    ...     train_defaults = {"batch_size": 64, "lr": 3e-3}
    >>> s = settings_for(Recipe(), lr=1e-2)
    >>> s.batch_size, s.lr, s.warmup
    (64, 0.01, 100)
    """
    return TrainSettings(**{**getattr(recipe, "train_defaults", {}), **settings})


@dataclass
class TrainResult:
    """How a training run ended: last step, losses, run directory, whether it was interrupted."""
    step: int
    train_loss: float
    val_loss: float | None
    out: Path
    interrupted: bool
    seconds: float


def bigram_baseline(train: np.ndarray, heldout: np.ndarray, vocab: int, epsilons: tuple[float, ...] = (1e-3, 3e-3, 1e-2,
                    3e-2, 0.1, 0.3, 1.0)) -> tuple[float, float]:
    """The best add-ε bigram's held-out cross-entropy (nats/token) and its ε."""
    counts = np.zeros((vocab, vocab), np.float64)
    np.add.at(counts, (train[:-1], train[1:]), 1.0)
    best = (math.inf, epsilons[0])
    for eps in epsilons:
        probs = (counts + eps) / (counts.sum(1, keepdims=True) + eps * vocab)
        nll = -np.log(probs[heldout[:-1], heldout[1:]]).mean()
        best = min(best, (float(nll), eps))
    return best


def heldout_loss(model: Any, params: Any, tokens: np.ndarray, block_size: int, batch_size: int = 16) -> float:
    """Mean cross-entropy over the whole held-out text in non-overlapping windows."""
    x, y = sequential_windows(tokens, block_size)
    loss_fn = jit(lambda p, x, y: model.loss(p, x, y))
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        total += float(loss_fn(params, xb, yb)) * yb.size
        count += yb.size
    return total / count


def run_json(path: Path, resume: bool, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A task's JSON file in the run directory: read back when resuming (and it exists), else
    ``build()`` written there. A resumed run so sees the vocabulary it started with.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "vocab.json"
    >>> run_json(path, False, lambda: {"words": ["a"]}), run_json(path, True, lambda: {"words": ["b"]})
    ({'words': ['a']}, {'words': ['a']})
    """
    if resume and path.exists():
        return json.loads(path.read_text())
    data = build()
    path.write_text(json.dumps(data))
    return data


def _batch(tokens: np.ndarray, settings: TrainSettings, block: int, step: int, salt: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return random_windows(tokens, settings.batch_size, block, rng=np.random.default_rng([settings.seed, salt, step]))


class CorpusLM:
    """The task of a language-model recipe: next-character prediction on a text corpus.

    The corpus is ``settings.data`` (default: the one that ships with Python),
    tokenized by characters; the last 10 % is held out. Batches are random windows of
    ``config["block_size"]`` tokens; the demo is a sample generated from a newline.
    """

    files = {"tokenizer": "tokenizer.json"}

    def __init__(self, recipe: Recipe, settings: TrainSettings, tokenizer: Any, text: str | None = None) -> None:
        self.recipe, self.settings, self.tokenizer = recipe, settings, tokenizer
        self.vocab_size = tokenizer.vocab_size
        self._text = text
        self._splits: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def for_run(cls, recipe: Recipe, settings: TrainSettings, run_dir: Path) -> CorpusLM:
        """The corpus's task; the tokenizer is built from the text and saved in ``run_dir``
        (read back from there on ``--resume``)."""
        text = load_text(settings.data)
        tok_path = run_dir / cls.files["tokenizer"]
        if settings.resume and tok_path.exists():
            tokenizer = load_tokenizer(tok_path)
        else:
            tokenizer = CharTokenizer.from_text(text)
            tokenizer.save(tok_path)
        return cls(recipe, settings, tokenizer, text)

    def batch(self, split: str, step: int, config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if self._splits is None:
            text = load_text(self.settings.data) if self._text is None else self._text
            self._splits = train_val_split(np.asarray(self.tokenizer.encode(text), np.int64), 0.1)
        train_ids, val_ids = self._splits
        if split == "train":
            return _batch(train_ids, self.settings, config["block_size"], step)
        return _batch(val_ids, self.settings, config["block_size"], step, salt=1)

    def evaluate(self, model: Any, params: Any) -> dict[str, float]:
        return {}  # the validation loss says it all

    def demo(self, model: Any, params: Any) -> str:
        s = self.settings
        lines = []
        block = getattr(getattr(model, "config", None), "block_size", None)
        if block:  # the whole held-out text, in non-overlapping windows, against the best add-ε bigram
            if self._splits is None:
                self.batch("val", 0, {"block_size": block})
            train_ids, val_ids = self._splits  # type: ignore[misc]
            xent = heldout_loss(model, params, val_ids, block)
            bigram, eps = bigram_baseline(train_ids, val_ids, self.vocab_size)
            lines.append(f"held-out text ({len(val_ids):,} tokens, windows of {block}): {xent:.4f} nats/token; "
                         f"best add-ε bigram (ε={eps:g}): {bigram:.4f}; better by {bigram - xent:.4f} nats/token")
        if s.sample_tokens:
            sample = self.recipe.generate(model, params, self.tokenizer.encode("\n"), s.sample_tokens, temperature=0.8,
                                          top_k=None, top_p=0.95, seed=s.seed)
            lines.append("sample:\n" + self.tokenizer.decode(sample))
        return "\n".join(lines)

    def respond(self, model: Any, params: Any, prompt: str, *, max_new_tokens: int = 200, stop: str | None = None,
                **sampling: Any) -> str:
        """The prompt (a newline when empty) and its continuation; ``stop`` must be one token."""
        ids = self.tokenizer.encode(prompt) if prompt else self.tokenizer.encode("\n")
        stop_token = None
        if stop:
            stop_ids = self.tokenizer.encode(stop)
            if len(stop_ids) != 1:
                raise TensorcError(f"--stop must be one token; {stop!r} is {len(stop_ids)} tokens")
            stop_token = stop_ids[0]
        tokens = self.recipe.generate(model, params, ids, max_new_tokens, stop_token=stop_token, **sampling)
        return self.tokenizer.decode(tokens)


def _read_metrics(path: Path, upto_step: int) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # empty, or cut short by a kill
            continue
        if record.get("step", 0) <= upto_step:
            records.append(record)
    return records


def _save_plot(metrics: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    tr = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    va = [(m["step"], m["val_loss"]) for m in metrics if m.get("val_loss") is not None]
    if tr:
        ax.plot(*zip(*tr), label="train", alpha=0.7)
    if va:
        ax.plot(*zip(*va), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(recipe: Recipe, settings: TrainSettings, log: Any = print) -> TrainResult:
    """Train ``recipe``'s model as ``settings`` say; see the module docstring."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    task = task_for(recipe, settings, out)
    cfg = recipe.config_for(settings.preset, task.vocab_size, **settings.overrides)
    model = recipe.build(cfg)
    params = model.init(tcrandom.key(settings.seed))
    schedule = optim.warmup_cosine(settings.lr, settings.warmup, settings.steps, settings.min_lr)
    opt = optim.AdamW(schedule, betas=(0.9, 0.95), weight_decay=settings.weight_decay)
    opt_state = opt.init(params)
    start = 0
    metrics_path = out / "metrics.jsonl"
    if settings.resume:
        ck = load_checkpoint(out / "last", params_like=params, opt_state_like=opt_state)
        if ck.config.get("model") != cfg:
            raise TensorcError(f"--resume: the checkpoint's model config {ck.config.get('model')} differs from {cfg}")
        params, opt_state, start = ck.params, ck.opt_state, ck.step
        log(f"resumed from {out / 'last'} at step {start}")
    elif metrics_path.exists():
        metrics_path.unlink()
    dropout_key = tcrandom.key(settings.seed + 1)

    def train_step(params: Any, opt_state: Any, batch: tuple[Any, ...], key: Any) -> Any:
        loss, grads = value_and_grad(lambda p: model.loss(p, *batch, key=key, training=True))(params)
        grads, norm = optim.clip_grad_norm(grads, settings.grad_clip)
        params, opt_state = opt.update(grads, opt_state, params)
        return loss, norm, params, opt_state

    step_fn = jit(train_step, target=settings.target)
    eval_fn = jit(lambda p, batch: model.loss(p, *batch), target=settings.target)

    def validation() -> float:
        return float(np.mean([float(eval_fn(params, task.batch("val", i, cfg))) for i in range(settings.eval_batches)]))

    def checkpoint(step: int) -> None:
        save_checkpoint(out / "last", params, opt_state, step=step, rng_key=np.asarray(dropout_key),
                        config={"model": cfg, "recipe": recipe.name, **task.files,
                                "settings": {k: v for k, v in vars(settings).items() if k != "overrides"}})

    from tqdm import tqdm

    bar = tqdm(total=settings.steps, initial=start, disable=not settings.progress, unit="step", dynamic_ncols=True,
               file=sys.stderr)
    metrics: list[dict[str, Any]] = []
    if settings.resume and metrics_path.exists():
        metrics = _read_metrics(metrics_path, upto_step=start)
        # steps logged after the checkpoint (a kill between checkpoints) are trained again: drop their lines
        metrics_path.write_text("".join(json.dumps(m) + "\n" for m in metrics))
    interrupted = False
    loss_value, val = math.nan, None
    scores: dict[str, float] = {}  # the task's held-out metrics at the last validation
    trained = 0.0
    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # a polite kill saves a checkpoint too

    previous_handler = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, on_sigterm)
    step = start
    try:
        with open(metrics_path, "a") as mf:
            while step < settings.steps:
                if settings.time_budget is not None and trained >= settings.time_budget:
                    log(f"time budget of {settings.time_budget:.0f} s reached at step {step}")
                    break
                batch = task.batch("train", step, cfg)
                key = tcrandom.fold_in(dropout_key, step)
                t0 = time.perf_counter()
                loss, norm, new_params, new_opt_state = step_fn(params, opt_state, batch, key)
                # one statement: a Ctrl-C/SIGTERM cannot land between the update and the step count it checkpoints
                params, opt_state, step = new_params, new_opt_state, step + 1
                loss_value = float(loss)
                dt = time.perf_counter() - t0
                trained += dt
                record: dict[str, Any] = {"step": step, "loss": loss_value, "grad_norm": float(norm),
                                          "lr": float(schedule(np.float32(step - 1))), "tokens_per_s": batch[0].size / dt,
                                          "train_seconds": trained}
                if step % settings.eval_every == 0 or step == settings.steps:
                    val = validation()
                    record["val_loss"] = val
                    scores = task.evaluate(model, params)
                    record.update({f"val_{name}": value for name, value in scores.items()})
                metrics.append(record)
                mf.write(json.dumps(record) + "\n")
                mf.flush()
                bar.set_postfix(loss=f"{loss_value:.3f}", val=f"{val:.3f}" if val is not None else "-",
                                tok_s=f"{batch[0].size / dt:,.0f}", **{name: f"{v:.3f}" for name, v in scores.items()})
                bar.update(1)
                if not math.isfinite(loss_value):
                    raise TensorcError(f"training diverged at step {step}: loss {loss_value}")
                if step % settings.checkpoint_every == 0:
                    checkpoint(step)
    except KeyboardInterrupt:
        interrupted = True
        log(f"\ninterrupted at step {step}: saving a checkpoint")
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous_handler)
    checkpoint(step)
    if metrics:
        _save_plot(metrics, out / "loss.png")
    log(f"step {step}: train loss {loss_value:.4f}" + (f", validation loss {val:.4f}" if val is not None else "")
        + "".join(f", validation {name.replace('_', ' ')} {value:.4f}" for name, value in scores.items())
        + f"; checkpoint in {out / 'last'}; metrics in {metrics_path}; curve in {out / 'loss.png'}")
    if not interrupted and settings.sample_tokens:
        log(task.demo(model, params))
    return TrainResult(step, loss_value, val, out, interrupted, trained)


def task_for(recipe: Recipe, settings: TrainSettings, run_dir: Path) -> Task:
    """The recipe's task (its ``task`` method), or :class:`CorpusLM` for a language-model recipe."""
    make = getattr(recipe, "task", None)
    return make(settings, run_dir) if make is not None else CorpusLM.for_run(recipe, settings, run_dir)


def load_run(checkpoint_dir: str | os.PathLike) -> tuple[Recipe, Any, Any, Task]:
    """(recipe, model, params, task) from a training checkpoint directory (a run directory or its ``last/``).

    The task is made with the run's saved settings and reads its files (tokenizer,
    vocabulary) from the run directory; ``task.respond`` answers a prompt.
    """
    directory = Path(checkpoint_dir)
    ck_dir = directory / "last" if (directory / "last").exists() else directory
    ck = load_checkpoint(ck_dir)
    recipe = find_recipe(ck.config.get("recipe", "gpt"))
    model = recipe.build(ck.config["model"])
    params_like = model.init(tcrandom.key(0))
    ck = load_checkpoint(ck_dir, params_like=params_like)
    saved = ck.config.get("settings", {})
    known = {f.name for f in fields(TrainSettings)} - {"resume", "out", "overrides"}
    settings = TrainSettings(**{k: v for k, v in saved.items() if k in known}, out=str(ck_dir.parent), resume=True)
    if getattr(recipe, "task", None) is not None:
        return recipe, model, ck.params, recipe.task(settings, ck_dir.parent)
    tok_file = ck_dir.parent / ck.config.get("tokenizer", "tokenizer.json")
    if not tok_file.exists():
        tok_file = ck_dir / "tokenizer.json"
    return recipe, model, ck.params, CorpusLM(recipe, settings, load_tokenizer(tok_file))


def load_for_generation(checkpoint_dir: str | os.PathLike) -> tuple[Recipe, Any, Any, Any]:
    """(recipe, model, params, tokenizer) from a language model's checkpoint directory."""
    recipe, model, params, task = load_run(checkpoint_dir)
    if not isinstance(task, CorpusLM):
        raise TensorcError(f"{checkpoint_dir} holds a {recipe.name} run, not a language model: it has no tokenizer; "
                           "use tensorc.training.load_run")
    return recipe, model, params, task.tokenizer


__all__ = ["CorpusLM", "Recipe", "Task", "TrainResult", "TrainSettings", "bigram_baseline", "find_recipe", "heldout_loss",
           "load_for_generation", "load_run", "run_json", "settings_for", "task_for", "train"]
