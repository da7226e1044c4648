"""Fused ops in autodiff: their decompositions and their VJP rules.

The forward fused ops differentiate to their fused backward ops (so the
backward of a fused forward is fused too). Everything else, the backward ops
themselves and cotangents on a fused op's saved statistics, is differentiated
through the op's *decomposition*: the same math written in primitives. That
makes second derivatives of fused ops exact instead of missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..frontend import ops as F
from ..frontend.tensor import Tensor
from ..frontend.tracing import apply, call_graph, trace_scope
from ..ir.fused import stats_dtype
from ..ir.node import Attrs, Graph
from ..ir.registry import REGISTRY
from .rules import VJPContext, vjp_rule

DECOMPOSITIONS: dict[str, Callable[..., tuple[Tensor, ...]]] = {}


def decomposition(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register the DSL decomposition of a fused op."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        DECOMPOSITIONS[name] = fn
        return fn

    return deco


def _keep(t: Tensor, n: int) -> Tensor:
    """Append ``n`` unit axes (to broadcast row statistics back over rows)."""
    return F.reshape(t, t.shape + (1,) * n)


# ----------------------------------------------------------------------------- decompositions


@decomposition("fused_layernorm")
def _ln(attrs: Attrs, x: Tensor, *affine: Tensor) -> tuple[Tensor, ...]:
    n, sd = attrs["n_axes"], stats_dtype(x.dtype)
    axes = tuple(range(x.ndim - n, x.ndim))
    xf = F.cast(x, sd)
    mean = F.mean(xf, axes)
    xc = F.sub(xf, _keep(mean, n))
    rstd = F.rsqrt(F.add(F.mean(F.mul(xc, xc), axes), attrs["eps"]))
    y = F.mul(xc, _keep(rstd, n))
    i = 0
    if attrs["has_weight"]:
        y = F.mul(y, F.cast(affine[i], sd))
        i += 1
    if attrs["has_bias"]:
        y = F.add(y, F.cast(affine[i], sd))
    return F.cast(y, x.dtype), mean, rstd


@decomposition("fused_layernorm_bwd")
def _ln_bwd(attrs: Attrs, dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, *w: Tensor) -> tuple[Tensor, ...]:
    n, sd = attrs["n_axes"], mean.dtype
    axes = tuple(range(x.ndim - n, x.ndim))
    lead = tuple(range(x.ndim - n))
    xhat = F.mul(F.sub(F.cast(x, sd), _keep(mean, n)), _keep(rstd, n))
    dyf = F.cast(dy, sd)
    dyw = F.mul(dyf, F.cast(w[0], sd)) if attrs["has_weight"] else dyf
    inner = F.sub(F.sub(dyw, F.mean(dyw, axes, keepdims=True)), F.mul(xhat, F.mean(F.mul(dyw, xhat), axes, keepdims=True)))
    out = [F.cast(F.mul(_keep(rstd, n), inner), x.dtype)]
    if attrs["has_weight"]:
        out.append(F.cast(F.sum(F.mul(dyf, xhat), lead), x.dtype))
    if attrs["has_bias"]:
        out.append(F.cast(F.sum(dyf, lead), x.dtype))
    return tuple(out)


def _xent_pick(x: Tensor, target: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    valid = F.ne(target, ignore_index) if ignore_index is not None else F.full(target.shape, True)
    safe = F.where(valid, target, 0)
    onehot = F.logical_and(F.eq(F.iota(x.shape, x.ndim - 1, safe.dtype), _keep(safe, 1)), _keep(valid, 1))
    return valid, onehot


@decomposition("fused_softmax_xent")
def _xent(attrs: Attrs, logits: Tensor, target: Tensor) -> tuple[Tensor, ...]:
    sd = stats_dtype(logits.dtype)
    x = F.cast(logits, sd)
    lse = F.logsumexp(x, -1)
    valid, onehot = _xent_pick(x, target, attrs["ignore_index"])
    picked = F.sum(F.where(onehot, x, 0.0), -1)
    loss = F.where(valid, F.sub(lse, picked), 0.0)
    if attrs["reduction"] == "sum":
        loss = F.sum(loss)
    elif attrs["reduction"] == "mean":
        loss = F.div(F.sum(loss), F.maximum(F.sum(F.cast(valid, sd)), 1.0))
    return F.cast(loss, logits.dtype), lse


@decomposition("fused_softmax_xent_bwd")
def _xent_bwd(attrs: Attrs, g: Tensor, logits: Tensor, target: Tensor, lse: Tensor) -> tuple[Tensor, ...]:
    sd = lse.dtype
    x = F.cast(logits, sd)
    valid, onehot = _xent_pick(x, target, attrs["ignore_index"])
    p = F.exp(F.sub(x, _keep(lse, 1)))
    g_rows = F.broadcast_to(F.cast(g, sd), target.shape)
    if attrs["reduction"] == "mean":
        g_rows = F.div(g_rows, F.maximum(F.sum(F.cast(valid, sd)), 1.0))
    gv = F.where(valid, g_rows, 0.0)
    return (F.cast(F.mul(F.sub(p, F.cast(onehot, sd)), _keep(gv, 1)), logits.dtype),)


def _attn_scores(attrs: Attrs, q: Tensor, k: Tensor, mask: Tensor | None, sd: Any) -> Tensor:
    s = F.mul(F.matmul(F.cast(q, sd), F.transpose(F.cast(k, sd), -2, -1)), attrs["scale"])
    L, S = s.shape[-2:]
    if attrs["causal"]:
        s = F.where(F.le(F.iota((L, S), 1), F.iota((L, S), 0)), s, float("-inf"))
    if attrs["mask_kind"] == "bool":
        s = F.where(mask, s, float("-inf"))
    elif attrs["mask_kind"] == "add":
        s = F.add(s, F.cast(mask, sd))
    return s


def _attn_probs(s: Tensor, lse: Tensor) -> Tensor:
    finite = F.ne(lse, float("-inf"))
    safe = F.where(finite, lse, 0.0)  # -inf - (-inf) would be NaN
    return F.where(_keep(finite, 1), F.exp(F.sub(s, _keep(safe, 1))), 0.0)


@decomposition("fused_attention")
def _attn(attrs: Attrs, q: Tensor, k: Tensor, v: Tensor, *mask: Tensor) -> tuple[Tensor, ...]:
    sd = stats_dtype(q.dtype)
    s = _attn_scores(attrs, q, k, mask[0] if mask else None, sd)
    lse = F.logsumexp(s, -1)
    return F.cast(F.matmul(_attn_probs(s, lse), F.cast(v, sd)), q.dtype), lse


@decomposition("fused_attention_bwd")
def _attn_bwd(attrs: Attrs, do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, *mask: Tensor) -> tuple[Tensor, ...]:
    sd = lse.dtype
    s = _attn_scores(attrs, q, k, mask[0] if mask else None, sd)
    p = _attn_probs(s, lse)
    dof = F.cast(do, sd)
    dv = F.matmul(F.transpose(p, -2, -1), dof)
    dp = F.matmul(dof, F.transpose(F.cast(v, sd), -2, -1))
    delta = F.sum(F.mul(dof, F.cast(o, sd)), -1, keepdims=True)
    ds = F.mul(p, F.sub(dp, delta))
    dq = F.mul(F.matmul(ds, F.cast(k, sd)), attrs["scale"])
    dk = F.mul(F.matmul(F.transpose(ds, -2, -1), F.cast(q, sd)), attrs["scale"])
    out = [F.cast(dq, q.dtype), F.cast(dk, k.dtype), F.cast(dv, v.dtype)]
    if attrs["mask_kind"] == "add":
        out.append(F.cast(ds, mask[0].dtype))
    return tuple(out)


# ----------------------------------------------------------------------------- VJP rules


def vjp_via_decomposition(c: VJPContext, g: Any) -> tuple[Any, ...]:
    """Differentiate a fused node through its decomposition (exact, unfused)."""
    from .transform import vjp_graph

    op = c.node.op
    cts = list(g) if isinstance(g, (list, tuple)) else [g]
    with trace_scope(f"decompose_{op}") as tr:
        params = [Tensor._traced(tr.new_param(t.shape, t.dtype, f"in{i}"), tr) for i, t in enumerate(c.inputs)]
        outs = DECOMPOSITIONS[op](c.attrs, *params)
        out_nodes = [tr.lift(t) for t in outs]
    graph = Graph(tr.params, out_nodes, name=f"decompose_{op}")
    seeded = [i for i, ct in enumerate(cts) if ct is not None and out_nodes[i].dtype.is_float]
    wrt = [i for i, t in enumerate(c.inputs) if t.dtype.is_float]
    back = vjp_graph(graph, wrt=wrt, ct_outputs=seeded)
    grads = call_graph(back, list(c.inputs) + [cts[i] for i in seeded])[len(out_nodes):]
    result: list[Any] = [None] * len(c.inputs)
    for i, gi in zip(wrt, grads):
        result[i] = gi
    return tuple(result)


def _only_first(g: Any) -> bool:
    return isinstance(g, (list, tuple)) and all(x is None for x in g[1:])


@vjp_rule("fused_layernorm")
def _ln_vjp(c: VJPContext, g: Any) -> tuple[Any, ...]:
    if not _only_first(g):
        return vjp_via_decomposition(c, g)
    x, *affine = c.inputs
    _, mean, rstd = c.out
    w = [affine[0]] if c.attrs["has_weight"] else []
    grads = apply("fused_layernorm_bwd", [g[0], x, mean, rstd, *w], c.attrs)
    return tuple(grads)


@vjp_rule("fused_softmax_xent")
def _xent_vjp(c: VJPContext, g: Any) -> tuple[Any, ...]:
    if not _only_first(g):
        return vjp_via_decomposition(c, g)
    logits, target = c.inputs
    d = apply("fused_softmax_xent_bwd", [g[0], logits, target, c.out[1]], c.attrs)
    return d, None


@vjp_rule("fused_attention")
def _attn_vjp(c: VJPContext, g: Any) -> tuple[Any, ...]:
    if not _only_first(g):
        return vjp_via_decomposition(c, g)
    q, k, v, *mask = c.inputs
    o, lse = c.out
    grads = list(apply("fused_attention_bwd", [g[0], q, k, v, o, lse, *mask], c.attrs))
    if c.attrs["mask_kind"] == "bool":
        grads.append(None)
    return tuple(grads)


for _name in ("fused_layernorm_bwd", "fused_softmax_xent_bwd", "fused_attention_bwd"):
    REGISTRY[_name].vjp = vjp_via_decomposition

__all__ = ["DECOMPOSITIONS", "vjp_via_decomposition"]


def unfuse(graph: Graph) -> Graph:
    """``graph`` with every fused node replaced by its decomposition into primitives.

    The inverse of pattern fusion, up to spelling: used to measure what fusion
    saved (the compile report's kernel count "without pattern fusion") and to
    debug a fused program against plain primitives.
    """
    from ..frontend.tracing import replay

    def expand_fused(node: Any, args: list[Any]) -> Any:
        if node.op not in DECOMPOSITIONS:
            return None
        outs = DECOMPOSITIONS[node.op](node.attrs, *args)
        return outs if node.is_tuple else outs[0]

    with trace_scope(f"unfused_{graph.name}") as tr:
        ins = [Tensor._traced(tr.new_param(p.shape, p.dtype, str(p.attrs.get("name", f"in{k}"))), tr)
               for k, p in enumerate(graph.inputs)]
        values = replay(graph, ins, on_node=expand_fused)
        outs = [tr.lift(values[id(o)]) for o in graph.outputs]
    return Graph(tr.params, outs, name=graph.name)
