"""The language-model ladder: n-grams, fixed-window, RNN, LSTM, GRU and GPT on the default corpus, equal time each.

    python examples/compare_lms.py                       # 60 s of training per neural model
    python examples/compare_lms.py --budget-seconds 300 --eval-chars 8192   # longer; score a held-out prefix

Character level (``CharTokenizer``); the last 10 % of the default corpus is
held out (``tensorc.data.train_val_split``). Every model is scored by its
cross-entropy on held-out text (nats/char) and perplexity = exp(cross-entropy).

- unigram / bigram / trigram: add-ε counts (``models.window_lm.NGramLM``). ε is
  chosen from a grid by cross-entropy on a *development* slice -- the last
  10 % of the training text -- with counts from the other 90 %; the model with
  that ε is then refitted on the whole training text and scored on the held-out
  text. So the held-out text never picks ε.
- fixed-window LM, RNN, LSTM, GRU, GPT: the recipes' models (``mini`` presets),
  compiled for the default target (``tc.config(target=...)``), trained with Adam (gradient
  clipping 1.0) on random windows for the same wall-clock budget each
  (``--budget-seconds``; compilation of the training step counts against it),
  then scored with ``tensorc.training.heldout_loss``: non-overlapping windows
  of the model's block size, each target predicted from its own window only.

By default every model is scored on the whole held-out text (~46k chars; a
second or two per mini model). With ``--eval-chars N``
every model -- the n-grams too -- is scored on the same fixed subset, the
first N held-out characters, for bigger models where scoring is slow; the
table says which, and the n-grams' score on the whole text is noted as well.
The table is printed and written to ``docs/lm-ladder.md`` with the command,
machine, budget and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import tensorc as tc  # noqa: E402
from models.gpt import recipe as gpt_recipe  # noqa: E402
from models.lstm import gru_recipe, lstm_recipe  # noqa: E402
from models.rnn import recipe as rnn_recipe  # noqa: E402
from models.window_lm import NGramLM  # noqa: E402
from models.window_lm import recipe as window_recipe  # noqa: E402
from tensorc.data import default_corpus, random_windows, train_val_split  # noqa: E402
from tensorc.text import CharTokenizer  # noqa: E402
from tensorc.training import heldout_loss  # noqa: E402

EPSILONS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
NEURAL = {  # name -> (recipe, preset, overrides): tiny configs for a budget of about a minute
    "window": (window_recipe, "mini", {}),
    "rnn": (rnn_recipe, "mini", {}),
    "lstm": (lstm_recipe, "mini", {}),
    "gru": (gru_recipe, "mini", {}),
    "gpt": (gpt_recipe, "mini", {"block_size": 32}),
}
NGRAMS = {"unigram": 1, "bigram": 2, "trigram": 3}
ALL_MODELS = tuple(NGRAMS) + tuple(NEURAL)


def ngram_cross_entropy(n: int, vocab: int, eps: float, train: np.ndarray, scored: np.ndarray) -> float:
    """Mean NLL (nats/token) of ``scored``'s tokens that have n - 1 tokens of context."""
    return float(-NGramLM(n, vocab, eps).fit(train).log_probs(scored).mean())


def best_epsilon(n: int, vocab: int, train: np.ndarray) -> float:
    """The ε of the grid with the lowest cross-entropy on the last 10 % of ``train`` (counts from the rest)."""
    fit, dev = train_val_split(train, 0.1)
    return min(EPSILONS, key=lambda eps: ngram_cross_entropy(n, vocab, eps, fit, dev))


def train_neural(name: str, vocab: int, train: np.ndarray, args: argparse.Namespace) -> tuple[Any, Any, int, int, float]:
    """Train ``name`` for ``args.budget_seconds``: (model, params, block size, steps, last training loss)."""
    recipe, preset, overrides = NEURAL[name]
    config = recipe.config_for(preset, vocab, **overrides)
    model = recipe.build(config)
    params = model.init(tc.random.key(args.seed))
    opt = tc.optim.Adam(lr=args.lr)
    state = opt.init(params)

    @tc.jit
    def train_step(params: Any, state: Any, x: Any, y: Any) -> tuple[Any, Any, Any]:
        loss, grads = tc.value_and_grad(lambda p: model.loss(p, x, y))(params)
        grads, _ = tc.optim.clip_grad_norm(grads, 1.0)
        params, state = opt.update(grads, state, params)
        return params, state, loss

    block = config["block_size"]
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    step, loss, next_report = 0, math.nan, 0.0
    while time.perf_counter() - started < args.budget_seconds:
        x, y = random_windows(train, args.batch_size, block, rng=rng)  # (B, T), (B, T)
        params, state, out = train_step(params, state, x, y)
        step, loss = step + 1, float(out)
        elapsed = time.perf_counter() - started
        if elapsed >= next_report:
            print(f"  [{name}] step {step:5d}  loss {loss:.4f}  {elapsed:5.1f}s / {args.budget_seconds:g}s", flush=True)
            next_report = elapsed + max(args.budget_seconds / 6, 1.0)
    print(f"  [{name}] stopped at step {step} (budget {args.budget_seconds:g}s): train loss {loss:.4f}", flush=True)
    return model, params, block, step, loss


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}, tensorc {tc.__version__} ({tc.config.get('target')} backend)"


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | config | training | held-out chars scored | cross-entropy (nats/char) | perplexity |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['config']} | {r['training']} | {r['scored']} | {r['xent']:.4f} | {r['ppl']:.2f} |")
    return "\n".join(lines)


