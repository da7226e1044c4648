"""Pattern fusion: find attention, layer norm and softmax cross-entropy in
primitive graphs and replace them with fused nodes.

Runs before autodiff (``tc.grad`` fuses the forward graph first), so the
backward of a fused node is its fused backward op. Matchers look at the
math, not the spelling: scale on q, k or the scores; masks by ``where`` with
-inf, by an additive tensor, or causal from iota comparisons or a triangular
constant; ``rsqrt`` or ``1/sqrt``; mean as ``sum/n`` or ``sum*(1/n)``.

Each matcher returns a :class:`Match` for an anchor node (the pattern's
output) or None; :func:`apply_matches` tries anchors from the outputs back,
so the largest pattern (layer norm *with* its affine) wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir.node import Attrs, Graph, Node
from ..ir.registry import REGISTRY
from .patterns import (
    ancestors_are_constant,
    constant_value,
    count_users,
    either,
    is_trailing,
    mean_of,
    reduction,
    scalar,
    strip_keepdims,
    through_broadcast,
)
from .rewrite import map_nodes, with_body

Mapper = Callable[[Node], Node]


@dataclass
class Match:
    """A found pattern: its name, how to build the replacement, and the nodes it subsumes."""
    pattern: str
    build: Callable[[Mapper], Node]  # makes the replacement from mapped external inputs
    interior: set[int] = field(default_factory=set)  # ids of nodes the match subsumes


def make(op: str, inputs: list[Node], attrs: dict[str, Any], loc: Any) -> Node:
    """A new node of ``op`` with its type from the registry's rule."""
    a = Attrs(attrs)
    shape, dtype = REGISTRY[op].infer([(i.shape, i.dtype) for i in inputs], a)
    return Node(op, tuple(inputs), a, shape, dtype, loc)


def first_output(node: Node) -> Node:
    """``tuple_get(node, 0)``."""
    return Node("tuple_get", (node,), Attrs({"index": 0}), node.shape[0], node.dtype[0], node.loc)


def view_as(node: Node, shape: tuple[int, ...]) -> Node:
    """``node`` reshaped to ``shape`` (itself if it already has it)."""
    return node if node.shape == shape else make("reshape", [node], {"shape": shape}, node.loc)


# ----------------------------------------------------------------------------- layer norm


def _rsqrt_arg(node: Node) -> Node | None:
    """``v`` if node is rsqrt(v), reciprocal(sqrt(v)) or 1 / sqrt(v)."""
    if node.op == "rsqrt":
        return node.inputs[0]
    if node.op == "reciprocal" and node.inputs[0].op == "sqrt":
        return node.inputs[0].inputs[0]
    if node.op == "div" and scalar(node.inputs[0]) == 1 and through_broadcast(node.inputs[1]).op == "sqrt":
        return through_broadcast(node.inputs[1]).inputs[0]
    return None


def _is_square_of(node: Node, xc: Node) -> bool:
    if node.op == "mul":
        return node.inputs[0] == xc and node.inputs[1] == xc
    return node.op == "pow" and node.inputs[0] == xc and scalar(node.inputs[1]) == 2


def layernorm_core(y: Node) -> tuple[Node, tuple[int, ...], float] | None:
    """``(x, axes, eps)`` if ``y`` is ``(x - mean) * rsqrt(var + eps)`` over trailing axes."""
    if y.is_tuple or not y.dtype.is_float:
        return None
    candidates: list[tuple[Node, Node]] = []
    if y.op == "mul":
        for xc, r in either(y, None):
            ve = _rsqrt_arg(through_broadcast(r))
            if ve is not None:
                candidates.append((xc, ve))
    elif y.op == "div":
        r = through_broadcast(y.inputs[1])
        if r.op == "sqrt":
            candidates.append((y.inputs[0], r.inputs[0]))
    for xc, ve in candidates:
        if xc.op != "sub" or xc.shape != y.shape:
            continue
        x, mu_b = xc.inputs
        mu = mean_of(through_broadcast(mu_b))
        if mu is None or mu[0] != x or not is_trailing(mu[1], x.ndim):
            continue
        axes = mu[1]
        ve = strip_keepdims(ve)
        if ve.op != "add":
            continue
        for var, e in either(ve, None):
            eps = scalar(e)
            vm = mean_of(var)
            if eps is not None and vm is not None and vm[1] == axes and _is_square_of(vm[0], xc):
                return x, axes, float(eps)
    return None


