"""Shared helpers for the benchmark scripts: machine facts, timing, ratio tables.

Benchmarks are scripts, not tests. Each compares tensorc with what a user would
pick instead (numpy, PyTorch eager, torch.compile when it works) in the same
process, warms up, and reports medians and ratios.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

PEAK_GFLOPS = 234.0  # fp32, 2 cores, measured before the project started (shared/research/cpu-anchors.md)
PEAK_GBS = 27.0  # copy bandwidth, same source


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [f"CPU {cpu}", f"{os.cpu_count()} cores", f"Python {platform.python_version()}", f"numpy {np.__version__}"]
    torch = try_torch()
    if torch is not None:
        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    import tensorc

    parts.append(f"tensorc {tensorc.__version__} target {tensorc.config.target}")
    try:
        load = os.getloadavg()[0]
        parts.append(f"load average {load:.1f}")
    except OSError:
        pass
    return "; ".join(parts)


def try_torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def median_time(fn: Callable[[], Any], repeat: int = 7, warmup: int = 2, min_time: float = 0.0) -> float:
    """Median seconds of ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if min_time and sum(times) > min_time * 10:
            break
    return statistics.median(times)


def report(title: str, rows: list[tuple[str, float]], flops: float = 0.0, nbytes: float = 0.0,
           baseline: str | None = None) -> None:
    """Print one table: time, GFLOP/s, GB/s, and the ratio to ``baseline`` (tensorc's row by default)."""
    print(f"\n## {title}")
    base = dict(rows).get(baseline or rows[0][0])
    print(f"{'implementation':<28} {'median ms':>10} {'GFLOP/s':>9} {'% peak':>7} {'GB/s':>7} {'time / ' + (baseline or rows[0][0]):>22}")
    for name, t in rows:
        gf = flops / t / 1e9 if flops else 0.0
        gb = nbytes / t / 1e9 if nbytes else 0.0
        ratio = t / base if base else float("nan")
        print(f"{name:<28} {t * 1e3:>10.2f} {gf:>9.1f} {100 * gf / PEAK_GFLOPS if flops else 0:>6.0f}% {gb:>7.1f} {ratio:>22.2f}")


def blocked(fns: dict[str, Callable[[], Any]], rounds: int = 3, block: int = 6, pause: float = 0.05) -> dict[str, float]:
    """Median seconds per variant over ``rounds`` rounds of ``block`` back-to-back calls each (after one
    warm-up call per block). Blocks alternate, not single calls: torch and tensorc each run their own
    OpenMP pool, whose threads spin for a while after a parallel region, so calling one right after the
    other makes both fight for the cores (no user mixes them call by call); the pause lets the other
    pool's threads go to sleep."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(pause)
            for i in range(block + 1):
                t0 = time.perf_counter()
                fn()
                if i:
                    times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}
