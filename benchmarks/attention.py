"""Causal attention (8, 12, 256, 64) fp32 forward+backward: tensorc vs PyTorch SDPA and numpy.

    python benchmarks/attention.py

Rows: ``tensorc`` is ``tc.jit`` of ``F.scaled_dot_product_attention`` with the configured target;
``tensorc LLVM kernel`` calls the native flash-attention kernels
(``tensorc/backends/llvm/kernels/attention.py``) directly, as the LLVM backend runs a fused node:
forward ``fused_attention`` (o, lse), forward+backward that plus ``fused_attention_bwd``
(dq, dk, dv), allocation of the outputs included; ``(GPT views)`` runs them on q, k, v that are
transposed views of one (B, T, 3, H, D) buffer, as the GPT makes them. ``numpy`` is the op's numpy
reference (q kᵀ, mask, softmax, @ v with BLAS; the backward recomputes the probabilities), timed
apart with fewer calls.
``torch SDPA`` is ``torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)``
(and ``.backward``) with 2 threads. Variants run in alternating blocks (see :func:`blocked`);
the table shows medians.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
from common import blocked, machine, median_time, report, try_torch

import tensorc as tc
import tensorc.nn.functional as F
from tensorc.backends.llvm import library
from tensorc.backends.llvm.parallel import num_threads
from tensorc.ir import dtypes
from tensorc.ir.node import Attrs, Node
from tensorc.ir.registry import REGISTRY

B, H, T, D = 8, 12, 256, 64


def native(op: str, attrs: dict[str, Any], *arrays: np.ndarray) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(native kernel, numpy reference) of fused ``op`` bound to a node for these inputs: ``call(*arrays)``."""
    a = Attrs(attrs)
    shape, dtype = REGISTRY[op].infer([(x.shape, dtypes.dtype(x.dtype)) for x in arrays], a)
    ctx = SimpleNamespace(node=Node(op, (), a, shape, dtype))
    impl, ref = library.native_impl(op), REGISTRY[op].ref
    return (lambda *xs: impl(ctx, *xs)), (lambda *xs: ref(ctx, *xs))


def kernel_rows(q: np.ndarray, k: np.ndarray, v: np.ndarray, do: np.ndarray,
                views: tuple[np.ndarray, ...]) -> tuple[dict[str, Callable[[], Any]], dict[str, Callable[[], Any]]]:
    """Forward and forward+backward callables of the native kernels and of numpy."""
    attrs = dict(scale=D ** -0.5, causal=True, mask_kind="none")
    fwd, fwd_np = native("fused_attention", attrs, q, k, v)
    o, lse = fwd(q, k, v)
    bwd, bwd_np = native("fused_attention_bwd", attrs, do, q, k, v, o, lse)

    def fb(fwd: Callable[..., Any], bwd: Callable[..., Any], q: np.ndarray, k: np.ndarray, v: np.ndarray) -> Any:
        o, lse = fwd(q, k, v)
        return bwd(do, q, k, v, o, lse)

    vq, vk, vv = views
    f = {"tensorc LLVM kernel": lambda: fwd(q, k, v), "tensorc LLVM kernel (GPT views)": lambda: fwd(vq, vk, vv),
         "numpy": lambda: fwd_np(q, k, v)}
    fbs = {"tensorc LLVM kernel": lambda: fb(fwd, bwd, q, k, v), "tensorc LLVM kernel (GPT views)": lambda: fb(fwd, bwd, vq, vk, vv),
           "numpy": lambda: fb(fwd_np, bwd_np, q, k, v)}
    return f, fbs


def timed(fns: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """:func:`blocked` medians, except numpy's (seconds per call: a few calls suffice)."""
    slow = {k: fn for k, fn in fns.items() if k == "numpy"}
    out = blocked({k: fn for k, fn in fns.items() if k not in slow})
    out.update({k: median_time(fn, repeat=3, warmup=1) for k, fn in slow.items()})
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    q, k, v, do = (rng.standard_normal((B, H, T, D)).astype(np.float32) for _ in range(4))
    qkv = np.ascontiguousarray(np.stack([q, k, v], 2).transpose(0, 3, 2, 1, 4))  # (B, T, 3, H, D)
    views = tuple(qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, H, T, D) views
    fwd = tc.jit(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    fb = tc.jit(tc.grad(lambda q, k, v, do: (F.scaled_dot_product_attention(q, k, v, is_causal=True) * do).sum(),
                        argnums=(0, 1, 2)))
    print(f"kernels: forward {len(fwd.lower(q, k, v).kernels)}, forward+backward {len(fb.lower(q, k, v, do).kernels)}")
    rows_f = [("tensorc", median_time(lambda: fwd(q, k, v), repeat=5))]
    rows_fb = [("tensorc", median_time(lambda: fb(q, k, v, do), repeat=5))]
    kf, kfb = kernel_rows(q, k, v, do, views)
    torch = try_torch()
    if torch is not None:
        torch.set_num_threads(2)
        tq, tk, tv, tdo = (torch.from_numpy(a) for a in (q, k, v, do))
        sdpa = torch.nn.functional.scaled_dot_product_attention
        kf["torch SDPA"] = lambda: sdpa(tq, tk, tv, is_causal=True)

        def torch_fb() -> None:
            a, b, c = (t.detach().requires_grad_() for t in (tq, tk, tv))
            sdpa(a, b, c, is_causal=True).backward(tdo)

        kfb["torch SDPA"] = torch_fb
    tf, tfb = timed(kf), timed(kfb)
    rows_f += list(tf.items())
    rows_fb += list(tfb.items())
    print(machine() + f"; tensorc OpenMP threads {num_threads()}")
    flops = 4.0 * B * H * T * T * D / 2  # causal: half the scores
    report(f"causal attention forward {(B, H, T, D)}", rows_f, flops=flops)
    report(f"causal attention forward+backward {(B, H, T, D)}", rows_fb, flops=3.5 * flops)
    if "torch SDPA" in tf:
        print("\ntensorc LLVM kernel / torch SDPA: forward "
              f"{tf['tensorc LLVM kernel'] / tf['torch SDPA']:.2f}x, forward+backward "
              f"{tfb['tensorc LLVM kernel'] / tfb['torch SDPA']:.2f}x (time ratio; < 1 is faster)")


if __name__ == "__main__":
    main()
