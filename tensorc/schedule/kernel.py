"""A scheduled kernel: its computations, what it loads and stores, its cost, its pattern name.

Costs are counted per kernel, not per op: ``flops`` adds the registry's FLOP
count of every computation, and ``bytes`` counts each *materialized* buffer
the kernel reads once (only the part its views touch) plus every buffer it
writes. Values that stay inside the kernel cost no memory traffic, which is
the point of fusion.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..ir.node import Node
from ..ir.registry import REGISTRY
from .dataflow import Dataflow, nbytes, numel
from .domain import Domain
from .legality import Load

if TYPE_CHECKING:
    from .scheduler import Schedule


@dataclass
class Kernel:
    """One launch: ``nodes`` run as a single loop nest over ``domain``."""

    index: int
    nodes: list[Node]
    pattern: str
    domain: Domain | None
    loads: list[Load]
    outputs: list[Node]
    flops: int
    bytes_read: int
    bytes_written: int
    exec_nodes: list[Node] = field(default_factory=list)  # nodes the reference backend evaluates, views included
    body: Schedule | None = None  # a scan's body, scheduled on its own

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """Arithmetic intensity: FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0

    @property
    def ops(self) -> list[str]:
        return [n.op for n in self.nodes]

    @property
    def inputs(self) -> list[Node]:
        """The distinct buffers the kernel reads (index sources such as iota excluded)."""
        seen: dict[int, Node] = {}
        for load in self.loads:
            if not load.inline:
                seen.setdefault(id(load.src), load.src)
        return list(seen.values())

    def __repr__(self) -> str:
        return f"<Kernel {self.index} {self.pattern}: {len(self.nodes)} ops, {self.flops} FLOPs, {self.bytes} B>"


def _activation(ops: Counter) -> str | None:
    if ops["erf"] or (ops["tanh"] and ops["mul"] >= 4):
        return "gelu"
    if ops["sigmoid"]:
        return "silu" if ops["mul"] else "sigmoid"
    for op in ("tanh", "relu", "exp"):
        if ops[op]:
            return op
    if ops["maximum"]:
        return "relu"
    return None


def _has_bias(flow: Dataflow, nodes: list[Node], ids: set[int]) -> bool:
    """An ``add`` whose other operand is a smaller buffer broadcast over the output."""
    for node in nodes:
        if node.op == "add":
            for read in flow.reads[id(node)]:
                if id(read.src) not in ids and numel(read.src) < numel(node) and any(n.op == "expand" for n, _ in read.chain):
                    return True
    return False


def _reduce_word(domain: Domain | None) -> str:
    """``row-reduce`` (trailing axes reduced), ``column-reduce`` (leading axes), else ``reduce``."""
    if domain is None or domain.rows == 1:
        return "reduce"
    reduced = [red for _, red in domain.signature]
    if reduced == sorted(reduced):
        return "row-reduce"
    if reduced == sorted(reduced, reverse=True):
        return "column-reduce"
    return "reduce"


def pattern_name(flow: Dataflow, nodes: list[Node], domain: Domain | None) -> str:
    """A short name for what the kernel computes: ``softmax-row``, ``matmul+bias+gelu``, ..."""
    ops = Counter(n.op for n in nodes)
    kinds = Counter(flow.kind(n) for n in nodes)
    ids = {id(n) for n in nodes}
    for node in nodes:
        if flow.kind(node) == "fused":
            return node.op
    if ops["scan"]:
        return "scan"
    if ops["scatter_add"]:
        return "scatter_add" + ("+prologue" if len(nodes) > 1 else "")
    if ops["matmul"]:
        parts = ["matmul"]
        if _has_bias(flow, nodes, ids):
            parts.append("bias")
        act = _activation(ops)
        if act:
            parts.append(act)
        if len(parts) == 1 and len(nodes) > 1:
            parts.append("elementwise")
        return "+".join(parts)
    if kinds["reduce"]:
        if ops["max"] and ops["exp"] and ops["sum"]:
            return "log-softmax-row" if ops["log"] else "softmax-row"
        if ops["sum"] >= 2 and ops["rsqrt"]:
            return "layernorm-row"
        reduce_ops = Counter(n.op for n in nodes if flow.kind(n) == "reduce")
        what = ", ".join(op if k == 1 else f"{op} x{k}" for op, k in sorted(reduce_ops.items()))
        return f"{'gather+' if ops['gather'] else ''}{_reduce_word(domain)}({what})"
    if ops["gather"]:
        return "gather" + ("+elementwise" if len(nodes) > 1 else "")
    if kinds["copy"]:
        return "copy" if len(nodes) == 1 else "elementwise+copy"
    return "elementwise"


def kernel_flops(flow: Dataflow, nodes: list[Node], body_flops: int = 0) -> int:
    total = 0
    for node in nodes:
        kind = flow.kind(node)
        if node.op == "scan":
            total += node.attrs["length"] * body_flops
        elif kind not in ("copy", "control", "movement"):
            total += REGISTRY[node.op].cost(node)[0]
    return total


def bytes_read(loads: list[Load]) -> int:
    """Each buffer once, counting only the elements its views touch."""
    touched: dict[int, int] = {}
    sizes: dict[int, int] = {}
    for load in loads:
        if load.inline:
            continue
        src = load.src
        sizes[id(src)] = nbytes(src)
        elems = load.view.distinct_elements() if load.view is not None else numel(src)
        touched[id(src)] = max(touched.get(id(src), 0), elems * src.dtype.itemsize)
    return sum(min(touched[k], sizes[k]) for k in touched)


def exec_nodes(flow: Dataflow, nodes: list[Node]) -> list[Node]:
    """The kernel's computations plus the views and index sources they read through, in order."""
    found: dict[int, Node] = {id(n): n for n in nodes}
    for node in nodes:
        for read in flow.reads[id(node)]:
            for mv, _ in read.chain:
                found.setdefault(id(mv), mv)
            if flow.is_inline(read.src):
                for n in flow.inline_closure(read.src):
                    found.setdefault(id(n), n)
    return sorted(found.values(), key=lambda n: flow.index[id(n)])
