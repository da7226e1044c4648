"""Elementwise and row kernels on (4096, 1024) fp32: tensorc llvm vs reference vs numpy vs torch.

    python benchmarks/elementwise.py
"""

from __future__ import annotations

import math

import numpy as np
from common import machine, median_time, report, try_torch

import tensorc as tc
import tensorc.nn.functional as F

SHAPE = (4096, 1024)


def main() -> None:
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    n = x.size
    c = math.sqrt(2 / math.pi)
    programs = {
        "gelu (tanh form)": (lambda t: F.gelu(t, approximate="tanh"),
                             lambda a: 0.5 * a * (1 + np.tanh(c * (a + 0.044715 * a ** 3))), 2 * 4 * n),
        "(2x+1)*x": (lambda t: (t * 2.0 + 1.0) * t, lambda a: (a * 2 + 1) * a, 2 * 4 * n),
        "softmax (last axis)": (lambda t: tc.softmax(t, -1),
                                lambda a: np.exp(a - a.max(-1, keepdims=True)) / np.exp(a - a.max(-1, keepdims=True)).sum(-1, keepdims=True),
                                2 * 4 * n),
    }
    torch = try_torch()
    print(machine())
    for name, (fn, ref, nbytes) in programs.items():
        llvm = tc.jit(fn, target="llvm")
        refb = tc.jit(fn, target="reference")
        np.testing.assert_allclose(llvm(x), ref(x), rtol=1e-4, atol=1e-5)
        native = len(llvm.lower(x).kernels)
        rows = [("tensorc llvm", median_time(lambda f=llvm: f(x))), ("tensorc reference", median_time(lambda f=refb: f(x))),
                ("numpy", median_time(lambda f=ref: f(x)))]
        if torch is not None:
            tx = torch.from_numpy(x)
            tfn = {"gelu (tanh form)": lambda t=tx: torch.nn.functional.gelu(t, approximate="tanh"),
                   "(2x+1)*x": lambda t=tx: (t * 2 + 1) * t, "softmax (last axis)": lambda t=tx: torch.softmax(t, -1)}[name]
            rows.append(("torch eager", median_time(tfn)))
        report(f"{name} on {SHAPE} fp32 ({native} kernel(s))", rows, nbytes=nbytes)


if __name__ == "__main__":
    main()
