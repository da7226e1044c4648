"""Tracing: the stack of active traces and ``apply``, the one way ops are made.

Outside any trace, ops evaluate at once with the reference semantics (eager
mode). Inside a trace (``jit``, ``scan`` bodies, ``grad``), every op becomes
a Node; concrete tensors used there become ``const`` nodes and tensors of an
enclosing trace become captured inputs of the inner one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DTypeError, ShapeError, TracerError
from ..ir.dtypes import DType, type_str
from ..ir.node import Attrs, ConstValue, Node, SourceLoc, user_location
from ..ir.registry import REGISTRY

if TYPE_CHECKING:
    from .tensor import Tensor


class Trace:
    """One graph under construction: its inputs, captures and constants."""

    def __init__(self, parent: Trace | None, name: str) -> None:
        self.parent = parent
        self.name = name
        self.active = True
        self.params: list[Node] = []
        # Tensors of an enclosing trace used here, and the param standing for each.
        self.captured: list[Tensor] = []
        self._capture_nodes: dict[int, Node] = {}
        self._consts: dict[int, tuple[Any, Node]] = {}

    def new_param(self, shape: tuple[int, ...], dtype: DType, name: str) -> Node:
        node = Node("param", (), Attrs({"shape": tuple(shape), "dtype": dtype, "name": name, "index": len(self.params)}),
                    tuple(shape), dtype, None)
        self.params.append(node)
        return node

    def is_within(self, other: Trace) -> bool:
        t: Trace | None = self
        while t is not None:
            if t is other:
                return True
            t = t.parent
        return False

    def lift(self, t: Tensor) -> Node:
        """The node standing for tensor ``t`` inside this trace."""
        if t._trace is self:
            return t._node
        if t._trace is None:
            hit = self._consts.get(id(t))
            if hit is None:
                node = Node("const", (), Attrs({"value": ConstValue(t._value)}), t.shape, t.dtype, t._loc)
                hit = self._consts[id(t)] = (t, node)
            return hit[1]
        if t._trace.active and self.is_within(t._trace):
            node = self._capture_nodes.get(id(t))
            if node is None:
                node = Node("param", (), Attrs({"shape": t.shape, "dtype": t.dtype, "name": f"c{len(self.captured)}",
                                                "index": -1 - len(self.captured)}), t.shape, t.dtype, t._loc)
                self._capture_nodes[id(t)] = node
                self.captured.append(t)
            return node
        where = f" (created at {t._loc})" if t._loc else ""
        raise TracerError(
            f"a traced tensor{where} was used outside the function that traced it; "
            "return it from the jitted/scanned function instead of storing it"
        )


class _State(threading.local):
    def __init__(self) -> None:
        self.stack: list[Trace] = []
        self.loc_override: list[SourceLoc | None] = []


def current_location() -> SourceLoc | None:
    """Where new nodes are attributed: the innermost :class:`located_at`, else the user's line."""
    if _state.loc_override and _state.loc_override[-1] is not None:
        return _state.loc_override[-1]
    return user_location()


class located_at:
    """``with located_at(node.loc):`` nodes made inside carry that source location
    (autodiff uses it so a backward node points at the forward line it came from)."""

    def __init__(self, loc: SourceLoc | None) -> None:
        self.loc = loc

    def __enter__(self) -> None:
        _state.loc_override.append(self.loc)

    def __exit__(self, *exc: Any) -> None:
        _state.loc_override.pop()


_state = _State()


def current_trace() -> Trace | None:
    """The innermost active trace, or None in eager mode."""
    return _state.stack[-1] if _state.stack else None


class trace_scope:
    """``with trace_scope(name) as trace:`` makes a new innermost trace."""

    def __init__(self, name: str) -> None:
        self.trace = Trace(current_trace(), name)

    def __enter__(self) -> Trace:
        _state.stack.append(self.trace)
        return self.trace

    def __exit__(self, *exc: Any) -> None:
        popped = _state.stack.pop()
        assert popped is self.trace
        self.trace.active = False


def format_types(op: str, types: Sequence[tuple[Any, Any]]) -> str:
    """Operand types joined as an error message shows them (``f32[4,8] @ f32[7,16]``)."""
    sym = REGISTRY[op].symbol if op in REGISTRY else ","
    parts = [type_str(s, d) if not isinstance(d, tuple) else "(tuple)" for s, d in types]
    return (f" {sym} " if sym != "," else ", ").join(parts)


