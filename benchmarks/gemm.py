"""GEMM 1024³ fp32: tensorc vs numpy (OpenBLAS) vs PyTorch.

    python benchmarks/gemm.py [--n 1024]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import machine, median_time, report, try_torch

import tensorc as tc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    args = ap.parse_args()
    n = args.n
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    f = tc.jit(lambda a, b: a @ b)
    np.testing.assert_allclose(f(a, b), a @ b, rtol=1e-3, atol=1e-3)
    rows = [("tensorc", median_time(lambda: f(a, b))), ("numpy", median_time(lambda: a @ b))]
    torch = try_torch()
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        rows.append(("torch eager", median_time(lambda: ta @ tb)))
    print(machine())
    report(f"matmul {n}x{n}x{n} fp32", rows, flops=2.0 * n ** 3, nbytes=3 * 4 * n * n)


if __name__ == "__main__":
    main()
