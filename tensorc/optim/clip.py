"""Gradient-norm clipping."""

from __future__ import annotations

from typing import Any

from ..frontend import ops, pytree
from ..frontend.tensor import Tensor


def global_norm(tree: Any) -> Tensor:
    """The L2 norm of every leaf of ``tree`` taken together (computed in float32 or wider)."""
    total = None
    for leaf in pytree.flatten(tree)[0]:
        if leaf is None:
            continue
        t = ops.as_tensor(leaf)
        if t.dtype.itemsize < 4:
            t = ops.cast(t, "float32")
        sq = ops.sum(ops.mul(t, t))
        total = sq if total is None else ops.add(total, ops.cast(sq, total.dtype))
    return ops.sqrt(total) if total is not None else ops.tensor(0.0)


def clip_grad_norm(grads: Any, max_norm: float, eps: float = 1e-6) -> tuple[Any, Tensor]:
    """Scale ``grads`` so their global norm is at most ``max_norm``; returns ``(grads, norm_before)``.

    >>> import numpy as np, tensorc as tc
    >>> g, n = clip_grad_norm({"a": np.array([3.0, 4.0], np.float32)}, 1.0)
    >>> float(n), [round(v, 4) for v in g["a"].tolist()]
    (5.0, [0.6, 0.8])
    """
    norm = global_norm(grads)
    scale = ops.minimum(ops.div(max_norm, ops.add(norm, eps)), 1.0)
    return pytree.tree_map(lambda g: None if g is None else ops.mul(g, ops.cast(scale, ops.as_tensor(g).dtype)), grads), norm
