"""The LSTM language model's training step: tensorc against PyTorch's ``nn.LSTM``.

One step = forward (embedding -> LSTM -> linear), mean cross-entropy, backward
and an AdamW update, on a batch of 32 windows of 64 characters (vocabulary
65, embedding 64, hidden 256). Both sides start from the same weights and
the same batch, run with the same number of threads, warm up, and report the
median of the timed steps; tensorc's first call (trace + compile) is reported
apart.

    python benchmarks/lstm_step.py                 # all cores
    python benchmarks/lstm_step.py --threads 1 --steps 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

VOCAB, EMBED, HIDDEN, T, BATCH = 65, 64, 256, 64, 32
LR, BETAS, WEIGHT_DECAY, EPS = 1e-3, (0.9, 0.95), 0.1, 1e-8


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for numpy/BLAS and torch (default: all cores)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per framework")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (tensorc's first one compiles)")
    p.add_argument("--target", default=None, help="tensorc backend (default: tc.config's target)")
    return p.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # BLAS reads these when numpy is first imported
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # models/, when run from a checkout

import numpy as np  # noqa: E402

import tensorc as tc  # noqa: E402
from models.lstm import LSTMLM  # noqa: E402
from models.rnn import RecurrentLMConfig  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def step_flops() -> float:
    """Matmul FLOPs of one training step: forward, and backward ≈ 2x forward."""
    tokens = BATCH * T
    forward = 2 * tokens * (EMBED * 4 * HIDDEN + HIDDEN * 4 * HIDDEN + HIDDEN * VOCAB)
    return 3 * forward


def time_steps(run_step: Any, steps: int, warmup: int) -> tuple[list[float], float]:
    """(seconds of each timed step, seconds of the first call)."""
    t0 = time.perf_counter()
    run_step()
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        run_step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        run_step()
        times.append(time.perf_counter() - t0)
    return times, first


def tensorc_step(model: LSTMLM, params: Any, x: np.ndarray, y: np.ndarray, target: str | None) -> tuple[Any, list[float]]:
    """A closure running one compiled tensorc step, and the list its losses go to."""
    opt = tc.optim.AdamW(LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)

    def train_step(params: Any, opt_state: Any, x: Any, y: Any) -> Any:
        loss, grads = tc.value_and_grad(lambda p: model.loss(p, x, y))(params)
        params, opt_state = opt.update(grads, opt_state, params)
        return loss, params, opt_state

    step_fn = tc.jit(train_step, target=target)
    state = {"params": params, "opt": opt.init(params)}
    losses: list[float] = []

    def run() -> None:
        loss, state["params"], state["opt"] = step_fn(state["params"], state["opt"], x, y)
        losses.append(float(loss))

    return run, losses


def torch_step(torch: Any, params: Any, x: np.ndarray, y: np.ndarray) -> tuple[Any, list[float]]:
    """The same model and update in PyTorch, from the same weights."""

    class TorchLSTMLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(VOCAB, EMBED)
            self.rnn = torch.nn.LSTM(EMBED, HIDDEN, batch_first=True)
            self.head = torch.nn.Linear(HIDDEN, VOCAB)

        def forward(self, idx: Any) -> Any:
            return self.head(self.rnn(self.embedding(idx))[0])  # (B, T, V)

    model = TorchLSTMLM()
    model.load_state_dict({k: torch.tensor(v) for k, v in tc.nn.named_parameters(params).items()})
    # tensorc's AdamW decays parameters of two or more dimensions only (not biases): the same groups here
    groups = [{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
    tx, ty = torch.tensor(x), torch.tensor(y)
    losses: list[float] = []

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(tx).reshape(-1, VOCAB), ty.reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())

    return run, losses


def report(name: str, times: list[float], first: float | None = None) -> float:
    median = statistics.median(times)
    extra = f"; first call (trace + compile + run) {first * 1e3:.0f} ms" if first is not None else ""
    print(f"{name:>8}: median {median * 1e3:8.1f} ms/step  (min {min(times) * 1e3:.1f}, {len(times)} steps)  "
          f"{BATCH * T / median:9,.0f} tokens/s  {step_flops() / median / 1e9:6.2f} GFLOP/s{extra}")
    return median


def main(args: argparse.Namespace) -> None:
    try:
        import torch
    except ImportError:
        torch = None
    target = args.target or tc.config.get("target")
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical cores; {platform.system()} {platform.release()}")
    print(f"versions: python {platform.python_version()}, numpy {np.__version__}, tensorc {tc.__version__} "
          f"(target {target}), torch {torch.__version__ if torch else 'not installed'}")
    if torch is not None:
        torch.set_num_threads(args.threads)
    print(f"threads: {args.threads}; LSTM LM: vocab {VOCAB}, embedding {EMBED}, hidden {HIDDEN}, T {T}, batch {BATCH}, "
          f"AdamW; {step_flops() / 1e9:.2f} GFLOP of matmuls per step")

    model = LSTMLM(RecurrentLMConfig(vocab_size=VOCAB, block_size=T, n_embd=EMBED, hidden_size=HIDDEN))
    params = model.init(tc.random.key(0))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, (BATCH, T + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]

    run, tc_losses = tensorc_step(model, params, x, y, args.target)
    tc_times, first = time_steps(run, args.steps, args.warmup)
    tc_median = report("tensorc", tc_times, first)
    if torch is None:
        print("PyTorch is not installed: no comparison (pip install torch)")
        return
    run, torch_losses = torch_step(torch, params, x, y)
    torch_times, _ = time_steps(run, args.steps, args.warmup)
    torch_median = report("pytorch", torch_times)
    print(f"first-step loss: tensorc {tc_losses[0]:.6f}, pytorch {torch_losses[0]:.6f} (same weights and batch)")
    print(f"ratio tensorc / pytorch: {tc_median / torch_median:.2f}x the time per step")


if __name__ == "__main__":
    assert ARGS is not None
    main(ARGS)
