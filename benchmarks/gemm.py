"""GEMM fp32: tensorc vs numpy (OpenBLAS) vs PyTorch, 1024³ and the GPT layer shapes.

    python benchmarks/gemm.py [--n 1024] [--threads 2] [--shapes all|square|gpt] [--pick 0,3] [--rounds 3]

Rows: ``tensorc`` is ``tc.jit(lambda a, b: a @ b)`` (the whole compiled program, default target);
``tensorc llvm gemm`` is the LLVM backend's library GEMM (``kernels/gemm.py``, through ``kernels/matmul.py``) called directly,
with 1 and ``--threads`` threads; then numpy and torch eager with ``--threads`` threads.

OpenBLAS, libgomp (ours) and torch's own OpenMP runtime each keep their worker threads spinning
for a while after a call, so timing them interleaved call by call on 2 cores makes them fight
(``shared/research/llvm-cpu-facts.md``). Each implementation therefore runs in blocks: a pause
(``--pause`` s, longer than the spin), 2 warm-up calls, ``--repeat`` timed calls; the blocks of
all implementations alternate ``--rounds`` times and the median over all timed calls is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from common import machine, median_time, report, try_torch

import tensorc as tc

GPT_SHAPES = [  # (M, N, K, A transposed, B transposed): GPT-2 small-ish layers, B*T = 2048 rows
    (2048, 768, 256, False, False),  # qkv projection (C=256 -> 3C)
    (2048, 1024, 256, False, False),  # MLP up (C -> 4C)
    (2048, 256, 1024, False, False),  # MLP down (4C -> C)
    (256, 768, 2048, True, False),  # dW of the qkv projection: x^T @ dy
    (256, 1024, 2048, True, False),  # dW of MLP up
    (1024, 256, 2048, True, False),  # dW of MLP down
    (2048, 256, 768, False, True),  # dx of the qkv projection: dy @ W^T
    (2048, 1024, 256, False, True),  # dx of MLP down
]


def blocked_times(runs: dict[str, Callable[[], Any]], rounds: int, repeat: int, pause: float) -> dict[str, list[float]]:
    """Seconds of each timed call per implementation, in alternating blocks (see the module docstring)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            time.sleep(pause)
            fn()
            fn()
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def operands(m: int, n: int, k: int, ta: bool, tb: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """f32 operands of an (m x k) @ (k x n) product; transposed ones are views of row-major arrays."""
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    return (a.T if ta else a), (b.T if tb else b)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", choices=["all", "square", "gpt"], default="all")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pause", type=float, default=0.3)
    ap.add_argument("--pick", default="", help="comma-separated indices into the GEMM shape list (e.g. to run one at a time)")
    args = ap.parse_args()
    n = args.n
    rng = np.random.default_rng(0)
    torch = try_torch()
    if torch is not None:
        torch.set_num_threads(args.threads)
    print(machine())

    if args.shapes in ("all", "square") and not args.pick:  # the original rows: the compiled program vs numpy vs torch
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        f = tc.jit(lambda a, b: a @ b)
        np.testing.assert_allclose(f(a, b), a @ b, rtol=1e-3, atol=1e-3)
        rows = [("tensorc", median_time(lambda: f(a, b))), ("numpy", median_time(lambda: a @ b))]
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            rows.append(("torch eager", median_time(lambda: ta @ tb)))
        report(f"matmul {n}x{n}x{n} fp32 (tc.jit)", rows, flops=2.0 * n ** 3, nbytes=3 * 4 * n * n)

    try:
        from tensorc.backends.llvm import parallel
        from tensorc.backends.llvm.kernels import matmul as gemm
    except ImportError as e:  # llvmlite missing
        print(f"\n(no LLVM backend: {e})")
        return
    shapes = []
    if args.shapes in ("all", "square"):
        shapes.append((n, n, n, False, False))
    if args.shapes in ("all", "gpt"):
        shapes += GPT_SHAPES
    if args.pick:
        shapes = [shapes[int(i)] for i in args.pick.split(",")]
    summary = []
    for m, nn, k, ta, tb in shapes:
        a, b = operands(m, nn, k, ta, tb, rng)
        ref = a.astype(np.float64) @ b.astype(np.float64)
        np.testing.assert_allclose(gemm.matmul(None, a, b), ref, rtol=1e-3, atol=1e-3)

        def llvm_gemm(threads: int, a: np.ndarray = a, b: np.ndarray = b) -> Callable[[], Any]:
            def run() -> Any:
                parallel.set_num_threads(threads)
                return gemm.matmul(None, a, b)
            return run

        runs: dict[str, Callable[[], Any]] = {
            "tensorc llvm gemm 1 thread": llvm_gemm(1),
            f"tensorc llvm gemm {args.threads} threads": llvm_gemm(args.threads),
            "numpy": lambda a=a, b=b: a @ b,
        }
        if torch is not None:
            ta_, tb_ = torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b))
            runs["torch eager"] = lambda ta_=ta_, tb_=tb_: ta_ @ tb_
        times = blocked_times(runs, args.rounds, args.repeat, args.pause)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        best = {name: min(ts) for name, ts in times.items()}
        rows = list(med.items())
        label = f"{m}x{k}{'ᵀ' if ta else ''} @ {k}x{nn}{'ᵀ' if tb else ''}"
        report(f"GEMM {label} fp32 (M={m} N={nn} K={k})", rows, flops=2.0 * m * nn * k,
               nbytes=4 * (m * k + k * nn + m * nn), baseline="numpy")
        one, par = "tensorc llvm gemm 1 thread", f"tensorc llvm gemm {args.threads} threads"
        summary.append((label, *(2e-9 * m * nn * k / t[par] for t in (med, best)),
                        *(t["numpy"] / t[par] for t in (med, best)), *(t[one] / t[par] for t in (med, best))))
    parallel.set_num_threads(args.threads)
    print(f"\n## summary: tensorc llvm gemm, {args.threads} threads (median of the timed calls | best call, the"
          " closer to an unloaded machine when other processes share the cores)")
    print(f"{'shape':<24} {'GFLOP/s':>15} {'speed vs numpy':>17} {'vs 1 thread':>15}")
    for label, gf, gf_best, vs_np, vs_np_best, scale, scale_best in summary:
        print(f"{label:<24} {gf:>6.1f} | {gf_best:>6.1f} {vs_np:>6.2f}x | {vs_np_best:>5.2f}x {scale:>5.2f}x | {scale_best:>5.2f}x")


if __name__ == "__main__":
    main()
