"""Evaluate any Graph with numpy, one node at a time, using the registry's semantics.

float16 and bfloat16 values are computed in float32 and rounded back to
their storage dtype after every op (the storage-only policy of every backend).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import DTypeError, ShapeError, TensorcError
from ...ir import dtypes
from ...ir.dtypes import type_str
from ...ir.node import Graph, Node
from ...ir.registry import REGISTRY

_HALF = (np.dtype(np.float16), dtypes.bfloat16.np)


class _Ctx:
    __slots__ = ("node",)

    def __init__(self) -> None:
        self.node: Node | None = None

    def run(self, graph: Graph, args: list[np.ndarray]) -> list[np.ndarray]:
        return evaluate(graph, args)


def _to_storage(value: Any, node: Node) -> Any:
    if node.is_tuple:
        return tuple(np.asarray(v, dtype=d.np) for v, d in zip(value, node.dtype))
    arr = np.asarray(value)
    if arr.dtype != node.dtype.np:
        with np.errstate(invalid="ignore", over="ignore"):
            arr = arr.astype(node.dtype.np)
    if arr.shape != node.shape:
        raise TensorcError(f"reference {node.op} produced shape {arr.shape}, expected {node.shape} (tensorc bug)")
    return arr


def evaluate_node(node: Node, args: Sequence[Any], impl: Any = None) -> Any:
    """Apply one node's reference semantics to concrete input arrays.

    ``impl``: another implementation with the reference's signature (a native library kernel);
    it runs first, and the reference runs when it returns None (a case it does not handle)."""
    ctx = _Ctx()
    ctx.node = node
    if node.op not in ("cast", "scan", "tuple_get", "gather", "scatter_add") and any(
        getattr(a, "dtype", None) in _HALF for a in args
    ):
        args = [a.astype(np.float32) if a.dtype in _HALF else a for a in args]
    try:
        with np.errstate(all="ignore"):
            out = impl(ctx, *args) if impl is not None else None
            if out is None:
                out = REGISTRY[node.op].ref(ctx, *args)
    except (IndexError, ZeroDivisionError) as e:
        in_types = [(np.shape(a), getattr(a, "dtype", None)) for a in args if not isinstance(a, tuple)]
        raise _data_error(node, in_types, e) from None
    return _to_storage(out, node)


def _data_error(node: Node, in_types: list[tuple[Any, Any]], e: Exception) -> TensorcError:
    """A bad index or an integer division by zero, found while running: the user's error, reported
    as one found while tracing is (``gather at model.py:12: f32[5], i64[3]: index 7 out of range ...``)."""
    kind = ShapeError if isinstance(e, IndexError) else DTypeError
    where = f" at {node.loc}" if node.loc else ""
    sym = REGISTRY[node.op].symbol
    operands = (f" {sym} " if sym != "," else ", ").join(
        type_str(tuple(s), dtypes.dtype(d)) if d is not None else "?" for s, d in in_types)
    detail = str(e).split(": ", 1)[-1]  # the reference's message may carry its own "op at loc:" prefix
    return kind(f"{node.op}{where}: {operands}: {detail}")


def bind_inputs(graph: Graph, args: Sequence[Any]) -> dict[int, Any]:
    """``{id(param): array}`` for ``graph``'s inputs, checking count, shapes and dtypes."""
    if len(args) != len(graph.inputs):
        raise TensorcError(f"graph {graph.name} takes {len(graph.inputs)} inputs, given {len(args)}")
    values: dict[int, Any] = {}
    for p, a in zip(graph.inputs, args):
        arr = np.asarray(a)
        if arr.shape != p.shape or arr.dtype != p.dtype.np:
            raise TensorcError(f"graph {graph.name}: input {p.attrs.get('name')} wants {p.type_str}, given {arr.dtype}{list(arr.shape)}")
        values[id(p)] = arr
    return values


def evaluate(graph: Graph, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run ``graph`` on ``args`` (one array per graph input); return its outputs."""
    values = bind_inputs(graph, args)
    # Free each value after its last use so big graphs do not hold every temporary.
    last_use: dict[int, int] = {}
    order = graph.nodes
    for i, node in enumerate(order):
        for inp in node.inputs:
            last_use[id(inp)] = i
    keep = {id(o) for o in graph.outputs}
    for i, node in enumerate(order):
        if id(node) not in values:
            values[id(node)] = evaluate_node(node, [values[id(inp)] for inp in node.inputs])
        for inp in node.inputs:
            if last_use.get(id(inp)) == i and id(inp) not in keep:
                values.pop(id(inp), None)
    return [values[id(o)] for o in graph.outputs]


class ReferenceExecutable:
    """A Graph bound to the reference backend: call it with numpy arrays."""

    target = "reference"

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def __call__(self, *args: np.ndarray) -> list[np.ndarray]:
        return evaluate(self.graph, args)
