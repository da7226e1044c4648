"""Rebuilding graphs: the one helper every rewrite pass is written with.

A *rule* looks at one node (whose inputs are already rewritten) and returns a
replacement node, or None to keep it. :func:`rewrite_graph` applies a rule
bottom-up over the whole graph, re-applying it to each replacement until it
settles, and recurses into scan bodies.
"""

from __future__ import annotations

from collections.abc import Callable

from ..ir.node import Attrs, Graph, Node

Rule = Callable[[Node], "Node | None"]


def _with_inputs(node: Node, inputs: tuple[Node, ...]) -> Node:
    if all(a is b for a, b in zip(inputs, node.inputs)):
        return node
    return node.replace(inputs=inputs)


def rewrite_graph(graph: Graph, rule: Rule, *, into_bodies: bool = True, max_steps: int = 64) -> Graph:
    """Apply ``rule`` to every node, inputs first; returns the same Graph object if nothing changed."""
    mapping: dict[int, Node] = {}
    changed = False
    for node in graph.nodes:
        if node.op == "param":
            mapping[id(node)] = node
            continue
        new = _with_inputs(node, tuple(mapping[id(i)] for i in node.inputs))
        if into_bodies and new.op == "scan":
            body = new.attrs["body"]
            new_body = rewrite_graph(body, rule, into_bodies=True, max_steps=max_steps)
            if new_body is not body:
                attrs = dict(new.attrs.items())
                attrs["body"] = new_body
                new = new.replace(attrs=Attrs(attrs))
        for _ in range(max_steps):
            repl = rule(new)
            if repl is None or repl is new:
                break
            new = repl
        if new is not node:
            changed = True
        mapping[id(node)] = new
    if not changed:
        return graph
    return Graph(graph.inputs, [mapping[id(o)] for o in graph.outputs], name=graph.name)


def count_ops(graph: Graph) -> dict[str, int]:
    """How many nodes of each op the graph (not its bodies) holds."""
    counts: dict[str, int] = {}
    for n in graph.nodes:
        counts[n.op] = counts.get(n.op, 0) + 1
    return counts
