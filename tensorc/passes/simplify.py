"""Simplification passes: algebraic identities, movement-chain folding,
constant folding, common-subexpression elimination and dead-code elimination.
"""

from __future__ import annotations

import numpy as np

from ..ir.node import Attrs, ConstValue, Graph, Node
from .rewrite import map_nodes, rewrite_graph, with_body

# Constants up to this many elements are folded; bigger results stay as the
# (cheap to store) expression that makes them, e.g. an expanded scalar.
FOLD_LIMIT = 1024


def scalar_value(node: Node) -> float | None:
    """The value of a node that is one scalar constant broadcast to some shape, else None."""
    while node.op in ("reshape", "expand", "permute"):
        node = node.inputs[0]
    if node.op == "const" and node.attrs["value"].array.size == 1:
        return node.attrs["value"].array.reshape(()).item()
    return None


def _is_scalar(node: Node, value: float) -> bool:
    v = scalar_value(node)
    return v is not None and v == value and not isinstance(v, bool)


def fold_movement(node: Node) -> Node | None:
    """reshape/permute/expand/cast chains collapse; no-ops vanish."""
    op = node.op
    if op in ("reshape", "expand") and node.inputs[0].shape == node.shape:
        return node.inputs[0]
    if op == "reshape" and node.inputs[0].op == "reshape":
        return node.replace(inputs=node.inputs[0].inputs)
    if op == "permute":
        dims = node.attrs["dims"]
        if tuple(dims) == tuple(range(len(dims))):
            return node.inputs[0]
        inner = node.inputs[0]
        if inner.op == "permute":
            composed = tuple(inner.attrs["dims"][d] for d in dims)
            return node.replace(inputs=inner.inputs, attrs=Attrs({"dims": composed}))
    if op == "expand" and node.inputs[0].op == "expand":
        return node.replace(inputs=node.inputs[0].inputs)
    if op == "cast":
        src = node.inputs[0]
        if src.dtype == node.dtype:
            return src
        # cast(cast(x, wide), x.dtype) is x when `wide` holds every value of x's dtype exactly.
        if src.op == "cast" and src.inputs[0].dtype == node.dtype and _lossless(src.inputs[0].dtype, src.dtype):
            return src.inputs[0]
    return None


def _lossless(small: object, wide: object) -> bool:
    names = (getattr(small, "name", ""), getattr(wide, "name", ""))
    return names in {("float16", "float32"), ("float16", "float64"), ("bfloat16", "float32"), ("bfloat16", "float64"),
                     ("float32", "float64"), ("int32", "int64"), ("int32", "float64"), ("bool", "int32"),
                     ("bool", "int64"), ("bool", "float32"), ("bool", "float64"), ("uint32", "int64")}


# op -> (identity element, whether it is also a left identity)
_IDENTITIES = {"add": (0, True), "mul": (1, True), "sub": (0, False), "div": (1, False)}


def algebraic(node: Node) -> Node | None:
    """x+0, 0+x, x-0, x*1, 1*x, x/1, --x. (x*0 is kept: it is NaN for x = inf.)"""
    if node.op == "neg" and node.inputs[0].op == "neg":
        return node.inputs[0].inputs[0]
    if node.op not in _IDENTITIES:
        return None
    unit, commutes = _IDENTITIES[node.op]
    a, b = node.inputs
    if _is_scalar(b, unit):
        return a
    if commutes and _is_scalar(a, unit):
        return b
    return None


def _constant_array(node: Node) -> np.ndarray | None:
    """The value of a constant, or of a view (expand/reshape) of one; else None."""
    if node.op == "const":
        return node.attrs["value"].array
    if node.op in ("expand", "reshape"):
        inner = _constant_array(node.inputs[0])
        if inner is not None:
            return np.broadcast_to(inner, node.shape) if node.op == "expand" else inner.reshape(node.shape)
    return None


def fold_constants(node: Node) -> Node | None:
    """Evaluate small nodes whose inputs are all constants (or views of constants).

    ``iota`` is not folded: it is index math the scheduler recomputes where it is
    read (no buffer), and pattern fusion recognises masks and row indices by it."""
    # An expanded constant stays a view of its small source: folding it would store every copy.
    if node.op in ("const", "param", "scan", "tuple_get", "random_bits", "expand") or node.is_tuple:
        return None
    if node.size > FOLD_LIMIT or not node.inputs:
        return None
    values = [_constant_array(i) for i in node.inputs]
    if any(v is None for v in values):
        return None
    from ..backends.reference.interpreter import evaluate_node

    value = evaluate_node(node, values)
    return Node("const", (), Attrs({"value": ConstValue(np.asarray(value))}), node.shape, node.dtype, node.loc)


def simplify(graph: Graph) -> Graph:
    """Identities, movement folding and constant folding, to a fixed point."""

    def rule(node: Node) -> Node | None:
        return fold_movement(node) or algebraic(node) or fold_constants(node)

    return rewrite_graph(graph, rule)


def cse(graph: Graph) -> Graph:
    """Common-subexpression elimination: structurally equal nodes become one."""
    seen: dict[tuple, Node] = {}

    def rule(node: Node) -> Node | None:
        if node.op == "param":
            return None
        key = (node.op, node.attrs, node.shape, node.dtype, tuple(id(i) for i in node.inputs))
        hit = seen.get(key)
        if hit is None:
            seen[key] = node
            return None
        return hit

    return rewrite_graph(graph, rule)


def dce(graph: Graph) -> Graph:
    """Dead-code elimination. Unreachable nodes vanish by construction (a
    Graph holds what its outputs need); this also drops the per-step outputs
    (ys) of a scan that nothing reads, so the loop stops computing them."""
    used: dict[int, set[int]] = {}
    for n in graph.nodes:
        if n.op == "tuple_get":
            used.setdefault(id(n.inputs[0]), set()).add(n.attrs["index"])
    remap: dict[int, dict[int, int]] = {}

    def step(node: Node, new: Node, mapped: object) -> Node:
        if node.op == "scan":
            body, n_carry = node.attrs["body"], node.attrs["n_carry"]
            keep = list(range(n_carry)) + sorted(i for i in used.get(id(node), set()) if i >= n_carry)
            if len(keep) == len(body.outputs):
                return with_body(new, dce(body))
            attrs = dict(node.attrs.items())
            attrs["body"] = dce(Graph(body.inputs, [body.outputs[i] for i in keep], name=body.name))
            remap[id(node)] = {old: k for k, old in enumerate(keep)}
            return Node("scan", new.inputs, Attrs(attrs), tuple(new.shape[i] for i in keep),
                        tuple(new.dtype[i] for i in keep), new.loc)
        if node.op == "tuple_get" and id(node.inputs[0]) in remap:
            return new.replace(attrs=Attrs({"index": remap[id(node.inputs[0])][node.attrs["index"]]}))
        return new

    return map_nodes(graph, step)