def match_layernorm(node: Node, users: dict[int, int]) -> Match | None:
    """``layer_norm(x) [* w] [+ b]`` -> ``fused_layernorm``."""
    if node.is_tuple or not node.dtype.is_float:
        return None
    options: list[tuple[Node, Node | None, Node | None, list[Node]]] = []
    if node.op == "add":
        for inner, b in either(node, None):
            if inner.op == "mul" and users.get(id(inner), 0) == 1:
                for core, w in either(inner, None):
                    options.append((core, w, b, [inner]))
            options.append((inner, None, b, []))
    if node.op == "mul":
        for core, w in either(node, None):
            options.append((core, w, None, []))
    options.append((node, None, None, []))
    for core, w, b, between in options:
        if core is not node and users.get(id(core), 0) != 1:
            continue
        found = layernorm_core(core)
        if found is None:
            continue
        x, axes, eps = found
        norm_shape = tuple(x.shape[a] for a in axes)
        affine = []
        ok = True
        for t in (w, b):
            if t is None:
                continue
            src = through_broadcast(t)
            if t.shape != x.shape or src.dtype != x.dtype or src.size != int(np.prod(norm_shape)) or \
                    [d for d in src.shape if d != 1] != [d for d in norm_shape if d != 1]:
                ok = False
            affine.append(src)
        if not ok:
            continue
        attrs = {"n_axes": len(axes), "eps": eps, "has_weight": w is not None, "has_bias": b is not None}

        def build(m: Mapper, x: Node = x, affine: list[Node] = affine, attrs: dict = attrs) -> Node:
            params = [view_as(m(t), tuple(x.shape[-attrs["n_axes"]:])) for t in affine]
            return first_output(make("fused_layernorm", [m(x), *params], attrs, node.loc))

        return Match("layernorm", build, {id(node), id(core)} | {id(n) for n in between})
    return None


# ----------------------------------------------------------------------------- attention


def _unguard(node: Node, guard_value: float, replacement: float) -> Node:
    """``v`` from ``where(v == guard_value, replacement, v)`` (the SDPA guards), else node."""
    if node.op == "where":
        c, a, b = node.inputs
        if c.op == "eq" and scalar(a) == replacement:
            lhs, rhs = c.inputs
            if lhs == b and scalar(rhs) == guard_value:
                return b
    return node


def softmax_scores(p: Node) -> Node | None:
    """The scores ``s`` if ``p`` is softmax(s) over its last axis."""
    if p.op != "div":
        return None
    e, d_b = p.inputs
    d = _unguard(strip_keepdims(through_broadcast(d_b)), 0.0, 1.0)
    red = reduction(d, "sum")
    last = (e.ndim - 1,)
    if red is None or red[0] != e or red[1] != last or e.op != "exp":
        return None
    z = e.inputs[0]
    if z.op == "sub":
        s, m_b = z.inputs
        m = _unguard(strip_keepdims(through_broadcast(m_b)), float("-inf"), 0.0)
        red = reduction(m, "max")
        if red is not None and red[0] == s and red[1] == last:
            return s
        return None
    return z


def _peel_scale(node: Node) -> tuple[Node, float]:
    scale = 1.0
    while True:
        if node.op == "mul":
            c0, c1 = scalar(node.inputs[0]), scalar(node.inputs[1])
            if c1 is not None:
                scale, node = scale * c1, node.inputs[0]
                continue
            if c0 is not None:
                scale, node = scale * c0, node.inputs[1]
                continue
        if node.op == "div":
            c = scalar(node.inputs[1])
            if c is not None and c != 0:
                scale, node = scale / c, node.inputs[0]
                continue
        return node, scale


def _scores_matmul(node: Node) -> tuple[Node, Node, bool, float] | None:
    """``(q, k_or_kt, k_is_transposed_view, scale)`` for ``scale * q @ kᵀ``."""
    mm, scale = _peel_scale(node)
    if mm.op != "matmul":
        return None
    q, kt = mm.inputs
    q, s_q = _peel_scale(q)
    kt, s_k = _peel_scale(kt)
    n = kt.ndim
    swap = tuple(range(n - 2)) + (n - 1, n - 2)
    if kt.op == "permute" and tuple(kt.attrs["dims"]) == swap:
        return q, kt.inputs[0], True, scale * s_q * s_k
    return q, kt, False, scale * s_q * s_k


def _is_causal(allowed: np.ndarray) -> bool:
    L, S = allowed.shape[-2:]
    return bool(np.array_equal(np.broadcast_to(allowed, allowed.shape), np.broadcast_to(np.tril(np.ones((L, S), bool)), allowed.shape)))


