"""LayerNorm (8192, 768) fp32 forward and forward+backward: tensorc vs numpy and PyTorch eager.

    python benchmarks/layernorm.py            # layernorm
    python benchmarks/layernorm.py --xent     # also softmax cross-entropy (2048 x 65 and 2048 x 50257)
    OMP_NUM_THREADS=1 python benchmarks/layernorm.py   # one thread for tensorc and torch

Rows: ``tensorc`` is ``tc.jit`` with the configured target; ``tensorc LLVM kernels`` calls the
native fused kernels (``tensorc/backends/llvm/kernels/norms.py``) directly, as the LLVM backend
runs a fused node: forward ``fused_layernorm``, forward+backward that plus ``fused_layernorm_bwd``
(dx, dw, db), allocation of the outputs included. The variants are timed in alternating blocks
(see :func:`blocked`), so load from other processes hits them alike; the table shows medians.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
from common import blocked, machine, report, try_torch

import tensorc as tc
import tensorc.nn.functional as F
from tensorc.backends.llvm import library
from tensorc.backends.llvm.parallel import num_threads
from tensorc.ir import dtypes
from tensorc.ir.node import Attrs, Node
from tensorc.ir.registry import REGISTRY

ROWS, D = 8192, 768


def native(op: str, attrs: dict[str, Any], *arrays: np.ndarray) -> Callable[..., Any]:
    """The native kernel of fused ``op`` bound to a node for these input types: ``call(*arrays)``."""
    a = Attrs(attrs)
    shape, dtype = REGISTRY[op].infer([(x.shape, dtypes.dtype(x.dtype)) for x in arrays], a)
    ctx = SimpleNamespace(node=Node(op, (), a, shape, dtype))
    impl = library.native_impl(op)
    return lambda *xs: impl(ctx, *xs)


def layernorm(torch: Any) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS, D)).astype(np.float32)
    w = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
    b = (0.1 * rng.standard_normal(D)).astype(np.float32)
    dy = rng.standard_normal((ROWS, D)).astype(np.float32)
    fwd = tc.jit(lambda x, w, b: F.layer_norm(x, D, w, b))
    fwd_bwd = tc.jit(tc.grad(lambda x, w, b, dy: (F.layer_norm(x, D, w, b) * dy).sum(), argnums=(0, 1, 2)))
    print(f"kernels: forward {len(fwd.lower(x, w, b).kernels)}, forward+backward {len(fwd_bwd.lower(x, w, b, dy).kernels)}")

    attrs = dict(n_axes=1, eps=1e-5, has_weight=True, has_bias=True)
    ln = native("fused_layernorm", attrs, x, w, b)
    mean0, rstd0 = x.mean(-1), 1 / np.sqrt(x.var(-1) + 1e-5)
    ln_bwd = native("fused_layernorm_bwd", attrs, dy, x, mean0, rstd0, w)

    def native_fb() -> Any:
        _, mean, rstd = ln(x, w, b)
        return ln_bwd(dy, x, mean, rstd, w)

    def numpy_f() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean = x.mean(-1, keepdims=True)
        rstd = 1 / np.sqrt(x.var(-1, keepdims=True) + np.float32(1e-5))
        return (x - mean) * rstd * w + b, mean, rstd

    def numpy_fb() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _, mean, rstd = numpy_f()
        xhat = (x - mean) * rstd
        g = dy * w
        dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
        return dx, (dy * xhat).sum(0), dy.sum(0)

    got, want = native_fb(), numpy_fb()
    err = max(float(np.abs(a - b_).max()) for a, b_ in zip(got, want))
    print(f"max |LLVM kernels - numpy| over dx, dw, db: {err:.2e}")

    f_fns: dict[str, Callable[[], Any]] = {"tensorc LLVM kernels": lambda: ln(x, w, b), "tensorc": lambda: fwd(x, w, b),
                                           "numpy (two-pass)": numpy_f}
    fb_fns: dict[str, Callable[[], Any]] = {"tensorc LLVM kernels": native_fb, "tensorc": lambda: fwd_bwd(x, w, b, dy),
                                            "numpy": numpy_fb}
    if torch is not None:
        tx, tw, tb, tdy = (torch.from_numpy(v) for v in (x, w, b, dy))
        f_fns["torch eager F.layer_norm"] = lambda: torch.nn.functional.layer_norm(tx, (D,), tw, tb)

        def torch_fb() -> None:
            xx, ww, bb = (t.detach().requires_grad_() for t in (tx, tw, tb))
            torch.nn.functional.layer_norm(xx, (D,), ww, bb).backward(tdy)

        fb_fns["torch eager F.layer_norm"] = torch_fb
    base = "torch eager F.layer_norm" if torch is not None else None
    mb = 4 * ROWS * D
    report(f"layernorm forward ({ROWS}, {D})", list(blocked(f_fns).items()), nbytes=2 * mb, baseline=base)
    report(f"layernorm forward+backward ({ROWS}, {D})", list(blocked(fb_fns).items()), nbytes=5 * mb, baseline=base)


def cross_entropy(torch: Any, rows: int, classes: int) -> None:
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((rows, classes)).astype(np.float32)
    target = rng.integers(0, classes, rows)
    attrs = dict(reduction="mean", ignore_index=-100)
    xent = native("fused_softmax_xent", attrs, logits, target)
    lse0 = np.zeros(rows, np.float32)
    one = np.array(1.0, np.float32)
    xent_bwd = native("fused_softmax_xent_bwd", attrs, one, logits, target, lse0)

    def native_fb() -> np.ndarray:
        _, lse = xent(logits, target)
        return xent_bwd(one, logits, target, lse)

    def numpy_fb() -> np.ndarray:
        m = logits.max(-1, keepdims=True)
        e = np.exp(logits - m)
        p = e / e.sum(-1, keepdims=True)
        p[np.arange(rows), target] -= 1
        return p / rows

    print(f"\nmax |LLVM kernels - numpy| dlogits ({rows}, {classes}): {np.abs(native_fb() - numpy_fb()).max():.2e}")
    fns: dict[str, Callable[[], Any]] = {"tensorc LLVM kernels": native_fb, "numpy": numpy_fb}
    if torch is not None:
        tl, tt = torch.from_numpy(logits), torch.from_numpy(target)

        def torch_fb() -> None:
            xx = tl.detach().requires_grad_()
            torch.nn.functional.cross_entropy(xx, tt).backward()

        fns["torch eager F.cross_entropy"] = torch_fb
    base = "torch eager F.cross_entropy" if torch is not None else None
    nb = 4 * rows * classes
    report(f"softmax cross-entropy forward+backward ({rows}, {classes})", list(blocked(fns, block=3 if classes > 1000 else 6).items()),
           nbytes=3 * nb, baseline=base)


def main() -> None:
    torch = try_torch()
    if torch is not None:  # as many threads as tensorc's OpenMP regions (OMP_NUM_THREADS, else every core)
        torch.set_num_threads(num_threads())
    print(machine())
    print(f"tensorc LLVM kernels: {num_threads()} OpenMP threads, {library.lanes(4)} float32 lanes")
    layernorm(torch)
    if "--xent" in sys.argv:
        for classes in (65, 50257):
            cross_entropy(torch, 2048, classes)


if __name__ == "__main__":
    main()
