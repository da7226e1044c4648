"""When may a set of computations run as one kernel? (Inductor's ``can_fuse``.)

:func:`check_group` answers for a candidate kernel, given as the set of its
computations, and says *why not* in words when it may not. The rules:

- a kernel has one iteration space (:class:`~tensorc.schedule.domain.Domain`):
  its reductions all reduce the same rows; a matmul kernel iterates the
  matmul's output; an elementwise kernel writes values of one size;
- at most one matmul, and only an elementwise epilogue after it; its operands
  are loaded, never computed in the kernel (no prologue);
- ``scatter_add`` takes only an elementwise prologue on its updates;
- ``gather`` reads its table from a buffer (its indices are data);
- a value that depends on a reduction or matmul of the kernel (a *post-anchor*
  value) is computed once per element or once per row, so another node of
  the kernel may read it only in the same order, or, for a row value, through
  a broadcast back over that same row; values that depend only on loads are
  recomputed wherever they are read;
- every load, through every view it is read by inside the kernel, must stay
  one strided view.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..ir.node import Node
from .dataflow import Chain, Dataflow, Read, numel
from .domain import Domain, is_identity
from .views import View

INDEX_PRESERVING = ("elementwise", "copy")  # kinds whose inputs are read at the output's own index


def shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


@dataclass
class Load:
    """A kernel input: buffer (or index source) ``src`` read through ``chain`` as ``view``."""

    src: Node
    chain: Chain
    view: View | None
    inline: bool = False  # index math (iota, masks of iotas): computed where read, no buffer

    def ops_text(self) -> str:
        return " -> ".join(n.op for n, _ in self.chain) or "direct"


@dataclass
class GroupFacts:
    """What :func:`check_group` learned about a legal kernel."""

    domain: Domain
    post_anchor: set[int]
    materialized: set[int]
    loads: list[Load]


def materialized_ids(flow: Dataflow, members: Iterable[Node], ids: set[int], graph_outputs: set[int]) -> set[int]:
    """Members read by computations outside ``ids``, or returned by the graph."""
    return {id(n) for n in members
            if id(n) in graph_outputs or any(id(c) not in ids for c, _ in flow.consumers.get(id(n), ()))}


def _domain(flow: Dataflow, members: list[Node], materialized: set[int]) -> Domain | str:
    kinds = [flow.kind(n) for n in members]
    matmuls = [n for n, k in zip(members, kinds) if k == "matmul"]
    reduces = [n for n, k in zip(members, kinds) if k == "reduce"]
    scatters = [n for n in members if n.op == "scatter_add"]
    if len(matmuls) > 1:
        return "matmul epilogue must be elementwise (a kernel holds one matmul)"
    if matmuls and reduces:
        return f"matmul epilogue must be elementwise ({reduces[0].op} is a reduction)"
    if scatters and (len(scatters) > 1 or matmuls or reduces):
        return "scatter_add takes only an elementwise prologue"
    if matmuls:
        return Domain.elementwise(matmuls[0].shape)
    if reduces:
        domains = [Domain.of_reduce(r.inputs[0].shape, r.attrs["axes"]) for r in reduces]
        for d in domains[1:]:
            if d.signature != domains[0].signature:
                return f"different iteration spaces {domains[0].describe()} vs {d.describe()}"
        return domains[0]
    if scatters:
        return Domain.elementwise(scatters[0].inputs[2].shape)
    written = [n for n in members if id(n) in materialized] or members
    biggest = max(written, key=numel)
    for n in written:
        if numel(n) != numel(biggest):
            return f"different iteration spaces {shape_text(biggest.shape)} vs {shape_text(n.shape)}"
    return Domain.elementwise(biggest.shape)


def _edge_reason(flow: Dataflow, domain: Domain, consumer: Node, read: Read, post: set[int], ids: set[int],
                 name: dict[int, str]) -> str | None:
    producer, kind = read.src, flow.kind(consumer)
    if kind == "matmul":
        return "matmul operands are loaded, not computed in the kernel (no prologue fusion)"
    if consumer.op == "scatter_add" and read.operand == 0:
        return "scatter_add copies its base from a buffer"
    if producer.op == "scatter_add":
        return "scatter_add's result is complete only when its kernel ends"
    if consumer.op == "gather" and read.operand == 0:
        return "gather reads its table at data-dependent indices: the table must be in a buffer"
    view = flow.compose(producer.shape, read.chain)[0] if read.chain else View.contiguous(producer.shape)
    identity = view is not None and is_identity(view, numel(producer))
    if producer.op == "gather" and not identity:
        return "a gather is not recomputed through a view"
    if id(producer) not in post:
        return None  # depends only on loads: recomputed where it is read
    p_level = domain.level(numel(producer))
    c_level = "elem" if kind == "reduce" or consumer.op == "scatter_add" else domain.level(numel(consumer))
    if kind == "reduce" and p_level == "elem" and identity:
        return None
    if kind != "reduce" and p_level == c_level and identity:
        return None
    if kind != "reduce" and p_level == "row" and c_level == "elem" and view is not None and domain.is_row_broadcast(view):
        return None
    if (kind == "copy" and p_level == c_level == "elem" and view is not None and view.is_bijection
            and not any(id(c) in ids for c, _ in flow.consumers.get(id(consumer), ()))):
        return None  # the kernel stores the value through the permutation
    how = f"through {read.chain_text()}" if read.chain else "at another size"
    return (f"{name.get(id(producer), producer.op)} is computed once per {'row' if p_level == 'row' else 'element'} "
            f"of {domain.describe()} but read {how}")


def _loads(flow: Dataflow, members: list[Node], ids: set[int], roots: set[int]) -> list[Load]:
    """Every buffer read of the kernel, with the view chain of each place it is evaluated at."""
    contexts: dict[int, dict[tuple, Chain]] = {id(n): {(): ()} for n in members if id(n) in roots}
    loads: dict[tuple, Load] = {}
    for node in reversed(members):
        ctxs = contexts.get(id(node), {(): ()})
        composes = flow.kind(node) in INDEX_PRESERVING
        for read in flow.reads[id(node)]:
            for ctx in ctxs.values():
                chain = read.chain + ctx if composes else read.chain
                if id(read.src) in ids:
                    if id(read.src) not in roots:
                        contexts.setdefault(id(read.src), {})[tuple((id(n), k) for n, k in chain)] = chain
                    continue
                key = (id(read.src),) + tuple((id(n), k) for n, k in chain)
                if key not in loads:
                    inline = flow.is_inline(read.src)
                    view = None if inline else flow.compose(read.src.shape, chain)[0]
                    loads[key] = Load(read.src, chain, view, inline)
    return list(loads.values())


def check_group(flow: Dataflow, members: list[Node], graph_outputs: set[int], name: dict[int, str]) -> GroupFacts | str:
    """The facts of a legal kernel made of ``members`` (in topological order), or why it is not legal."""
    ids = {id(n) for n in members}
    for n in members:
        if flow.kind(n) == "matmul" and any(id(r.src) in ids for r in flow.reads[id(n)]):
            return "matmul operands are loaded, not computed in the kernel (no prologue fusion)"
    materialized = materialized_ids(flow, members, ids, graph_outputs)
    domain = _domain(flow, members, materialized)
    if isinstance(domain, str):
        return domain
    post: set[int] = set()
    for n in members:
        kind = flow.kind(n)
        if kind in ("matmul", "reduce") or n.op == "scatter_add" or any(
                id(r.src) in post for r in flow.reads[id(n)] if id(r.src) in ids):
            post.add(id(n))
    for n in members:
        if n.op != "scatter_add" and (id(n) in post or id(n) in materialized) and domain.level(numel(n)) is None:
            return (f"different iteration spaces {domain.describe()} vs {shape_text(n.shape)} "
                    f"({name.get(id(n), n.op)})")
    for consumer in members:
        for read in flow.reads[id(consumer)]:
            if id(read.src) in ids:
                reason = _edge_reason(flow, domain, consumer, read, post, ids, name)
                if reason is not None:
                    return reason
    loads = _loads(flow, members, ids, post | materialized)
    for load in loads:
        if load.view is None and not load.inline:
            return (f"reading {name.get(id(load.src), load.src.op)} through {load.ops_text()} "
                    "inside one kernel is not one strided view")
    return GroupFacts(domain, post, materialized, loads)
