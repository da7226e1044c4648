"""Training language models from the command line: the loop behind ``tensorc train``.

Models plug in as *recipes* (see ``models/gpt.py``'s ``recipe``), found through
the ``tensorc.models`` entry-point group, so tensorc never imports ``models/``.
A recipe knows its presets, builds a model from a config dict, and generates.

The loop: character-level tokens of the corpus (the default corpus ships with
Python), the last 10 % held out; one compiled step (value_and_grad, gradient
clipping, AdamW with warmup + cosine) reused every step; a tqdm progress bar;
validation loss every ``eval_every`` steps; metrics as JSON lines; a loss-curve
PNG; atomic checkpoints (and one on Ctrl-C); and a sample at the end.

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
from dataclasses import dataclass, field
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
    """How the CLI builds, trains and samples one kind of model (see ``models/gpt.py``'s ``recipe``)."""
    name: str
    presets: dict[str, dict[str, Any]]

    def config_for(self, preset: str, vocab_size: int, **overrides: Any) -> dict[str, Any]: ...

    def build(self, config: dict[str, Any]) -> Any: ...

    def generate(self, model: Any, params: Any, prompt: list[int], max_new_tokens: int, **sampling: Any) -> list[int]: ...


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


def _batch(tokens: np.ndarray, settings: TrainSettings, block: int, step: int, salt: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return random_windows(tokens, settings.batch_size, block, rng=np.random.default_rng([settings.seed, salt, step]))


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
    text = load_text(settings.data)
    tok_path = out / "tokenizer.json"
    if settings.resume and tok_path.exists():
        tokenizer = load_tokenizer(tok_path)
    else:
        tokenizer = CharTokenizer.from_text(text)
        tokenizer.save(tok_path)
    ids = np.asarray(tokenizer.encode(text), np.int64)
    train_ids, val_ids = train_val_split(ids, 0.1)
    cfg = recipe.config_for(settings.preset, tokenizer.vocab_size, **settings.overrides)
    model = recipe.build(cfg)
    block = cfg["block_size"]
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

    def train_step(params: Any, opt_state: Any, x: Any, y: Any, key: Any) -> Any:
        loss, grads = value_and_grad(lambda p: model.loss(p, x, y, key=key, training=True))(params)
        grads, norm = optim.clip_grad_norm(grads, settings.grad_clip)
        params, opt_state = opt.update(grads, opt_state, params)
        return loss, norm, params, opt_state

    step_fn = jit(train_step, target=settings.target)
    eval_fn = jit(lambda p, x, y: model.loss(p, x, y), target=settings.target)

    def validation() -> float:
        return float(np.mean([float(eval_fn(params, *_batch(val_ids, settings, block, i, salt=1)))
                              for i in range(settings.eval_batches)]))

    def checkpoint(step: int) -> None:
        save_checkpoint(out / "last", params, opt_state, step=step, rng_key=np.asarray(dropout_key),
                        config={"model": cfg, "recipe": recipe.name, "tokenizer": "tokenizer.json",
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
                x, y = _batch(train_ids, settings, block, step)
                key = tcrandom.fold_in(dropout_key, step)
                t0 = time.perf_counter()
                loss, norm, new_params, new_opt_state = step_fn(params, opt_state, x, y, key)
                # one statement: a Ctrl-C/SIGTERM cannot land between the update and the step count it checkpoints
                params, opt_state, step = new_params, new_opt_state, step + 1
                loss_value = float(loss)
                dt = time.perf_counter() - t0
                trained += dt
                record: dict[str, Any] = {"step": step, "loss": loss_value, "grad_norm": float(norm),
                                          "lr": float(schedule(np.float32(step - 1))), "tokens_per_s": x.size / dt,
                                          "train_seconds": trained}
                if step % settings.eval_every == 0 or step == settings.steps:
                    val = validation()
                    record["val_loss"] = val
                metrics.append(record)
                mf.write(json.dumps(record) + "\n")
                mf.flush()
                bar.set_postfix(loss=f"{loss_value:.3f}", val=f"{val:.3f}" if val is not None else "-",
                                tok_s=f"{x.size / dt:,.0f}")
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
        + f"; checkpoint in {out / 'last'}; metrics in {metrics_path}; curve in {out / 'loss.png'}")
    if not interrupted and settings.sample_tokens:
        prompt = tokenizer.encode("\n")
        sample = recipe.generate(model, params, prompt, settings.sample_tokens, temperature=0.8, top_k=None, top_p=0.95,
                                 seed=settings.seed)
        log("sample:\n" + tokenizer.decode(sample))
    return TrainResult(step, loss_value, val, out, interrupted, trained)


def load_for_generation(checkpoint_dir: str | os.PathLike) -> tuple[Recipe, Any, Any, Any]:
    """(recipe, model, params, tokenizer) from a training checkpoint directory."""
    directory = Path(checkpoint_dir)
    ck_dir = directory / "last" if (directory / "last").exists() else directory
    ck = load_checkpoint(ck_dir)
    recipe = find_recipe(ck.config.get("recipe", "gpt"))
    model = recipe.build(ck.config["model"])
    params_like = model.init(tcrandom.key(0))
    ck = load_checkpoint(ck_dir, params_like=params_like)
    tok_file = ck_dir.parent / ck.config.get("tokenizer", "tokenizer.json")
    if not tok_file.exists():
        tok_file = ck_dir / "tokenizer.json"
    return recipe, model, ck.params, load_tokenizer(tok_file)


__all__ = ["Recipe", "TrainResult", "TrainSettings", "bigram_baseline", "find_recipe", "heldout_loss",
           "load_for_generation", "train"]
