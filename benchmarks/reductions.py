"""Column sums (a bias gradient: the sum over every leading axis) in fp32: tensorc llvm vs numpy vs torch.

    python benchmarks/reductions.py

tensorc walks 8 slices of the leading axis in parallel, each into a partial row, and adds the
partial rows in a fixed order (``tensorc/kernel/lower.py``, ``partial_column_reduce``).
"""

from __future__ import annotations

import numpy as np
from common import machine, median_time, report, try_torch

import tensorc as tc

SHAPES = [(2048, 1024), (8192, 768), (16384, 768), (16, 128, 768)]


def main() -> None:
    torch = try_torch()
    print(machine())
    for shape in SHAPES:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        axes = tuple(range(x.ndim - 1))
        f = tc.jit(lambda a, axes=axes: a.sum(axes))
        np.testing.assert_allclose(np.asarray(f(x)), x.sum(axes), rtol=1e-3, atol=1e-3)
        rows = [("tensorc llvm", median_time(lambda f=f, x=x: f(x), repeat=21)),
                ("numpy", median_time(lambda x=x, axes=axes: x.sum(axes), repeat=21))]
        if torch is not None:
            tx = torch.from_numpy(x)
            rows.append(("torch eager", median_time(lambda t=tx, axes=axes: t.sum(axes), repeat=21)))
        report(f"sum over the leading axes of {shape} fp32", rows, nbytes=x.nbytes)


if __name__ == "__main__":
    main()