def _constant_at_shape(node: Node) -> np.ndarray:
    """A constant seen through expands and unit-axis reshapes, at ``node``'s shape: the
    broadcast is replayed on the small value (a (B, 1, 1, S) padding mask keeps its axes)."""
    if node.op == "expand":
        return np.broadcast_to(_constant_at_shape(node.inputs[0]), node.shape)
    if node.op == "reshape" and through_broadcast(node) is not node:
        return _constant_at_shape(node.inputs[0]).reshape(node.shape)
    return np.asarray(constant_value(node)).reshape(node.shape)


def attention_parts(s: Node) -> dict[str, Any] | None:
    """Split softmax scores into q, k, scale and the mask."""
    parts: dict[str, Any] = {"mask_kind": "none", "mask": None, "causal": False}
    x = s
    if x.op == "where":
        allowed, inner, fill = x.inputs
        fv = scalar(fill)
        if fv is None or fv > -1e4:
            return None
        if ancestors_are_constant(allowed):
            value = _constant_at_shape(allowed)
            if fv != float("-inf") and not value.any(axis=-1).all():
                return None  # a finite fill makes fully masked rows uniform, not zero: not ours
            if _is_causal(value):
                parts["causal"] = True
            else:
                parts.update(mask_kind="bool", mask=allowed)
        elif fv == float("-inf"):
            parts.update(mask_kind="bool", mask=allowed)
        else:
            return None
        x = inner
    found = None
    if x.op == "add":
        for a, m in either(x, None):
            found = _scores_matmul(a)
            if found is None:
                continue
            if m.dtype != a.dtype or parts["mask_kind"] != "none" or parts["causal"]:
                return None
            if ancestors_are_constant(m):
                v = _constant_at_shape(m)
                L, S = m.shape[-2:]
                tril = np.broadcast_to(np.tril(np.ones((L, S), bool)), m.shape)
                if np.all(v[tril] == 0) and np.all(v[~tril] <= -1e4):
                    parts["causal"] = True
                    break
            parts.update(mask_kind="add", mask=m)
            break
    else:
        found = _scores_matmul(x)
    if found is None:
        return None
    parts["q"], parts["k"], parts["k_transposed"], parts["scale"] = found
    return parts


def match_attention(node: Node, users: dict[int, int]) -> Match | None:
    """``softmax(q kᵀ · scale + mask) v`` -> ``fused_attention``."""
    if node.op != "matmul" or not node.dtype.is_float:
        return None
    p, v = node.inputs
    if users.get(id(p), 0) != 1:
        return None  # the probabilities are needed elsewhere (returned, dropout...): keep them
    s = softmax_scores(p)
    if s is None:
        return None
    parts = attention_parts(s)
    if parts is None:
        return None
    q, k = parts["q"], parts["k"]
    if not (q.dtype == k.dtype == v.dtype) or q.ndim != v.ndim:
        return None
    attrs = {"scale": float(parts["scale"]), "causal": parts["causal"], "mask_kind": parts["mask_kind"]}

    def build(m: Mapper) -> Node:
        kk = m(k)
        if not parts["k_transposed"]:
            n = kk.ndim
            kk = make("permute", [kk], {"dims": tuple(range(n - 2)) + (n - 1, n - 2)}, node.loc)
        inputs = [m(q), kk, m(v)] + ([m(parts["mask"])] if parts["mask"] is not None else [])
        return first_output(make("fused_attention", inputs, attrs, node.loc))

    return Match("attention", build, {id(node), id(p)})


# ----------------------------------------------------------------------------- softmax cross-entropy


def log_softmax_input(lp: Node) -> Node | None:
    """``x`` if ``lp`` is log_softmax(x) over the last axis."""
    if lp.op != "sub":
        return None
    sh, l_b = lp.inputs
    lg = strip_keepdims(through_broadcast(l_b))
    if lg.op != "log":
        return None
    red = reduction(lg.inputs[0], "sum")
    last = (lp.ndim - 1,)
    if red is None or red[1] != last or red[0].op != "exp" or red[0].inputs[0] != sh:
        return None
    if sh.op == "sub":
        x, m_b = sh.inputs
        red = reduction(strip_keepdims(through_broadcast(m_b)), "max")
        if red is not None and red[0] == x and red[1] == last:
            return x
    return sh


