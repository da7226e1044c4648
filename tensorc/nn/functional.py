"""Neural-network functions, each written from tensorc's primitives.

Names and argument order follow ``torch.nn.functional``. Fusion passes find
these patterns again (whether written here or by hand) and replace them with
fused kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import DTypeError, ShapeError, TensorcError
from ..frontend import ops
from ..frontend.ops import log_softmax, relu, softmax  # noqa: F401  (re-exported)
from ..frontend.tensor import Tensor
from ..frontend.tracing import op_error

sigmoid = ops.sigmoid
tanh = ops.tanh


def gelu(x: Any, approximate: str = "none") -> Tensor:
    """GELU: ``x * Φ(x)`` with the exact erf form, or ``approximate="tanh"`` (GPT-2's)."""
    x = ops.as_tensor(x)
    if approximate == "tanh":
        inner = ops.mul(ops.add(x, ops.mul(ops.mul(ops.mul(x, x), x), 0.044715)), math.sqrt(2 / math.pi))
        return ops.mul(ops.mul(x, 0.5), ops.add(ops.tanh(inner), 1.0))
    if approximate != "none":
        raise TensorcError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return ops.mul(ops.mul(x, 0.5), ops.add(ops.erf(ops.mul(x, 1 / math.sqrt(2))), 1.0))


def silu(x: Any) -> Tensor:
    """``x * sigmoid(x)`` (also called swish)."""
    x = ops.as_tensor(x)
    return ops.mul(x, ops.sigmoid(x))


def linear(input: Any, weight: Any, bias: Any = None) -> Tensor:
    """``input @ weight.T + bias`` with PyTorch's ``[out_features, in_features]`` weight."""
    y = ops.matmul(input, ops.transpose(weight, 0, 1))
    return y if bias is None else ops.add(y, bias)


def layer_norm(input: Any, normalized_shape: Sequence[int] | int, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> Tensor:
    """Normalize over the trailing ``normalized_shape`` axes: ``(x - mean) / sqrt(var + eps) * weight + bias``."""
    x = ops.as_tensor(input)
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(x.shape[x.ndim - len(ns):]) != ns or len(ns) > x.ndim:
        raise op_error(ShapeError, "layer_norm", [(x.shape, x.dtype)], f"normalized_shape {ns} does not end the input shape")
    axes = tuple(range(x.ndim - len(ns), x.ndim))
    mu = ops.mean(x, axes, keepdims=True)
    xc = ops.sub(x, mu)
    var = ops.mean(ops.mul(xc, xc), axes, keepdims=True)
    y = ops.mul(xc, ops.rsqrt(ops.add(var, eps)))
    if weight is not None:
        y = ops.mul(y, weight)
    if bias is not None:
        y = ops.add(y, bias)
    return y


def embedding(input: Any, weight: Any) -> Tensor:
    """Rows of ``weight`` picked by integer ids ``input`` (ids are bounds-checked)."""
    ids = ops.as_tensor(input)
    w = ops.as_tensor(weight)
    if not ids.dtype.is_int:
        raise op_error(DTypeError, "embedding", [(ids.shape, ids.dtype), (w.shape, w.dtype)], "ids must be integers")
    if w.ndim != 2:
        raise op_error(ShapeError, "embedding", [(ids.shape, ids.dtype), (w.shape, w.dtype)], "weight must be [num_embeddings, dim]")
    return ops.gather(w, ids, 0)


def cross_entropy(input: Any, target: Any, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits ``input`` against integer class ids ``target``.

    ``input`` is ``(N, C)`` with ``target`` ``(N,)`` (as PyTorch), or more
    generally ``(..., C)`` with ``target`` ``(...)``: the class axis is last.
    Targets equal to ``ignore_index`` contribute nothing; ``reduction="mean"``
    averages over the rest.
    """
    x, t = ops.as_tensor(input), ops.as_tensor(target)
    types = [(x.shape, x.dtype), (t.shape, t.dtype)]
    if not t.dtype.is_int:
        raise op_error(DTypeError, "cross_entropy", types, "target must be integer class ids")
    if x.ndim < 1 or tuple(x.shape[:-1]) != tuple(t.shape):
        raise op_error(ShapeError, "cross_entropy", types, "target shape must equal input shape without its last (class) axis")
    if reduction not in ("mean", "sum", "none"):
        raise TensorcError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    n_classes = x.shape[-1]
    logp = log_softmax(x, -1)
    valid = ops.ne(t, ignore_index)
    safe_t = ops.where(valid, t, 0)
    # Looking each target up in iota(C) is the identity, but bounds-checked: a class id outside
    # [0, C) is an error, not a silent read of another row's logits through the flat index below.
    safe_t = ops.gather(ops.iota((n_classes,), 0, safe_t.dtype), safe_t, 0)
    rows = math.prod(t.shape)
    flat_logp = ops.reshape(logp, (rows * n_classes,))
    flat_idx = ops.add(ops.mul(ops.iota((rows,), 0, safe_t.dtype), n_classes), ops.reshape(safe_t, (rows,)))
    picked = ops.reshape(ops.gather(flat_logp, flat_idx, 0), t.shape)
    loss = ops.neg(picked)
    if label_smoothing:
        smooth = ops.neg(ops.mean(logp, -1))
        loss = ops.add(ops.mul(loss, 1 - label_smoothing), ops.mul(smooth, label_smoothing))
    loss = ops.where(valid, loss, 0.0)
    if reduction == "none":
        return loss
    total = ops.sum(loss)
    if reduction == "sum":
        return total
    count = ops.sum(ops.cast(valid, x.dtype))
    return ops.div(total, ops.maximum(count, 1.0))


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Mean (or sum, or elementwise) squared difference, as ``torch.nn.functional.mse_loss``."""
    d = ops.sub(input, target)
    sq = ops.mul(d, d)
    return ops.mean(sq) if reduction == "mean" else ops.sum(sq) if reduction == "sum" else sq


def dropout(input: Any, p: float = 0.5, training: bool = True, *, key: Any = None) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)``.

    Randomness is explicit: pass a ``key`` from ``tc.random`` when training.
    """
    x = ops.as_tensor(input)
    if not 0.0 <= p <= 1.0:
        raise TensorcError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if key is None:
        raise TensorcError("dropout in training mode needs key= (a tc.random key)")
    if p == 1.0:
        return ops.zeros_like(x)
    from .. import random

    keep = random.bernoulli(key, 1.0 - p, x.shape)
    return ops.where(keep, ops.mul(x, 1.0 / (1.0 - p)), 0.0)


def scaled_dot_product_attention(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None, *, dropout_key: Any = None) -> Tensor:
    """``softmax(Q Kᵀ · scale + mask) V`` over the last two axes, as PyTorch's.

    ``attn_mask`` is a bool tensor (True = attend) or a float tensor added to
    the scores. Rows whose every position is masked give zeros, not NaN.
    """
    q, k, v = ops.as_tensor(query), ops.as_tensor(key), ops.as_tensor(value)
    types = [(q.shape, q.dtype), (k.shape, k.dtype), (v.shape, v.dtype)]
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise op_error(ShapeError, "scaled_dot_product_attention", types, "need q (..., L, E), k (..., S, E), v (..., S, Ev)")
    L, S = q.shape[-2], k.shape[-2]
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = ops.mul(ops.matmul(q, ops.transpose(k, -2, -1)), s)  # (..., L, S)
    allowed = None
    if is_causal:
        allowed = ops.le(ops.iota((L, S), 1), ops.iota((L, S), 0))
    if attn_mask is not None:
        m = ops.as_tensor(attn_mask)
        if m.dtype.is_bool:
            allowed = m if allowed is None else ops.logical_and(allowed, m)
        else:
            scores = ops.add(scores, m)
    if allowed is not None:
        scores = ops.where(allowed, scores, float("-inf"))
    mx = ops.max(scores, -1, keepdims=True)
    mx = ops.where(ops.eq(mx, float("-inf")), 0.0, mx)  # fully masked rows: exp(-inf) = 0, not NaN
    e = ops.exp(ops.sub(scores, mx))
    denom = ops.sum(e, -1, keepdims=True)
    probs = ops.div(e, ops.where(ops.eq(denom, 0.0), 1.0, denom))
    if dropout_p:
        probs = dropout(probs, dropout_p, True, key=dropout_key)
    return ops.matmul(probs, v)


def one_hot(tensor: Any, num_classes: int) -> Tensor:
    """int64 one-hot vectors, as ``torch.nn.functional.one_hot``."""
    return ops.one_hot(tensor, num_classes, "int64")

__all__ = [
    "cross_entropy", "dropout", "embedding", "gelu", "layer_norm", "linear", "log_softmax", "mse_loss", "one_hot", "relu",
    "scaled_dot_product_attention", "sigmoid", "silu", "softmax", "tanh",
]
