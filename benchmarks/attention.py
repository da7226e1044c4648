"""Causal attention (8, 12, 256, 64) fp32 forward+backward: tensorc vs PyTorch SDPA.

    python benchmarks/attention.py
"""

from __future__ import annotations

import numpy as np
from common import machine, median_time, report, try_torch

import tensorc as tc
import tensorc.nn.functional as F

B, H, T, D = 8, 12, 256, 64


def main() -> None:
    rng = np.random.default_rng(0)
    q, k, v, do = (rng.standard_normal((B, H, T, D)).astype(np.float32) for _ in range(4))
    fwd = tc.jit(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    fb = tc.jit(tc.grad(lambda q, k, v, do: (F.scaled_dot_product_attention(q, k, v, is_causal=True) * do).sum(),
                        argnums=(0, 1, 2)))
    print(f"kernels: forward {len(fwd.lower(q, k, v).kernels)}, forward+backward {len(fb.lower(q, k, v, do).kernels)}")
    rows_f = [("tensorc", median_time(lambda: fwd(q, k, v), repeat=5))]
    rows_fb = [("tensorc", median_time(lambda: fb(q, k, v, do), repeat=5))]
    torch = try_torch()
    if torch is not None:
        tq, tk, tv, tdo = (torch.from_numpy(a) for a in (q, k, v, do))
        sdpa = torch.nn.functional.scaled_dot_product_attention
        rows_f.append(("torch SDPA", median_time(lambda: sdpa(tq, tk, tv, is_causal=True), repeat=5)))

        def torch_fb() -> None:
            a, b, c = (t.detach().requires_grad_() for t in (tq, tk, tv))
            sdpa(a, b, c, is_causal=True).backward(tdo)

        rows_fb.append(("torch SDPA", median_time(torch_fb, repeat=5)))
    print(machine())
    flops = 4.0 * B * H * T * T * D / 2  # causal: half the scores
    report(f"causal attention forward {(B, H, T, D)}", rows_f, flops=flops)
    report(f"causal attention forward+backward {(B, H, T, D)}", rows_fb, flops=3.5 * flops)


if __name__ == "__main__":
    main()