def _picked_rows(p: Node) -> tuple[Node, Node] | None:
    """``(log_probs, row_targets)`` if ``p`` gathers log_probs[row, target[row]]."""
    if p.op == "reshape":
        p = p.inputs[0]
    if p.op != "gather" or p.attrs["axis"] != 0 or p.inputs[0].op != "reshape":
        return None
    lp = p.inputs[0].inputs[0]
    idx = p.inputs[1]
    rows, classes = int(np.prod(lp.shape[:-1])), lp.shape[-1]
    if idx.op != "add" or idx.shape != (rows,):
        return None
    for a, t in either(idx, None):
        if a.op == "mul":
            for io, c in either(a, None):
                if io.op == "iota" and scalar(c) == classes:
                    return lp, t
    return None


def match_softmax_xent(node: Node, users: dict[int, int]) -> Match | None:
    """Cross-entropy of logits with integer targets -> ``fused_softmax_xent``."""
    if node.is_tuple or not node.dtype.is_float:
        return None
    reduction_kind, body, count_valid = "none", node, None
    interior = {id(node)}
    if node.op == "div":
        num, den = node.inputs
        red = reduction(num, "sum")
        if red is None or len(red[1]) != red[0].ndim:
            return None
        body = red[0]
        interior.add(id(strip_keepdims(num)))
        c = scalar(den)
        if c is not None:
            if c != body.size:
                return None
        elif den.op == "maximum":
            for cnt, one in either(den, None):
                r = reduction(cnt, "sum")
                if scalar(one) == 1 and r is not None and r[0].op == "cast" and len(r[1]) == r[0].ndim:
                    count_valid = r[0].inputs[0]
                    break
            else:
                return None
        else:
            return None
        reduction_kind = "mean"
    elif node.op == "sum":
        red = reduction(node, "sum")
        if red is None or len(red[1]) != red[0].ndim:
            return None
        body, reduction_kind = red[0], "sum"
    valid = None
    if body.op == "where" and scalar(body.inputs[2]) == 0:
        interior.add(id(body))
        valid, body = body.inputs[0], body.inputs[1]
    if body.op != "neg":
        return None
    interior.add(id(body))
    picked = _picked_rows(body.inputs[0])
    if picked is None:
        return None
    lp, row_t = picked
    x = log_softmax_input(lp)
    if x is None:
        return None
    t = row_t.inputs[0] if row_t.op == "reshape" else row_t  # targets flattened to rows
    if t.op == "gather" and t.inputs[0].op == "iota" and t.inputs[0].shape == (x.shape[-1],):
        t = t.inputs[1]  # iota(C)[t] is t, bounds-checked; the fused op checks bounds itself
    ignore = None
    if valid is not None:
        if t.op != "where" or t.inputs[0] != valid or scalar(t.inputs[2]) != 0 or valid.op != "ne":
            return None
        t = t.inputs[1]
        if valid.inputs[0] != t or scalar(valid.inputs[1]) is None:
            return None
        ignore = int(scalar(valid.inputs[1]))
    if reduction_kind == "mean" and count_valid is not None and count_valid != valid:
        return None
    if reduction_kind == "mean" and count_valid is None and valid is not None:
        return None  # mean over every row while ignoring some: not cross_entropy's mean
    if t.shape != x.shape[:-1] or not t.dtype.is_int:
        return None
    attrs = {"ignore_index": ignore, "reduction": reduction_kind}

    def build(m: Mapper) -> Node:
        return first_output(make("fused_softmax_xent", [m(x), m(t)], attrs, node.loc))

    return Match("softmax_xent", build, interior)


# ----------------------------------------------------------------------------- driver

MATCHERS: list[Callable[[Node, dict[int, int]], Match | None]] = [match_softmax_xent, match_attention, match_layernorm]


def apply_matches(graph: Graph, matchers: list[Callable[[Node, dict[int, int]], Match | None]] | None = None,
                  found: list[str] | None = None) -> Graph:
    """Replace every matched pattern; ``found`` collects the pattern names."""
    matchers = MATCHERS if matchers is None else matchers
    users = count_users(graph)
    subs: dict[int, Match] = {}
    claimed: set[int] = set()
    for node in reversed(graph.nodes):
        if id(node) in claimed or node.op in ("param", "const"):
            continue
        for matcher in matchers:
            match = matcher(node, users)
            if match is not None:
                subs[id(node)] = match
                claimed |= match.interior
                if found is not None:
                    found.append(match.pattern)
                break
    def step(node: Node, new: Node, mapped: Mapper) -> Node:
        if id(node) in subs:
            return subs[id(node)].build(mapped)
        if new.op == "scan":
            return with_body(new, apply_matches(new.attrs["body"], matchers, found))
        return new

    return map_nodes(graph, step)


def fuse_patterns(graph: Graph) -> Graph:
    """The pattern-fusion pass: attention, layer norm, softmax cross-entropy."""
    return apply_matches(graph)