def op_error(kind: type[Exception], op: str, types: Sequence[tuple[Any, Any]], detail: str,
             loc: SourceLoc | None = None) -> Exception:
    """``ShapeError: matmul at model.py:12: f32[4,8] @ f32[7,16]: inner dims 8 != 7``."""
    loc = loc or current_location()
    where = f" at {loc}" if loc else ""
    operands = f" {format_types(op, types)}:" if types else ""
    return kind(f"{op}{where}:{operands} {detail}")


def apply(op: str, inputs: Sequence[Tensor], attrs: dict[str, Any] | Attrs | None = None, *, name: str | None = None,
          loc: SourceLoc | None = None) -> Any:
    """Make one ``op`` node (traced) or compute it (eager). Returns a Tensor
    (or a tuple of Tensors for multi-output ops)."""
    from .tensor import Tensor

    attrs_ = attrs if isinstance(attrs, Attrs) else Attrs(attrs or {})
    loc = loc or current_location()
    types = [(t.shape, t.dtype) for t in inputs]
    try:
        shape, dtype = REGISTRY[op].infer(types, attrs_)
    except (ShapeError, DTypeError) as e:
        raise op_error(type(e), name or op, types, str(e), loc) from None
    trace = current_trace()
    if trace is None:
        from ..backends.reference.interpreter import evaluate_node

        for t in inputs:
            if t._trace is not None:  # a tracer that leaked out of its jit/scan, used eagerly
                where = f" (created at {t._loc})" if t._loc else ""
                raise TracerError(f"{name or op} at {loc}: a traced tensor{where} was used outside the function that traced it; "
                                  "return it from the jitted/scanned function instead of storing it")

        node = Node(op, (), attrs_, shape, dtype, loc)
        try:
            value = evaluate_node(node, [t._value for t in inputs])
        except (IndexError, ZeroDivisionError) as e:
            raise op_error(ShapeError if isinstance(e, IndexError) else DTypeError, name or op, types,
                           str(e).split(": ", 1)[-1], loc) from None
        if isinstance(dtype, tuple):
            return tuple(Tensor._concrete(v, loc) for v in value)
        return Tensor._concrete(value, loc)
    node = Node(op, tuple(trace.lift(t) for t in inputs), attrs_, shape, dtype, loc)
    if isinstance(dtype, tuple):
        return tuple(
            Tensor._traced(Node("tuple_get", (node,), Attrs({"index": i}), s, d, loc), trace)
            for i, (s, d) in enumerate(zip(shape, dtype))
        )
    return Tensor._traced(node, trace)


def is_traced(x: Any) -> bool:
    """True for a Tensor that is a node of some trace."""
    from .tensor import Tensor

    return isinstance(x, Tensor) and x._trace is not None


def concrete_value(t: Tensor, what: str) -> np.ndarray:
    """The numpy value of an eager tensor; TracerError naming ``what`` for a traced one."""
    if t._trace is not None:
        loc = user_location()
        where = f" at {loc}" if loc else ""
        state = "is traced (inside jit/scan/grad)" if t._trace.active else "was traced by a function that has returned (a leaked tracer)"
        raise TracerError(
            f"{what}{where} needs a concrete value, but this tensor {state}; "
            "use tc.where instead of Python control flow on tensor values, or mark the argument static"
        )
    return t._value


def replay(graph: Any, inputs: Sequence[Tensor], on_node: Any = None) -> dict[int, Any]:
    """Re-issue every node of ``graph`` through :func:`apply` with ``inputs``
    bound to its params: inlines the graph into the current trace, or
    evaluates it op by op in eager mode. Returns ``{id(node): Tensor or tuple}``.

    ``on_node(node, args)`` may return a replacement value for a node (used by
    autodiff to emit scans that also save their residuals); None keeps the default.
    """
    if len(inputs) != len(graph.inputs):
        raise TracerError(f"graph {graph.name} takes {len(graph.inputs)} inputs, given {len(inputs)}")
    values: dict[int, Any] = {id(p): t for p, t in zip(graph.inputs, inputs)}
    for node in graph.nodes:
        if id(node) in values:
            continue
        if node.op == "tuple_get":
            values[id(node)] = values[id(node.inputs[0])][node.attrs["index"]]
            continue
        args = [values[id(i)] for i in node.inputs]
        out = on_node(node, args) if on_node is not None else None
        if out is None:
            out = apply(node.op, args, node.attrs, loc=node.loc)
        values[id(node)] = out
    return values


def call_graph(graph: Any, inputs: Sequence[Tensor]) -> list[Tensor]:
    """Run ``graph`` on tensors: inline it into the current trace, or evaluate it eagerly."""
    values = replay(graph, inputs)
    return [values[id(o)] for o in graph.outputs]
