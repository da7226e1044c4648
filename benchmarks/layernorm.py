"""LayerNorm (8192, 768) fp32 forward and forward+backward: tensorc vs PyTorch eager.

    python benchmarks/layernorm.py
"""

from __future__ import annotations

import numpy as np
from common import machine, median_time, report, try_torch

import tensorc as tc
import tensorc.nn.functional as F

ROWS, D = 8192, 768


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS, D)).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
    b = (0.1 * rng.standard_normal(D)).astype(np.float32)
    dy = rng.standard_normal((ROWS, D)).astype(np.float32)
    fwd = tc.jit(lambda x, w, b: F.layer_norm(x, D, w, b))
    fwd_bwd = tc.jit(tc.grad(lambda x, w, b, dy: (F.layer_norm(x, D, w, b) * dy).sum(), argnums=(0, 1, 2)))
    rows_f = [("tensorc", median_time(lambda: fwd(x, w, b)))]
    rows_fb = [("tensorc", median_time(lambda: fwd_bwd(x, w, b, dy)))]
    print(f"kernels: forward {len(fwd.lower(x, w, b).kernels)}, forward+backward {len(fwd_bwd.lower(x, w, b, dy).kernels)}")
    mean = x.mean(-1, keepdims=True)
    rows_f.append(("numpy (two-pass)", median_time(lambda: (x - mean) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b)))
    torch = try_torch()
    if torch is not None:
        tx, tw, tb, tdy = (torch.from_numpy(v) for v in (x, w, b, dy))
        rows_f.append(("torch eager F.layer_norm", median_time(lambda: torch.nn.functional.layer_norm(tx, (D,), tw, tb))))

        def torch_fb() -> None:
            xx, ww, bb = (t.detach().requires_grad_() for t in (tx, tw, tb))
            torch.nn.functional.layer_norm(xx, (D,), ww, bb).backward(tdy)

        rows_fb.append(("torch eager F.layer_norm", median_time(torch_fb)))
    print(machine())
    mb = 4 * ROWS * D
    report(f"layernorm forward ({ROWS}, {D})", rows_f, nbytes=2 * mb)
    report(f"layernorm forward+backward ({ROWS}, {D})", rows_fb, nbytes=5 * mb)


if __name__ == "__main__":
    main()
