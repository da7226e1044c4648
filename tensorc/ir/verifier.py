"""The verifier: a graph is well formed, or this says exactly what is wrong.

Checks that every node's stored type equals what its op's type rule gives,
that the only ``param`` nodes are the graph's inputs, and recurses into scan
bodies. Run after every pass in tests and when ``TENSORC_VERIFY=1``.
"""

from __future__ import annotations

from ..errors import TensorcError
from .node import Graph
from .registry import REGISTRY


class VerifyError(TensorcError):
    """A graph broke an IR invariant (a bug in tensorc or in a pass)."""


def verify(graph: Graph) -> Graph:
    """Return ``graph`` unchanged if it is well formed; raise VerifyError if not."""
    inputs = {id(p) for p in graph.inputs}
    if len(inputs) != len(graph.inputs):
        raise VerifyError(f"graph {graph.name}: an input is listed twice")
    for p in graph.inputs:
        if p.op != "param":
            raise VerifyError(f"graph {graph.name}: input {p!r} is not a param node")
    for node in graph.nodes:
        if node.op not in REGISTRY:
            raise VerifyError(f"graph {graph.name}: unknown op {node.op!r}")
        if node.op == "param" and id(node) not in inputs:
            raise VerifyError(f"graph {graph.name}: param {node.attrs.get('name')!r} is not a graph input")
        if node.op == "scan":
            verify(node.attrs["body"])
        if node.op == "param":
            continue
        for i in node.inputs:
            if i.is_tuple and node.op != "tuple_get":
                raise VerifyError(f"graph {graph.name}: {node.op} consumes a tuple value directly")
        try:
            shape, dtype = REGISTRY[node.op].infer([(i.shape, i.dtype) for i in node.inputs], node.attrs)
        except TensorcError as e:
            raise VerifyError(f"graph {graph.name}: {node.op} at {node.loc}: type rule fails: {e}") from e
        if shape != node.shape or dtype != node.dtype:
            raise VerifyError(
                f"graph {graph.name}: {node.op} at {node.loc} stores {node.type_str} but its rule gives {shape} {dtype}"
            )
    return graph
