"""Reverse mode as a Graph -> Graph transform.

``vjp_graph(g)`` builds a new graph that takes g's inputs plus one cotangent
per (chosen) float output, recomputes g's outputs, and returns them followed
by the gradients of the chosen inputs. The backward nodes come from the
registry's VJP rules, so they are ordinary primitive nodes: later passes fuse
them, and ``vjp_graph`` can be applied again (higher-order gradients).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import TensorcError
from ..frontend import ops as F
from ..frontend.tensor import Tensor
from ..frontend.tracing import apply, located_at, replay, trace_scope
from ..ir.node import Graph, Node
from ..ir.registry import REGISTRY
from .rules import VJPContext


def _is_float(node: Node) -> bool:
    return not node.is_tuple and node.dtype.is_float


def _accumulate(store: dict[int, Any], key: int, g: Tensor) -> None:
    prev = store.get(key)
    store[key] = g if prev is None else F.add(prev, g)


def _scan_with_residuals(node: Node, args: list[Any], residuals: dict[int, list[Tensor]]) -> tuple[Tensor, ...]:
    """Emit the scan so that it also stacks the residuals its backward needs (each step's incoming
    carry, then the values of :func:`~tensorc.autodiff.scan.saved_values`), and return the
    original outputs."""
    from .scan import saved_values

    a = node.attrs
    body: Graph = a["body"]
    carry_params = body.inputs[a["n_consts"]:a["n_consts"] + a["n_carry"]]
    extra = tuple(carry_params) + tuple(saved_values(body, a["n_consts"]))
    saving = Graph(body.inputs, tuple(body.outputs) + extra, name=body.name)
    attrs = dict(a.items())
    attrs["body"] = saving
    outs = apply("scan", args, attrs, loc=node.loc)
    n_orig = len(body.outputs)
    residuals[id(node)] = list(outs[n_orig:])
    return tuple(outs[:n_orig])


def backpropagate(graph: Graph, values: dict[int, Any], seeds: dict[int, Tensor],
                  residuals: dict[int, list[Tensor]]) -> dict[int, Tensor]:
    """Walk ``graph`` backwards from the seeded cotangents; return ``{id(node): cotangent}``
    for every float node that receives one (the graph inputs among them)."""
    ct: dict[int, Any] = {}
    for key, g in seeds.items():
        _accumulate(ct, key, g)
    tuple_ct: dict[int, list[Any]] = {}
    input_ids = {id(p) for p in graph.inputs}
    for node in reversed(graph.nodes):
        if node.op == "tuple_get":
            g = ct.get(id(node))
            if g is not None:
                parent = node.inputs[0]
                slots = tuple_ct.setdefault(id(parent), [None] * len(parent.dtype))
                i = node.attrs["index"]
                slots[i] = g if slots[i] is None else F.add(slots[i], g)
            continue
        g = tuple_ct.get(id(node)) if node.is_tuple else ct.get(id(node))
        if g is None or id(node) in input_ids:
            continue
        opdef = REGISTRY[node.op]
        if not opdef.differentiable:
            continue
        if opdef.vjp is None:
            where = f" (at {node.loc})" if node.loc else ""
            raise TensorcError(f"no VJP rule is registered for op {node.op!r}{where}; it cannot be differentiated")
        ctx = VJPContext(node, [values[id(i)] for i in node.inputs], values[id(node)], node.attrs)
        if node.op == "scan":
            ctx.residuals = residuals[id(node)]  # type: ignore[attr-defined]
        with located_at(node.loc):  # backward nodes point at the forward line they differentiate
            in_cts = opdef.vjp(ctx, g)
        if len(in_cts) != len(node.inputs):
            raise TensorcError(f"VJP rule of {node.op} returned {len(in_cts)} cotangents for {len(node.inputs)} inputs (tensorc bug)")
        for inp, gi in zip(node.inputs, in_cts):
            if gi is not None and _is_float(inp):
                if gi.shape != inp.shape or gi.dtype != inp.dtype:
                    raise TensorcError(f"VJP rule of {node.op} gave {gi.dtype}{list(gi.shape)} for an input "
                                       f"{inp.type_str} (tensorc bug)")
                _accumulate(ct, id(inp), gi)
    return ct


def vjp_graph(graph: Graph, wrt: Sequence[int] | None = None, ct_outputs: Sequence[int] | None = None,
              given: Sequence[Node] = (), extras: Sequence[tuple[str, Node]] = ()) -> Graph:
    """The reverse-mode graph of ``graph``.

    Inputs: ``graph``'s inputs, then one cotangent per output in ``ct_outputs``
    (default: every float output), then one value per node of ``given``.
    Outputs: ``graph``'s outputs, then the gradient of each input in ``wrt``
    (default: every float input), zeros where an input does not influence the
    seeded outputs, then one value per entry of ``extras``.

    ``given``: nodes of ``graph`` whose values are inputs instead of being
    recomputed (a scan's backward reads the values its forward saved).
    ``extras``: ``("ct", node)`` is the cotangent reaching ``node`` (zeros if
    none does), ``("value", node)`` its forward value.
    """
    wrt = [i for i, p in enumerate(graph.inputs) if _is_float(p)] if wrt is None else list(wrt)
    ct_outputs = [i for i, o in enumerate(graph.outputs) if _is_float(o)] if ct_outputs is None else list(ct_outputs)
    for i in wrt:
        if not _is_float(graph.inputs[i]):
            raise TensorcError(f"input {graph.inputs[i].attrs.get('name')} of type {graph.inputs[i].type_str} has no gradient")
    for i in ct_outputs:
        if not _is_float(graph.outputs[i]):
            raise TensorcError(f"output {i} of type {graph.outputs[i].type_str} cannot carry a cotangent")
    with trace_scope(f"vjp_{graph.name}") as tr:
        ins = [Tensor._traced(tr.new_param(p.shape, p.dtype, str(p.attrs.get("name", f"in{k}"))), tr)
               for k, p in enumerate(graph.inputs)]
        cts = [Tensor._traced(tr.new_param(graph.outputs[i].shape, graph.outputs[i].dtype, f"ct{i}"), tr) for i in ct_outputs]
        known = {id(n): Tensor._traced(tr.new_param(n.shape, n.dtype, f"given{k}"), tr) for k, n in enumerate(given)}
        residuals: dict[int, list[Tensor]] = {}

        def on_node(n: Node, args: list[Any]) -> Any:
            if id(n) in known:
                return known[id(n)]
            return _scan_with_residuals(n, args, residuals) if n.op == "scan" else None

        values = replay(graph, ins, on_node=on_node)
        seeds: dict[int, Tensor] = {}
        for i, g in zip(ct_outputs, cts):
            _accumulate(seeds, id(graph.outputs[i]), g)
        ct = backpropagate(graph, values, seeds, residuals)
        grads = [ct.get(id(graph.inputs[i])) for i in wrt]
        grads = [g if g is not None else F.zeros(graph.inputs[i].shape, dtype=graph.inputs[i].dtype) for g, i in zip(grads, wrt)]
        more = [values[id(n)] if kind == "value" else ct.get(id(n), None) for kind, n in extras]
        more = [m if m is not None else F.zeros(n.shape, dtype=n.dtype) for m, (_, n) in zip(more, extras)]
        outs = [values[id(o)] for o in graph.outputs] + grads + more
        out_nodes = [tr.lift(t) for t in outs]
    if tr.captured:
        raise TensorcError("vjp_graph: the graph refers to values outside itself (tensorc bug)")
    return Graph(tr.params, out_nodes, name=f"vjp_{graph.name}")
