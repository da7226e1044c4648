"""The information bottleneck of seq2seq: exact-match accuracy by input length, with and without attention.

    python examples/attention_bottleneck.py                  # defaults: about 4 minutes on 2 cores
    python examples/attention_bottleneck.py --steps 2000 --task reverse

Random strings of length 1..40 over a small alphabet (generated, seeded) are
copied (or reversed) by three models trained on the same batches:

- ``seq2seq-none``: an LSTM encoder-decoder whose decoder sees only the
  encoder's final state -- every source character has to fit through that one
  vector, so long inputs come out wrong;
- ``seq2seq-additive``: the same with Bahdanau attention over all encoder states;
- ``transformer``: the encoder-decoder Transformer (cross-attention).

After training, greedy decoding of a fixed held-out set (the same number of
strings in each length bucket) is scored by exact match, and a table of
accuracy per length bucket (1-10, 11-20, ...) is printed, one column per model.
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
from models.seq2seq import Seq2Seq, Seq2SeqConfig, shift_right, strip_after_eos  # noqa: E402
from models.transformer import Transformer, TransformerConfig  # noqa: E402

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
FIRST_SYMBOL = 3  # symbol k of the alphabet is token FIRST_SYMBOL + k
MODELS = ("seq2seq-none", "seq2seq-additive", "transformer")


def random_strings(n: int, max_len: int, alphabet: int, rng: np.random.Generator, lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """``n`` random symbol strings (token ids) with lengths uniform in 1..max_len unless given."""
    if lengths is None:
        lengths = rng.integers(1, max_len + 1, n)
    return [rng.integers(FIRST_SYMBOL, FIRST_SYMBOL + alphabet, int(length)) for length in lengths]


def target_of(source: np.ndarray, task: str) -> np.ndarray:
    return source[::-1] if task == "reverse" else source


def encode_batch(strings: list[np.ndarray], length: int, eos: bool = False) -> np.ndarray:
    """(N, length) token ids, padded with 0, optionally ending in eos."""
    out = np.full((len(strings), length), PAD_ID, np.int64)  # (N, L)
    for row, ids in enumerate(strings):
        seq = np.concatenate([ids, [EOS_ID]]) if eos else ids
        out[row, : len(seq)] = seq
    return out


def length_buckets(max_len: int, width: int) -> list[tuple[int, int]]:
    """[(1, width), (width + 1, 2 width), ...] covering 1..max_len."""
    return [(lo, min(lo + width - 1, max_len)) for lo in range(1, max_len + 1, width)]


def build(name: str, vocab: int, args: argparse.Namespace) -> Any:
    if name.startswith("seq2seq"):
        return Seq2Seq(Seq2SeqConfig(src_vocab=vocab, tgt_vocab=vocab, n_embd=16, hidden_size=args.hidden,
                                     cell="lstm", attention=name.split("-", 1)[1]))
    return Transformer(TransformerConfig(src_vocab=vocab, tgt_vocab=vocab, d_model=args.d_model, n_heads=4,
                                         n_enc_layers=1, n_dec_layers=1, d_ff=2 * args.d_model,
                                         max_len=args.max_len + 2, pre_ln=True))


def train_model(name: str, model: Any, batches: list[tuple[np.ndarray, np.ndarray]], args: argparse.Namespace) -> tuple[Any, float]:
    """Adam with gradient clipping on the given batches; returns (params, seconds)."""
    params = model.init(tc.random.key(args.seed))
    opt = tc.optim.Adam(lr=args.lr)
    state = opt.init(params)

    @tc.jit
    def train_step(params: Any, state: Any, src: Any, tgt_in: Any, tgt_out: Any) -> tuple[Any, Any, Any]:
        loss, grads = tc.value_and_grad(lambda p: model.loss(p, src, tgt_in, tgt_out))(params)
        grads, _ = tc.optim.clip_grad_norm(grads, 1.0)
        params, state = opt.update(grads, state, params)
        return params, state, loss

    started = time.perf_counter()
    every = max(1, len(batches) // 5)
    for step, (src, tgt) in enumerate(batches, start=1):
        params, state, loss = train_step(params, state, src, shift_right(tgt, BOS_ID), tgt)
        if step == 1 or step % every == 0 or step == len(batches):
            print(f"  [{name}] step {step:5d}/{len(batches)}  loss {float(loss):.4f}  {time.perf_counter() - started:6.1f}s",
                  flush=True)
    return params, time.perf_counter() - started


def decode(name: str, model: Any, params: Any, src: np.ndarray, max_len: int) -> list[list[int]]:
    if name.startswith("seq2seq"):
        tokens, _ = model.greedy_decode(params, src, max_len=max_len)
    else:
        tokens = model.greedy_decode(params, src, max_len=max_len)
    return [strip_after_eos(row, EOS_ID) for row in np.asarray(tokens).tolist()]


def format_table(buckets: list[tuple[int, int]], names: list[str], accuracy: dict[str, list[float]],
                 overall: dict[str, float], seconds: dict[str, float]) -> str:
    """A Markdown table: one row per length bucket, one column per model."""
    header = "| length | " + " | ".join(names) + " |"
    lines = [header, "|" + "---|" * (len(names) + 1)]
    for i, (lo, hi) in enumerate(buckets):
        lines.append(f"| {lo}-{hi} | " + " | ".join(f"{accuracy[n][i]:.1%}" for n in names) + " |")
    lines.append("| all | " + " | ".join(f"{overall[n]:.1%}" for n in names) + " |")
    lines.append("| train s | " + " | ".join(f"{seconds[n]:.0f}" for n in names) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="copy", choices=["copy", "reverse"])
    ap.add_argument("--steps", type=int, default=300, help="training steps per model")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--alphabet", type=int, default=8, help="how many distinct symbols")
    ap.add_argument("--max-len", type=int, default=40, help="inputs have lengths 1..max-len")
    ap.add_argument("--bucket", type=int, default=10, help="width of the length buckets in the table")
    ap.add_argument("--per-bucket", type=int, default=50, help="held-out strings per length bucket")
    ap.add_argument("--hidden", type=int, default=64, help="the seq2seq LSTMs' hidden size")
    ap.add_argument("--d-model", type=int, default=64, help="the Transformer's width")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        ap.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")

    vocab = FIRST_SYMBOL + args.alphabet
    rng = np.random.default_rng(args.seed)
    batches = []  # the same batches for every model
    for _ in range(args.steps):
        strings = random_strings(args.batch_size, args.max_len, args.alphabet, rng)
        batches.append((encode_batch(strings, args.max_len),  # (B, S)
                        encode_batch([target_of(s, args.task) for s in strings], args.max_len + 1, eos=True)))  # (B, S + 1)
    buckets = length_buckets(args.max_len, args.bucket)
    held_rng = np.random.default_rng(args.seed + 1)
    held_lengths = np.concatenate([held_rng.integers(lo, hi + 1, args.per_bucket) for lo, hi in buckets])
    held = random_strings(len(held_lengths), args.max_len, args.alphabet, held_rng, held_lengths)
    held_src = encode_batch(held, args.max_len)  # (N, S)
    print(f"task {args.task}: lengths 1..{args.max_len}, alphabet {args.alphabet}, {args.steps} steps x batch "
          f"{args.batch_size}, held out {len(held)} strings ({args.per_bucket} per bucket)", flush=True)

    accuracy: dict[str, list[float]] = {}
    char_accuracy: dict[str, list[float]] = {}
    overall: dict[str, float] = {}
    char_overall: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for name in names:
        model = build(name, vocab, args)
        params, seconds[name] = train_model(name, model, batches, args)
        guesses = decode(name, model, params, held_src, args.max_len + 1)
        wants = [target_of(s, args.task).tolist() for s in held]
        correct = np.array([g == w for g, w in zip(guesses, wants)])
        # per-character accuracy (position by position, a missing or extra character counts as wrong) shows
        # progress before whole strings come out right
        chars = np.array([sum(a == b for a, b in zip(g, w)) / max(len(g), len(w)) for g, w in zip(guesses, wants)])
        in_bucket = [(held_lengths >= lo) & (held_lengths <= hi) for lo, hi in buckets]
        accuracy[name] = [float(correct[m].mean()) for m in in_bucket]
        char_accuracy[name] = [float(chars[m].mean()) for m in in_bucket]
        overall[name], char_overall[name] = float(correct.mean()), float(chars.mean())
        print(f"  [{name}] trained in {seconds[name]:.1f}s; held-out exact match {overall[name]:.1%}", flush=True)

    print(f"\nexact-match accuracy by input length ({args.task}, {args.steps} steps):")
    print(format_table(buckets, names, accuracy, overall, seconds))
    print(f"\nper-character accuracy by input length ({args.task}, {args.steps} steps):")
    print(format_table(buckets, names, char_accuracy, char_overall, seconds))
    return accuracy


if __name__ == "__main__":
    main()
