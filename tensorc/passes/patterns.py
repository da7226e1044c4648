"""Small helpers for recognising patterns in primitive graphs.

The frontend spells broadcasting as ``reshape`` + ``expand`` and keepdims as a
``reshape`` that inserts unit axes; these helpers look through such views so
matchers can talk about the math ("a mean over the last axis") rather than
about one particular spelling of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ..ir.node import Graph, Node
from .simplify import scalar_value


def _only_unit_axes_differ(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return [d for d in a if d != 1] == [d for d in b if d != 1]


def strip_keepdims(node: Node) -> Node:
    """Look through reshapes that only add or drop size-1 axes."""
    while node.op == "reshape" and _only_unit_axes_differ(node.shape, node.inputs[0].shape):
        node = node.inputs[0]
    return node


def through_broadcast(node: Node) -> Node:
    """Look through expand and unit-axis reshapes: the value being broadcast."""
    while True:
        if node.op == "expand":
            node = node.inputs[0]
        elif node.op == "reshape" and _only_unit_axes_differ(node.shape, node.inputs[0].shape):
            node = node.inputs[0]
        else:
            return node


def scalar(node: Node) -> float | None:
    """The value of a broadcast scalar constant, else None."""
    return scalar_value(node)


def reduction(node: Node, op: str) -> tuple[Node, tuple[int, ...]] | None:
    """``(source, axes)`` if ``node`` is (a keepdims view of) an ``op`` reduction."""
    n = strip_keepdims(node)
    if n.op == op:
        return n.inputs[0], tuple(n.attrs["axes"])
    return None


def mean_of(node: Node) -> tuple[Node, tuple[int, ...]] | None:
    """``(source, axes)`` if ``node`` is a mean: sum / count or sum * (1 / count)."""
    n = strip_keepdims(node)
    if n.op == "div":
        c, inner = scalar(n.inputs[1]), n.inputs[0]
    elif n.op == "mul":
        c0, c1 = scalar(n.inputs[0]), scalar(n.inputs[1])
        if c1 is not None and c1 != 0:
            c, inner = 1 / c1, n.inputs[0]
        elif c0 is not None and c0 != 0:
            c, inner = 1 / c0, n.inputs[1]
        else:
            return None
    else:
        return None
    if c is None:
        return None
    red = reduction(inner, "sum")
    if red is None:
        return None
    src, axes = red
    count = math.prod(src.shape[a] for a in axes)
    return (src, axes) if math.isclose(c, count, rel_tol=1e-6) else None


def is_trailing(axes: tuple[int, ...], ndim: int) -> bool:
    """True if ``axes`` are the last ``len(axes)`` axes of a rank-``ndim`` value."""
    return len(axes) >= 1 and tuple(axes) == tuple(range(ndim - len(axes), ndim))


def ancestors_are_constant(node: Node) -> bool:
    """True if ``node`` depends on no graph input or randomness (only const/iota)."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.op in ("param", "random_bits", "scan"):
            return False
        stack.extend(n.inputs)
    return True


def constant_value(node: Node) -> np.ndarray:
    """Evaluate a node that :func:`ancestors_are_constant` accepted."""
    from ..backends.reference.interpreter import evaluate

    return evaluate(Graph([], [node], name="const_eval"), [])[0]


def count_users(graph: Graph) -> dict[int, int]:
    """How many times each node is read (as an input or a graph output)."""
    users: dict[int, int] = {}
    for n in graph.nodes:
        for i in n.inputs:
            users[id(i)] = users.get(id(i), 0) + 1
    for o in graph.outputs:
        users[id(o)] = users.get(id(o), 0) + 1
    return users


def either(node: Node, pred: object) -> Iterable[tuple[Node, Node]]:
    """Both orders of a commutative binary node's operands."""
    a, b = node.inputs
    yield a, b
    yield b, a
