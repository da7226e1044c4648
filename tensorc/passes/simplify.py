"""Simplification passes: algebraic identities, movement-chain folding,
constant folding, common-subexpression elimination and dead-code elimination.
"""

from __future__ import annotations

import numpy as np

from ..ir.node import Attrs, ConstValue, Graph, Node
from .rewrite import rewrite_graph

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


def algebraic(node: Node) -> Node | None:
    """x+0, x-0, x*1, x/1, --x. (x*0 is kept: it is NaN for x = inf.)"""
    op = node.op
    if op == "add":
        a, b = node.inputs
        if _is_scalar(b, 0):
            return a
        if _is_scalar(a, 0):
            return b
    elif op == "sub" and _is_scalar(node.inputs[1], 0):
        return node.inputs[0]
    elif op == "mul":
        a, b = node.inputs
        if _is_scalar(b, 1):
            return a
        if _is_scalar(a, 1):
            return b
    elif op == "div" and _is_scalar(node.inputs[1], 1):
        return node.inputs[0]
    elif op == "neg" and node.inputs[0].op == "neg":
        return node.inputs[0].inputs[0]
    return None


def fold_constants(node: Node) -> Node | None:
    """Evaluate small nodes whose inputs are all constants."""
    # An expanded constant stays a view of its small source: folding it would store every copy.
    if node.op in ("const", "param", "scan", "tuple_get", "random_bits", "expand") or node.is_tuple or not node.inputs:
        return None
    if node.size > FOLD_LIMIT or not all(i.op == "const" for i in node.inputs):
        return None
    from ..backends.reference.interpreter import evaluate_node

    value = evaluate_node(node, [i.attrs["value"].array for i in node.inputs])
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
    mapping: dict[int, Node] = {}
    remap: dict[int, dict[int, int]] = {}
    changed = False
    for node in graph.nodes:
        if node.op == "param":
            mapping[id(node)] = node
            continue
        new_inputs = tuple(mapping[id(i)] for i in node.inputs)
        new = node if all(a is b for a, b in zip(new_inputs, node.inputs)) else node.replace(inputs=new_inputs)
        if node.op == "scan":
            a = node.attrs
            body = a["body"]
            n_carry = a["n_carry"]
            keep = list(range(n_carry)) + sorted(i for i in used.get(id(node), set()) if i >= n_carry)
            if len(keep) < len(body.outputs):
                new_body = dce(Graph(body.inputs, [body.outputs[i] for i in keep], name=body.name))
                attrs = dict(a.items())
                attrs["body"] = new_body
                shapes = tuple(new.shape[i] for i in keep)
                dts = tuple(new.dtype[i] for i in keep)
                new = Node("scan", new.inputs, Attrs(attrs), shapes, dts, new.loc)
                remap[id(node)] = {old: k for k, old in enumerate(keep)}
            else:
                new_body = dce(body)
                if new_body is not body:
                    attrs = dict(a.items())
                    attrs["body"] = new_body
                    new = new.replace(attrs=Attrs(attrs))
        if node.op == "tuple_get" and id(node.inputs[0]) in remap:
            new = new.replace(attrs=Attrs({"index": remap[id(node.inputs[0])][node.attrs["index"]]}))
        if new is not node:
            changed = True
        mapping[id(node)] = new
    if not changed:
        return graph
    return Graph(graph.inputs, [mapping[id(o)] for o in graph.outputs], name=graph.name)
