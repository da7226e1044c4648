"""``to_dot``: the graph as Graphviz DOT text, one cluster per kernel.

The graph is built with networkx (one node per IR value, an edge per
operand); the DOT text is written here rather than through
``networkx.drawing.nx_pydot``, which needs pydot. Materialized values are
drawn bold; views and index sources sit in the cluster of the kernel that
reads them when only one does.

>>> import numpy as np, tensorc as tc
>>> dot = tc.jit(lambda x: tc.exp(x) + 1).lower(np.ones(4, np.float32)).to_dot()
>>> dot.splitlines()[0], dot.count("subgraph cluster_")
('digraph "<lambda>" {', 1)
"""

from __future__ import annotations

import networkx as nx

from .scheduler import Schedule


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped + '"'


def schedule_digraph(s: Schedule) -> nx.DiGraph:
    """The IR as a networkx DiGraph; node attrs: label, kernel (index or None), stored (bool)."""
    g = nx.DiGraph()
    owners: dict[int, set[int]] = {}
    for k in s.kernels:
        for node in k.exec_nodes:
            owners.setdefault(id(node), set()).add(k.index)
    home: dict[int, int] = {}
    for k in s.kernels:
        for node in k.nodes:
            home[id(node)] = k.index
    stored = set(s.buffer_of)
    for node in s.graph.nodes:
        kernel = home.get(id(node))
        if kernel is None and len(owners.get(id(node), ())) == 1:
            kernel = next(iter(owners[id(node)]))
        g.add_node(id(node), label=f"{s.name(node)} = {node.op}\n{node.type_str}", kernel=kernel, stored=id(node) in stored)
        for inp in node.inputs:
            g.add_edge(id(inp), id(node))
    return g


def to_dot(s: Schedule) -> str:
    """DOT text of the scheduled graph: ``subgraph cluster_K`` per kernel K."""
    g = schedule_digraph(s)
    ids = {n: f"n{i}" for i, n in enumerate(g.nodes)}
    lines = [f"digraph {_quote(s.graph.name)} {{", "  rankdir=TB;", '  node [shape=box, fontname="monospace", fontsize=10];']

    def node_line(n: int, indent: str) -> str:
        attrs = g.nodes[n]
        style = ", style=bold" if attrs["stored"] else ""
        return f"{indent}{ids[n]} [label={_quote(attrs['label'])}{style}];"

    for k in s.kernels:
        lines.append(f"  subgraph cluster_{k.index} {{")
        lines.append(f"    label={_quote(f'kernel {k.index}: {k.pattern}')};")
        lines.append("    style=rounded;")
        lines += [node_line(n, "    ") for n in g.nodes if g.nodes[n]["kernel"] == k.index]
        lines.append("  }")
    lines += [node_line(n, "  ") for n in g.nodes if g.nodes[n]["kernel"] is None]
    lines += [f"  {ids[a]} -> {ids[b]};" for a, b in g.edges]
    lines.append("}")
    return "\n".join(lines)
