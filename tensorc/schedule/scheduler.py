"""``schedule_graph``: a Graph (after passes) -> kernels in launch order + a buffer plan.

>>> import numpy as np, tensorc as tc
>>> x = np.ones((8, 16), np.float32)
>>> lowered = tc.jit(lambda x: tc.softmax(x, -1)).lower(x)
>>> [(k.pattern, len(k.nodes)) for k in lowered.kernels]
[('softmax-row', 5)]
>>> [(b.name, b.role) for b in lowered.buffers]
[('%x', 'input'), ('%8', 'output')]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..ir.node import Graph, Node
from ..ir.printer import value_names
from .dataflow import Dataflow, Materialization, analyze, nbytes
from .kernel import Kernel, bytes_read, exec_nodes, kernel_flops, pattern_name
from .legality import Load, materialized_ids
from .memory import Buffer, MemoryPlan, plan_memory
from .partition import Partitioner
from .roles import forward_nodes
from .views import MOVEMENT_OPS, compose


@dataclass
class FusionRefusal:
    """Kernels ``first`` and ``second`` were candidates for one kernel; ``reason`` says why not."""

    first: int
    second: int
    reason: str
    vertical: bool  # producer -> consumer (True) or siblings reading a common buffer (False)

    def __str__(self) -> str:
        link = "->" if self.vertical else "+"
        return f"kernel {self.first} {link} kernel {self.second}: {self.reason}"


@dataclass
class Schedule:
    """Kernels in launch order, the buffer plan, and what the scheduler refused or forced."""

    graph: Graph
    kernels: list[Kernel]
    plan: MemoryPlan
    refusals: list[FusionRefusal]
    materializations: list[Materialization]
    names: dict[int, str]
    buffer_of: dict[int, Buffer] = field(default_factory=dict)

    @property
    def buffers(self) -> list[Buffer]:
        return self.plan.buffers

    @property
    def flops(self) -> int:
        return sum(k.flops for k in self.kernels)

    @property
    def bytes(self) -> int:
        return sum(k.bytes for k in self.kernels)

    def name(self, node: Node) -> str:
        return self.names.get(id(node), node.op)

    def output_source(self, out: Node) -> tuple[Node, tuple]:
        """The buffer (or input) a graph output is read from, and the free views between."""
        node, chain = out, ()
        while node.op in MOVEMENT_OPS and id(node) not in self.buffer_of:
            chain = ((node, 0),) + chain
            node = node.inputs[0]
        return node, chain

    def __repr__(self) -> str:
        return f"<Schedule {self.graph.name}: {len(self.kernels)} kernels, {len(self.buffers)} buffers>"




def _output_ids(flow: Dataflow) -> set[int]:
    """Computations the graph returns (directly or through a free reshape)."""
    out: set[int] = set()
    for o in flow.graph.outputs:
        node = o
        while node.op in MOVEMENT_OPS and not flow.is_compute(node):
            node = node.inputs[0]
        if flow.is_compute(node):
            out.add(id(node))
    return out


def _opaque_kernel_parts(flow: Dataflow, members: list[Node], output_ids: set[int]) -> tuple[list[Load], set[int]]:
    ids = {id(n) for n in members}
    loads = [Load(r.src, r.chain, None if flow.is_inline(r.src) else compose(r.src.shape, r.chain)[0], flow.is_inline(r.src))
             for n in members for r in flow.reads[id(n)] if id(r.src) not in ids]
    materialized = {i for i in materialized_ids(flow, members, ids, output_ids)
                    if not next(n for n in members if id(n) == i).is_tuple}
    return loads, materialized


def _build_kernels(flow: Dataflow, part: Partitioner, output_ids: set[int]) -> tuple[list[Kernel], dict[int, int]]:
    kernels: list[Kernel] = []
    index_of: dict[int, int] = {}
    for k, gid in enumerate(part.launch_order()):
        members = part.members[gid]
        index_of[gid] = k
        facts = part.facts.get(gid)
        if facts is None:
            loads, materialized = _opaque_kernel_parts(flow, members, output_ids)
            domain = None
        else:
            loads, materialized, domain = facts.loads, facts.materialized, facts.domain
        body = None
        body_flops = 0
        scan = next((n for n in members if n.op == "scan"), None)
        if scan is not None:
            body = schedule_graph(scan.attrs["body"])
            body_flops = body.flops
        outputs = [n for n in members if id(n) in materialized]
        kernels.append(Kernel(
            index=k, nodes=members, pattern=pattern_name(flow, members, domain), domain=domain, loads=loads,
            outputs=outputs, flops=kernel_flops(flow, members, body_flops), bytes_read=bytes_read(loads),
            bytes_written=sum(nbytes(n) for n in outputs), exec_nodes=exec_nodes(flow, members), body=body))
    return kernels, index_of


def _buffers(graph: Graph, kernels: list[Kernel], names: dict[int, str], input_roles: Sequence[str],
             output_roles: Sequence[str]) -> list[Buffer]:
    buffers: dict[int, Buffer] = {}
    role_of_input = {id(p): r for p, r in zip(graph.inputs, input_roles)}
    for p in graph.inputs:
        buffers[id(p)] = Buffer(names[id(p)], p, role_of_input[id(p)], None, -1)
    for k in kernels:
        for load in k.loads:
            src = load.src
            if src.op == "const" and not load.inline and id(src) not in buffers:
                buffers[id(src)] = Buffer(names.get(id(src), "const"), src, "constant", None, -1)
        for out in k.outputs:
            buffers[id(out)] = Buffer(names[id(out)], out, "temporary", k.index, k.index)
    for k in kernels:
        for src in k.inputs:
            b = buffers.get(id(src))
            if b is not None and k.index not in b.readers:
                b.readers.append(k.index)
                b.last_use = max(b.last_use, k.index)
    end = len(kernels)
    for out, role in zip(graph.outputs, output_roles):
        node = out
        while node.op in MOVEMENT_OPS and id(node) not in buffers:
            node = node.inputs[0]
        b = buffers.get(id(node))
        if b is None and node.op == "const":
            b = buffers[id(node)] = Buffer(names.get(id(node), "const"), node, "constant", None, -1)
        if b is not None and b.producer is not None:
            b.role = role
            b.last_use = end
    return list(buffers.values())


def _classify_intermediates(flow: Dataflow, kernels: list[Kernel], buffers: list[Buffer], output_roles: Sequence[str],
                            primal: Graph | None) -> None:
    """Activation or temporary, by the heuristic documented in :mod:`~tensorc.schedule.roles`."""
    inner = [b for b in buffers if b.producer is not None and b.last_use < len(kernels)]
    if "gradient" not in output_roles or not inner:
        return
    forward = forward_nodes(flow.graph, output_roles, primal)
    if forward is not None:
        for b in inner:
            if id(b.node) in forward and any(id(c) not in forward for c, _ in flow.consumers.get(id(b.node), ())):
                b.role = "activation"
        return
    live = [sum(b.nbytes for b in inner if b.producer <= k < b.last_use) for k in range(len(kernels))]
    turn = live.index(max(live))
    for b in inner:
        if b.producer <= turn < b.last_use:
            b.role = "activation"


def schedule_graph(graph: Graph, input_roles: Sequence[str] | None = None,
                   output_roles: Sequence[str] | None = None, primal: Graph | None = None) -> Schedule:
    """Partition ``graph`` into kernels, order them, and plan their buffers.

    ``input_roles``/``output_roles`` give one role per graph input/output
    (default: "input"/"output"); ``primal`` is the graph of the function a
    gradient program differentiates, if known. See :mod:`~tensorc.schedule.roles`.
    """
    names = value_names(graph)
    input_roles = list(input_roles) if input_roles is not None else ["input"] * len(graph.inputs)
    output_roles = list(output_roles) if output_roles is not None else ["output"] * len(graph.outputs)
    flow = analyze(graph)
    output_ids = _output_ids(flow)
    part = Partitioner(flow, output_ids, names)
    raw_refusals = part.run()
    kernels, index_of = _build_kernels(flow, part, output_ids)
    buffers = _buffers(graph, kernels, names, input_roles, output_roles)
    _classify_intermediates(flow, kernels, buffers, output_roles, primal)
    plan = plan_memory(kernels, buffers)
    refusals: list[FusionRefusal] = []
    seen: set[tuple[int, int, str]] = set()
    for r in raw_refusals:
        if r.first not in index_of or r.second not in index_of:
            continue
        a, b = sorted((index_of[r.first], index_of[r.second]))
        reason = r.reason.format(via=index_of.get(r.via, "?")) if r.via is not None else r.reason
        if (a, b, reason) not in seen:
            seen.add((a, b, reason))
            refusals.append(FusionRefusal(a, b, reason, r.vertical))
    refusals.sort(key=lambda r: (r.first, r.second))
    return Schedule(graph, kernels, plan, refusals, flow.materializations, names, {id(b.node): b for b in buffers})
