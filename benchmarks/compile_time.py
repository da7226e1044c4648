"""Compile time of the GPT training step (tiny preset, batch 16, AdamW): cold and warm.

Each measurement is a fresh process: trace + passes + schedule + code generation
(``lower`` + ``compile``) plus the first call minus a second call (so the library
routines' one-time compile or load counts, the step itself does not). Cold uses an
empty ``TENSORC_CACHE_DIR``; warm reuses it.

    python benchmarks/compile_time.py [--warm 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import sys, time
sys.path.insert(0, {bench!r}); sys.path.insert(0, {root!r})
import numpy as np
from models.gpt import from_preset
import gpt_step
cfg = from_preset("tiny", vocab_size=65)
step, params, state = gpt_step.tensorc_step(cfg)
x = np.zeros((16, cfg.block_size), np.int32)
t0 = time.perf_counter()
compiled = step.lower(params, state, x, x).compile()
t1 = time.perf_counter()
compiled(params, state, x, x)
t2 = time.perf_counter()
compiled(params, state, x, x)
t3 = time.perf_counter()
print(f"{{t1 - t0:.3f}} {{(t2 - t1) - (t3 - t2):.3f}} {{t3 - t2:.3f}}")
"""


def measure(cache: str) -> tuple[float, float, float]:
    here = os.path.dirname(os.path.abspath(__file__))
    code = CHILD.format(bench=here, root=os.path.dirname(here))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TENSORC_CACHE_DIR": cache}).stdout.split()
    return float(out[0]), float(out[1]), float(out[2])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warm", type=int, default=2, help="warm runs after the cold one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        rows = [("cold", *measure(cache))] + [("warm", *measure(cache)) for _ in range(args.warm)]
        print(f"GPT training step compile time ({time.perf_counter() - t:.0f} s in all)")
        print(f"{'run':<6} {'lower+compile':>14} {'first-call extra':>17} {'total':>8} {'one step':>9}")
        for name, comp, first, one in rows:
            print(f"{name:<6} {comp:13.2f}s {first:16.2f}s {comp + first:7.2f}s {one:8.2f}s")


if __name__ == "__main__":
    main()
