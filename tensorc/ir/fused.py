"""Fused ops: what pattern fusion replaces whole subgraphs with.

Each is declared like a primitive (type rule, numpy reference, cost) plus a
``decompose`` function in the DSL's primitives: the same math, unfused. The
decomposition documents the op, gives tests an independent oracle, and lets
autodiff differentiate a fused op a second time. Statistics (mean, rstd,
logsumexp) are kept in float32 for 16/32-bit inputs and float64 for float64.

- ``fused_layernorm(x, [w], [b]) -> (y, mean, rstd)`` over the last ``n_axes`` axes.
- ``fused_layernorm_bwd(dy, x, mean, rstd, [w]) -> (dx, [dw], [db])``.
- ``fused_softmax_xent(logits, target) -> (loss, lse)``: cross-entropy per row,
  0 where ``target == ignore_index`` (None: no ignored class), then reduced
  by ``reduction`` ("none", "sum", or "mean" over the rows not ignored);
  never builds a one-hot.
- ``fused_softmax_xent_bwd(g, logits, target, lse) -> dlogits`` = ``(softmax - onehot) * g``.
- ``fused_attention(q, k, v, [mask]) -> (o, lse)``: ``softmax(q kᵀ·scale + mask) v``
  with the row logsumexp saved; causal as a flag; fully masked rows give 0.
- ``fused_attention_bwd(do, q, k, v, o, lse, [mask]) -> (dq, dk, dv, [dmask])``:
  recomputes the probabilities from ``lse`` (no T×T value is saved).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import dtypes
from .dtypes import DType
from .node import Attrs, Node
from .ops import matmul_ref
from .registry import OpDef, check, check_dtype, register

Type = tuple[Any, Any]


def stats_dtype(dt: DType) -> DType:
    """The dtype statistics are kept in: float64 for float64 inputs, else float32."""
    return dtypes.float64 if dt == dtypes.float64 else dtypes.float32


# ----------------------------------------------------------------------------- layernorm


def _ln_infer(types: list[Type], attrs: Attrs) -> Type:
    (xs, xd), *rest = types
    n = attrs["n_axes"]
    check(1 <= n <= len(xs), f"fused_layernorm normalizes {n} axes of a rank-{len(xs)} input")
    check_dtype(xd.is_float, f"layernorm needs floats, got {xd.name}")
    check(len(rest) == int(attrs["has_weight"]) + int(attrs["has_bias"]), "fused_layernorm: weight/bias flags disagree with inputs")
    for s, d in rest:
        check(tuple(s) == tuple(xs[-n:]), f"layernorm affine shape {tuple(s)} != normalized shape {tuple(xs[-n:])}")
        check_dtype(d == xd, "layernorm affine params must have the input's dtype")
    sd = stats_dtype(xd)
    lead = tuple(xs[:-n])
    return (tuple(xs), lead, lead), (xd, sd, sd)


def _ln_ref(ctx: Any, x: np.ndarray, *affine: np.ndarray) -> tuple[np.ndarray, ...]:
    a = ctx.node.attrs
    n, eps = a["n_axes"], a["eps"]
    sd = stats_dtype(dtypes.dtype(x.dtype)).np
    axes = tuple(range(x.ndim - n, x.ndim))
    xf = x.astype(sd)
    mean = xf.mean(axis=axes, keepdims=True)
    var = ((xf - mean) ** 2).mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(var + sd.type(eps))
    y = (xf - mean) * rstd
    i = 0
    if a["has_weight"]:
        y = y * affine[i].astype(sd)
        i += 1
    if a["has_bias"]:
        y = y + affine[i].astype(sd)
    lead = x.shape[:x.ndim - n]
    return y.astype(x.dtype), mean.reshape(lead), rstd.reshape(lead)


def _ln_bwd_infer(types: list[Type], attrs: Attrs) -> Type:
    (dys, dyd), (xs, xd), (ms, md), (rs, rd), *rest = types
    n = attrs["n_axes"]
    check(tuple(dys) == tuple(xs) and dyd == xd, "fused_layernorm_bwd: dy must match x")
    check(tuple(ms) == tuple(rs) == tuple(xs[:-n]), "fused_layernorm_bwd: mean/rstd shape mismatch")
    check(len(rest) == int(attrs["has_weight"]), "fused_layernorm_bwd: weight flag disagrees with inputs")
    shapes, dts = [tuple(xs)], [xd]
    if attrs["has_weight"]:
        shapes.append(tuple(xs[-n:]))
        dts.append(xd)
    if attrs["has_bias"]:
        shapes.append(tuple(xs[-n:]))
        dts.append(xd)
    return tuple(shapes), tuple(dts)


def _ln_bwd_ref(ctx: Any, dy: np.ndarray, x: np.ndarray, mean: np.ndarray, rstd: np.ndarray, *w: np.ndarray) -> tuple[np.ndarray, ...]:
    a = ctx.node.attrs
    n = a["n_axes"]
    sd = mean.dtype
    axes = tuple(range(x.ndim - n, x.ndim))
    lead_axes = tuple(range(x.ndim - n))
    keep = mean.shape + (1,) * n
    xhat = (x.astype(sd) - mean.reshape(keep)) * rstd.reshape(keep)
    dyf = dy.astype(sd)
    dyw = dyf * w[0].astype(sd) if a["has_weight"] else dyf
    dx = rstd.reshape(keep) * (dyw - dyw.mean(axis=axes, keepdims=True) - xhat * (dyw * xhat).mean(axis=axes, keepdims=True))
    out = [dx.astype(x.dtype)]
    if a["has_weight"]:
        out.append((dyf * xhat).sum(axis=lead_axes).astype(x.dtype))
    if a["has_bias"]:
        out.append(dyf.sum(axis=lead_axes).astype(x.dtype))
    return tuple(out)


# ----------------------------------------------------------------------------- softmax + cross-entropy


def _xent_infer(types: list[Type], attrs: Attrs) -> Type:
    (ls, ld), (ts, td) = types
    check_dtype(ld.is_float, f"cross-entropy logits must be floats, got {ld.name}")
    check_dtype(td.is_int, f"cross-entropy targets must be integers, got {td.name}")
    check(len(ls) >= 1 and tuple(ls[:-1]) == tuple(ts), f"targets {tuple(ts)} must be logits {tuple(ls)} without the class axis")
    check(attrs["reduction"] in ("none", "sum", "mean"), f"unknown reduction {attrs['reduction']!r}")
    loss_shape = tuple(ts) if attrs["reduction"] == "none" else ()
    return (loss_shape, tuple(ts)), (ld, stats_dtype(ld))


def _check_targets(ctx: Any, t: np.ndarray, n_classes: int) -> np.ndarray:
    ignore = ctx.node.attrs["ignore_index"]
    valid = t != ignore if ignore is not None else np.ones(t.shape, bool)
    bad = valid & ((t < 0) | (t >= n_classes))
    if bad.any():
        loc = f" at {ctx.node.loc}" if ctx.node.loc else ""
        raise IndexError(f"{ctx.node.op}{loc}: target {int(t[bad].flat[0])} out of range for {n_classes} classes")
    return valid


def _row_lse(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1)
    m = np.where(np.isfinite(m), m, 0)
    return np.log(np.exp(x - m[..., None]).sum(axis=-1)) + m


def _xent_ref(ctx: Any, logits: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sd = stats_dtype(dtypes.dtype(logits.dtype)).np
    valid = _check_targets(ctx, target, logits.shape[-1])
    x = logits.astype(sd)
    lse = _row_lse(x)
    picked = np.take_along_axis(x, np.where(valid, target, 0)[..., None], axis=-1)[..., 0]
    loss = np.where(valid, lse - picked, 0)
    reduction = ctx.node.attrs["reduction"]
    if reduction == "sum":
        loss = loss.sum()
    elif reduction == "mean":
        loss = loss.sum() / max(int(valid.sum()), 1)
    return np.asarray(loss).astype(logits.dtype), lse


def _xent_bwd_infer(types: list[Type], attrs: Attrs) -> Type:
    (gs, gd), (ls, ld), (ts, td), (es, ed) = types
    want_g = tuple(ts) if attrs["reduction"] == "none" else ()
    check(tuple(gs) == want_g and tuple(ts) == tuple(es) and tuple(ls[:-1]) == tuple(ts), "fused_softmax_xent_bwd shape mismatch")
    check_dtype(gd == ld, "fused_softmax_xent_bwd: g must have the logits' dtype")
    return tuple(ls), ld


def _xent_bwd_ref(ctx: Any, g: np.ndarray, logits: np.ndarray, target: np.ndarray, lse: np.ndarray) -> np.ndarray:
    valid = _check_targets(ctx, target, logits.shape[-1])
    p = np.exp(logits.astype(lse.dtype) - lse[..., None])
    onehot = np.arange(logits.shape[-1]) == np.where(valid, target, -1)[..., None]
    reduction = ctx.node.attrs["reduction"]
    g_rows = np.broadcast_to(g.astype(lse.dtype), target.shape)
    if reduction == "mean":
        g_rows = g_rows / max(int(valid.sum()), 1)
    d = (p - onehot) * np.where(valid, g_rows, 0)[..., None]
    return d.astype(logits.dtype)


# ----------------------------------------------------------------------------- attention


def _attn_infer(types: list[Type], attrs: Attrs) -> Type:
    (qs, qd), (ks, kd), (vs, vd), *mask = types
    check(len(qs) >= 2 and len(ks) == len(qs) and len(vs) == len(qs), "attention operands need one rank >= 2")
    check(qs[:-2] == ks[:-2] == vs[:-2], f"attention batch dims differ: {qs[:-2]}, {ks[:-2]}, {vs[:-2]}")
    check(qs[-1] == ks[-1], f"q and k feature dims differ: {qs[-1]} != {ks[-1]}")
    check(ks[-2] == vs[-2], f"k and v lengths differ: {ks[-2]} != {vs[-2]}")
    check_dtype(qd == kd == vd and qd.is_float, "attention needs q, k, v of one float dtype")
    kind = attrs["mask_kind"]
    check(len(mask) == (kind != "none"), "fused_attention: mask_kind disagrees with inputs")
    if mask:
        (ms, md), = mask
        check(tuple(ms) == tuple(qs[:-1]) + (ks[-2],), f"attention mask {tuple(ms)} must be {tuple(qs[:-1]) + (ks[-2],)}")
        check_dtype(md.is_bool if kind == "bool" else md == qd, f"{kind} attention mask has dtype {md.name}")
    return (tuple(qs[:-1]) + (vs[-1],), tuple(qs[:-1])), (qd, stats_dtype(qd))


def _attn_scores(ctx: Any, q: np.ndarray, k: np.ndarray, mask: Any, sd: Any) -> np.ndarray:
    a = ctx.node.attrs
    s = matmul_ref(q.astype(sd), np.swapaxes(k.astype(sd), -1, -2)) * sd.type(a["scale"])
    L, S = s.shape[-2:]
    if a["causal"]:
        s = np.where(np.tril(np.ones((L, S), bool)), s, -np.inf)
    if a["mask_kind"] == "bool":
        s = np.where(mask, s, -np.inf)
    elif a["mask_kind"] == "add":
        s = s + mask.astype(sd)
    return s


def _attn_probs(s: np.ndarray, lse: np.ndarray) -> np.ndarray:
    finite = np.isfinite(lse)[..., None]
    return np.where(finite, np.exp(s - np.where(finite, lse[..., None], 0)), 0)


def _attn_ref(ctx: Any, q: np.ndarray, k: np.ndarray, v: np.ndarray, *mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sd = stats_dtype(dtypes.dtype(q.dtype)).np
    s = _attn_scores(ctx, q, k, mask[0] if mask else None, sd)
    lse = _row_lse(s)
    p = _attn_probs(s, lse)
    return matmul_ref(p, v.astype(sd)).astype(q.dtype), lse


def _attn_bwd_infer(types: list[Type], attrs: Attrs) -> Type:
    (dos, dod), q, k, v, (os_, od), (ls, ld), *mask = types
    _attn_infer([q, k, v, *mask], attrs)
    check(tuple(dos) == tuple(os_) and dod == od, "fused_attention_bwd: do must match o")
    shapes, dts = [tuple(q[0]), tuple(k[0]), tuple(v[0])], [q[1], k[1], v[1]]
    if attrs["mask_kind"] == "add":
        shapes.append(tuple(mask[0][0]))
        dts.append(mask[0][1])
    return tuple(shapes), tuple(dts)


def _attn_bwd_ref(ctx: Any, do: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, o: np.ndarray, lse: np.ndarray,
                  *mask: np.ndarray) -> tuple[np.ndarray, ...]:
    sd = lse.dtype
    scale = sd.type(ctx.node.attrs["scale"])
    s = _attn_scores(ctx, q, k, mask[0] if mask else None, sd)
    p = _attn_probs(s, lse)
    dof = do.astype(sd)
    dv = matmul_ref(np.swapaxes(p, -1, -2), dof)
    dp = matmul_ref(dof, np.swapaxes(v.astype(sd), -1, -2))
    delta = (dof * o.astype(sd)).sum(-1, keepdims=True)
    ds = p * (dp - delta)
    dq = matmul_ref(ds, k.astype(sd)) * scale
    dk = matmul_ref(np.swapaxes(ds, -1, -2), q.astype(sd)) * scale
    out = [dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)]
    if ctx.node.attrs["mask_kind"] == "add":
        out.append(ds.astype(mask[0].dtype))
    return tuple(out)


def _attn_flops(node: Node, backward: bool) -> int:
    q = node.inputs[1 if backward else 0]
    v = node.inputs[3 if backward else 2]
    L, E = q.shape[-2:]
    S, Ev = v.shape[-2:]
    batch = math.prod(q.shape[:-2])
    fwd = 2 * batch * L * S * (E + Ev) + 5 * batch * L * S
    return int(fwd * (2.5 if backward else 1))


def _fused(name: str, infer: Any, ref: Any, flops: Any) -> None:
    opdef = OpDef(name, "fused", infer, ref)
    opdef.extra["flops"] = flops
    register(opdef)


def _rowwise_flops(per_element: int) -> Any:
    return lambda node: per_element * node.inputs[0].size


_fused("fused_layernorm", _ln_infer, _ln_ref, _rowwise_flops(8))
_fused("fused_layernorm_bwd", _ln_bwd_infer, _ln_bwd_ref, _rowwise_flops(12))
_fused("fused_softmax_xent", _xent_infer, _xent_ref, _rowwise_flops(6))
_fused("fused_softmax_xent_bwd", _xent_bwd_infer, _xent_bwd_ref, _rowwise_flops(6))
_fused("fused_attention", _attn_infer, _attn_ref, lambda node: _attn_flops(node, False))
_fused("fused_attention_bwd", _attn_bwd_infer, _attn_bwd_ref, lambda node: _attn_flops(node, True))