def write_doc(path: Path, table: str, notes: list[str], args: argparse.Namespace, argv: list[str], seconds: float) -> None:
    command = "python examples/compare_lms.py" + ("" if not argv else " " + shlex.join(argv))
    text = f"""# The language-model ladder

Written by `examples/compare_lms.py`; rerun it to refresh this page.

- command: `{command}`
- machine: {machine()}
- budget: {args.budget_seconds:g} s of wall-clock training per neural model (compilation included), batch {args.batch_size}, Adam lr {args.lr:g}, seed {args.seed}
- date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; the whole run took {seconds:.0f} s
- data: the default corpus, character level; the last 10 % held out

{table}

Notes:

""" + "".join(f"- {n}\n" for n in notes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-seconds", type=float, default=60.0, help="wall-clock training time per neural model")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-chars", type=int, default=0,
                    help="score the first N held-out characters (0: the whole held-out text)")
    ap.add_argument("--models", default=",".join(ALL_MODELS), help=f"comma-separated subset of {', '.join(ALL_MODELS)}")
    ap.add_argument("--doc", default="docs/lm-ladder.md", help="where to write the Markdown report ('' to skip)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL_MODELS))
    if unknown:
        ap.error(f"unknown models {unknown}; choose from {', '.join(ALL_MODELS)}")
    started = time.perf_counter()

    text = default_corpus()
    tokenizer = CharTokenizer.from_text(text)
    ids = np.asarray(tokenizer.encode(text), np.int64)
    train, heldout = train_val_split(ids, 0.1)
    vocab = tokenizer.vocab_size
    scored = heldout if args.eval_chars <= 0 else heldout[: args.eval_chars + 1]  # + 1: N targets need N + 1 tokens
    whole = len(scored) == len(heldout)
    subset = f"all {len(heldout) - 1}" if whole else f"first {len(scored) - 1}"
    print(f"default corpus: {len(ids)} chars, vocabulary {vocab}; train {len(train)}, held out {len(heldout)}; "
          f"scoring {subset} held-out chars", flush=True)

    rows: list[dict[str, Any]] = []
    notes = [f"ε for the n-grams: the best of {list(EPSILONS)} on a development slice (the last 10 % of the "
             "training text, counts from the other 90 %); then refitted on all the training text."]
    for name in [n for n in names if n in NGRAMS]:
        n = NGRAMS[name]
        t0 = time.perf_counter()
        eps = best_epsilon(n, vocab, train)
        xent = ngram_cross_entropy(n, vocab, eps, train, scored)
        full = ngram_cross_entropy(n, vocab, eps, train, heldout)
        on_whole = "" if whole else f" ({full:.4f} on all {len(heldout) - 1} held-out chars)"
        print(f"  [{name}] ε = {eps:g}: held-out cross-entropy {xent:.4f}{on_whole} ({time.perf_counter() - t0:.1f}s)",
              flush=True)
        rows.append(dict(model=name, config=f"add-ε, ε = {eps:g}", training="counts", scored=subset, xent=xent,
                         ppl=math.exp(xent)))
        if not whole:
            notes.append(f"{name} on the whole held-out text: {full:.4f} nats/char (perplexity {math.exp(full):.2f}).")

    for name in [n for n in names if n in NEURAL]:
        recipe, preset, overrides = NEURAL[name]
        model, params, block, steps, _ = train_neural(name, vocab, train, args)
        t0 = time.perf_counter()
        xent = heldout_loss(model, params, scored, block)
        print(f"  [{name}] held-out cross-entropy {xent:.4f} ({time.perf_counter() - t0:.1f}s to score)", flush=True)
        config = f"{preset} preset" + "".join(f", {k}={v}" for k, v in overrides.items())
        rows.append(dict(model=name, config=config, training=f"{steps} steps", scored=subset, xent=xent, ppl=math.exp(xent)))
    notes.append("Neural models are scored with `tensorc.training.heldout_loss` (non-overlapping windows of the "
                 "model's block size; the first target of each window has no context). The n-grams score every "
                 "char that has n - 1 chars of context before it.")
    notes.append("An equal wall-clock budget makes the step counts depend on the machine and its load: compare "
                 "models within one run, not across runs.")

    table = format_table(rows)
    seconds = time.perf_counter() - started
    print(f"\nheld-out cross-entropy ({subset} held-out chars; {args.budget_seconds:g}s of training per neural model; "
          f"run took {seconds:.0f}s):")
    print(table)
    if args.doc:
        write_doc(Path(args.doc), table, notes, args, sys.argv[1:] if argv is None else list(argv), seconds)
        print(f"report -> {args.doc}")
    return rows


if __name__ == "__main__":
    main()
