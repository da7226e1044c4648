"""Rebuilding graphs: the helpers every rewrite pass is written with.

:func:`map_nodes` walks a graph inputs-first and rebuilds it from what a
function makes of each node (given the node with its inputs already
rebuilt). :func:`rewrite_graph` uses it to apply a *rule* (one node in, a
replacement or None out) to a fixed point per node, recursing into scan bodies.
"""

from __future__ import annotations

from collections.abc import Callable

from ..ir.node import Attrs, Graph, Node

Rule = Callable[[Node], "Node | None"]


def _with_inputs(node: Node, inputs: tuple[Node, ...]) -> Node:
    if all(a is b for a, b in zip(inputs, node.inputs)):
        return node
    return node.replace(inputs=inputs)


def with_body(node: Node, body: Graph) -> Node:
    """A scan ``node`` with ``body`` (the node itself if the body is unchanged)."""
    if body is node.attrs["body"]:
        return node
    attrs = dict(node.attrs.items())
    attrs["body"] = body
    return node.replace(attrs=Attrs(attrs))


def map_nodes(graph: Graph, fn: Callable[[Node, Node, Callable[[Node], Node]], Node]) -> Graph:
    """Rebuild ``graph`` inputs-first: ``fn(original, rebuilt, mapped)`` returns each node's
    replacement, where ``rebuilt`` is the original with its inputs already replaced and
    ``mapped(n)`` gives the replacement of any earlier node. Params stay. Returns the
    same Graph object when nothing changed."""
    mapping: dict[int, Node] = {}
    changed = False

    def mapped(n: Node) -> Node:
        return mapping[id(n)]

    for node in graph.nodes:
        if node.op == "param":
            mapping[id(node)] = node
            continue
        new = fn(node, _with_inputs(node, tuple(mapping[id(i)] for i in node.inputs)), mapped)
        changed |= new is not node
        mapping[id(node)] = new
    if not changed:
        return graph
    return Graph(graph.inputs, [mapping[id(o)] for o in graph.outputs], name=graph.name)


def rewrite_graph(graph: Graph, rule: Rule, *, into_bodies: bool = True, max_steps: int = 64) -> Graph:
    """Apply ``rule`` to every node, inputs first; returns the same Graph object if nothing changed."""

    def step(node: Node, new: Node, mapped: Callable[[Node], Node]) -> Node:
        if into_bodies and new.op == "scan":
            new = with_body(new, rewrite_graph(new.attrs["body"], rule, into_bodies=True, max_steps=max_steps))
        for _ in range(max_steps):
            repl = rule(new)
            if repl is None or repl is new:
                break
            new = repl
        return new

    return map_nodes(graph, step)


def count_ops(graph: Graph) -> dict[str, int]:
    """How many nodes of each op the graph (not its bodies) holds."""
    counts: dict[str, int] = {}
    for n in graph.nodes:
        counts[n.op] = counts.get(n.op, 0) + 1
    return counts
