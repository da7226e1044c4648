"""Translate human-written dates to ISO dates with a seq2seq model with attention.

    python examples/translate_dates.py --steps 300
    python examples/translate_dates.py --steps 3000 --attention dot --plot attention.png

Dates such as "Tuesday, March 4, 1997", "04/03/1997" or "4 mar 97" (generated
by models/dates.py, with a fixed seed) are read character by character by an LSTM encoder; the
decoder (Bahdanau attention by default) writes "1997-03-04". After training
the script prints the exact-match accuracy of greedy decoding on held-out
dates and saves a heatmap of the attention weights of one example.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import tensorc as tc  # noqa: E402
from models.dates import Chars, random_dates  # noqa: E402
from models.seq2seq import Seq2Seq, Seq2SeqConfig, shift_right  # noqa: E402


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--attention", default="additive", choices=["none", "additive", "dot"])
    ap.add_argument("--cell", default="lstm", choices=["lstm", "gru"])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--plot", default="date_attention.png", help="where to save the heatmap ('' to skip)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    train, heldout = random_dates(20000, args.seed), random_dates(args.heldout, args.seed + 1)
    chars_src, chars_tgt = Chars([s for s, _ in train]), Chars(["0123456789-"])
    src_len = max(len(s) for s, _ in train + heldout)
    src_all = chars_src.encode([s for s, _ in train], src_len)  # (N, S)
    tgt_all = chars_tgt.encode([t for _, t in train], 11, eos=True)  # (N, 11): 10 characters and eos
    model = Seq2Seq(Seq2SeqConfig(src_vocab=len(chars_src.itos), tgt_vocab=len(chars_tgt.itos), n_embd=16,
                                  hidden_size=args.hidden, cell=args.cell, attention=args.attention))
    params = model.init(tc.random.key(args.seed))
    opt = tc.optim.Adam(lr=args.lr)
    state = opt.init(params)

    @tc.jit
    def train_step(params: Any, state: Any, src: Any, tgt_in: Any, tgt_out: Any) -> tuple[Any, Any, Any]:
        loss, grads = tc.value_and_grad(lambda p: model.loss(p, src, tgt_in, tgt_out))(params)
        grads, _ = tc.optim.clip_grad_norm(grads, 1.0)
        params, state = opt.update(grads, state, params)
        return params, state, loss

    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        rows = rng.integers(0, len(train), args.batch_size)
        tgt = tgt_all[rows]  # (B, 11)
        params, state, loss = train_step(params, state, src_all[rows], shift_right(tgt, 1), tgt)
        if step == 1 or step % max(1, args.steps // 10) == 0:
            print(f"step {step:5d}  loss {float(loss):.4f}  {time.perf_counter() - started:.1f}s", flush=True)
    train_seconds = time.perf_counter() - started

    src_held = chars_src.encode([s for s, _ in heldout], src_len)  # (N, S)
    tokens, weights = model.greedy_decode(params, src_held, max_len=11)
    guesses = [chars_tgt.decode(row) for row in tokens.tolist()]
    accuracy = float(np.mean([g == t for g, (_, t) in zip(guesses, heldout)]))
    print(f"trained {args.steps} steps in {train_seconds:.1f}s; held-out exact match {accuracy:.1%} ({len(heldout)} dates)")
    for (text, truth), guess in list(zip(heldout, guesses))[:5]:
        print(f"  {text!r:32} -> {guess!r} (want {truth!r})")

    if args.plot and args.attention != "none":
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        text, guess = heldout[0][0], guesses[0]
        out_len = min(len(guess) + 1, weights.shape[1])  # and the eos step, when it was emitted
        fig, ax = plt.subplots(figsize=(max(4, len(text) * 0.3), 4))
        ax.imshow(weights[0, :out_len, : len(text)], cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(text)), list(text))
        ax.set_yticks(range(out_len), (list(guess) + ["<eos>"])[:out_len])
        ax.set_xlabel("source")
        ax.set_ylabel("output")
        ax.set_title(f"{args.attention} attention")
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"attention heatmap -> {args.plot}")
    return accuracy


if __name__ == "__main__":
    main()
