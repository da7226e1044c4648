"""The stable text form of a Graph.

    graph step(%x: f32[8,128], %w: f32[128,64]) -> (f32[]):
      %0 = matmul %x, %w          : f32[8,64]      # model.py:12
      ...
      return %2

Scan bodies are printed after the graph that uses them, as ``@body0`` ....
"""

from __future__ import annotations

import re

from .node import ConstValue, Graph, Node

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _attr_str(k: str, v: object, subgraphs: dict[int, str], pending: list[Graph]) -> str:
    if isinstance(v, Graph):
        if id(v) not in subgraphs:
            subgraphs[id(v)] = f"@body{len(subgraphs)}"
            pending.append(v)
        return f"{k}={subgraphs[id(v)]}"
    if isinstance(v, ConstValue):
        return f"{k}={v!r}"
    return f"{k}={v}"


def value_names(graph: Graph) -> dict[int, str]:
    """The name of every value as printed: ``%x`` for an input named x, ``%0``, ``%1``, ... for the rest."""
    names: dict[int, str] = {}
    used: set[str] = set()
    for i, p in enumerate(graph.inputs):
        raw = str(p.attrs.get("name", "") or "")
        cand = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", raw)).strip("_") or f"arg{i}"
        if not _IDENT.fullmatch(cand) or cand in used:
            cand = f"arg{i}"
        used.add(cand)
        names[id(p)] = "%" + cand
    counter = 0
    for node in graph.nodes:
        if id(node) not in names:
            names[id(node)] = f"%{counter}"
            counter += 1
    return names


def _format_one(graph: Graph, title: str, subgraphs: dict[int, str], pending: list[Graph]) -> list[str]:
    names = value_names(graph)
    rows: list[tuple[str, str, str]] = []
    input_ids = {id(p) for p in graph.inputs}
    for node in graph.nodes:
        if id(node) in input_ids:
            continue
        name = names[id(node)]
        attrs = ", ".join(_attr_str(k, v, subgraphs, pending) for k, v in node.attrs.items())
        operands = ", ".join(names.get(id(i), "%?") for i in node.inputs)
        text = f"{name} = {node.op}"
        if operands:
            text += " " + operands
        if attrs:
            text += " {" + attrs + "}"
        rows.append((text, node.type_str, f"# {node.loc}" if node.loc else ""))
    sig = ", ".join(f"{names[id(p)]}: {p.type_str}" for p in graph.inputs)
    outs = ", ".join(o.type_str for o in graph.outputs)
    lines = [f"{title}({sig}) -> ({outs}):"]
    w1 = max((len(r[0]) for r in rows), default=0)
    w2 = max((len(r[1]) for r in rows), default=0)
    for text, ty, loc in rows:
        lines.append(f"  {text.ljust(w1)} : {ty.ljust(w2)}  {loc}".rstrip())
    lines.append("  return " + ", ".join(names.get(id(o), "%?") for o in graph.outputs))
    return lines


def format_graph(graph: Graph) -> str:
    """The text form of ``graph`` and of every scan body it uses."""
    subgraphs: dict[int, str] = {}
    pending: list[Graph] = []
    lines = _format_one(graph, f"graph {graph.name}", subgraphs, pending)
    done = 0
    while done < len(pending):
        body = pending[done]
        done += 1
        lines.append("")
        lines += _format_one(body, f"graph {subgraphs[id(body)]}", subgraphs, pending)
    return "\n".join(lines)


def format_node(node: Node) -> str:
    """One node on its own, for error messages: ``add f32[4], f32[4] -> f32[4]``."""
    ops = ", ".join(i.type_str for i in node.inputs)
    return f"{node.op} {ops} -> {node.type_str}"
