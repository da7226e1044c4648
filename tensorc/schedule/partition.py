"""Greedy fusion: merge computations into kernels, best merge first, until none is legal.

Every computation starts as its own group. Each round lists the candidate
merges: a producer group with a consumer group (*vertical*, scored by the
bytes the merge keeps out of memory) and two groups whose reductions run over
the same rows (*horizontal*, scored by the bytes they both read). Candidates
are tried best first; a merge happens when
:func:`~tensorc.schedule.legality.check_group` accepts the union and the
group graph (a networkx DiGraph) stays acyclic: merging ``a`` and ``b`` makes
a cycle when a path ``a -> x -> ... -> b`` passes through a third group
``x``. That reachability check is bounded by a topological numbering of the
groups that each merge repairs locally (Pearce and Kelly's dynamic
topological order), so it visits only the groups between ``a`` and ``b``.
Rounds repeat until one merges nothing; the reasons of that last round are
the refused fusions the report prints.

A merged group keeps the legality facts found when its merge was checked, so
that growing it by a smaller group checks only the smaller one
(:func:`~tensorc.schedule.legality.extend_group`), and answers are remembered
per pair of group versions, since most candidates of a round are unchanged
since the last one.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from ..ir.node import Node
from .dataflow import Dataflow
from .domain import Domain
from .legality import GroupFacts, check_group, extend_group, group_loads

OPAQUE_KINDS = ("fused", "control")


def opaque_reason(flow: Dataflow, members: list[Node]) -> str | None:
    """Why computations ``members`` must be a kernel of their own, if they must."""
    for node in members:
        kind = flow.kinds[id(node)]
        if kind == "fused":
            return f"fused op {node.op} is opaque"
        if node.op == "scan":
            return "scan is its own kernel"
        if kind not in ("elementwise", "reduce", "movement", "matmul", "index", "source", "copy", "control"):
            return f"{node.op} (kind {kind}) is scheduled alone"
    return None


@dataclass
class Refusal:
    """A candidate merge of groups ``first`` and ``second`` that was not made, and why."""

    first: int
    second: int
    reason: str
    vertical: bool
    via: int | None = None  # the third group a cycle would pass through


class Partitioner:
    """Groups of computations (keyed by the topological index of their first node) and their DAG."""

    def __init__(self, flow: Dataflow, graph_outputs: set[int], names: dict[int, str]) -> None:
        self.flow = flow
        self.graph_outputs = graph_outputs
        self.names = names
        self.group_of: dict[int, int] = {}
        self.members: dict[int, list[Node]] = {}
        # The group DAG as adjacency sets (cheaper than networkx views in the hot loop);
        # ``dag`` is the networkx DiGraph of the final groups.
        self.succ: dict[int, set[int]] = {}
        self.pred: dict[int, set[int]] = {}
        for node in flow.compute:
            if node.op == "tuple_get" and id(node.inputs[0]) in self.group_of:
                gid = self.group_of[id(node.inputs[0])]
                self.members[gid].append(node)
            else:
                gid = flow.index[id(node)]
                self.members[gid] = [node]
                self.succ[gid], self.pred[gid] = set(), set()
            self.group_of[id(node)] = gid
        for node in flow.compute:
            for read in flow.reads[id(node)]:
                src = self.group_of.get(id(read.src))
                dst = self.group_of[id(node)]
                if src is not None and src != dst:
                    self.succ[src].add(dst)
                    self.pred[dst].add(src)
        # Found once: an opaque group never merges, and a merge of two other groups is not opaque.
        self._opaque = {gid: opaque_reason(flow, members) for gid, members in self.members.items()}
        self.dag = nx.DiGraph()
        self.facts: dict[int, GroupFacts] = {}
        self.pos = {gid: gid for gid in self.members}  # a topological numbering (node indices are one)
        self.version = {gid: 0 for gid in self.members}  # bumped when a group grows
        # check_merge's answers by (a, version of a, b, version of b); and, for each group made
        # by a merge, (its version, its facts), valid until it grows again.
        self._checked: dict[tuple[int, int, int, int], GroupFacts | str] = {}
        self._merged_facts: dict[int, tuple[int, GroupFacts]] = {}
        self._renumber: dict[tuple[int, int], tuple[list[int], list[int]]] = {}

    # ------------------------------------------------------------------ queries

    def opaque_reason(self, gid: int) -> str | None:
        """Why group ``gid`` must be a kernel of its own, if it must."""
        return self._opaque[gid]

    def _reach(self, start: int, skip: int, step: dict[int, set[int]], lo: int, hi: int,
               stop: set[int] = frozenset()) -> tuple[set[int], int | None]:
        """Groups reachable from ``start``'s neighbours along ``step`` (``skip`` excluded) numbered
        strictly between ``lo`` and ``hi``; stops early at a group in ``stop`` and returns it too."""
        pos = self.pos
        seen: set[int] = set()
        stack = [g for g in step[start] if g != skip and lo < pos[g] < hi]
        while stack:
            g = stack.pop()
            if g in seen:
                continue
            if g in stop:
                return seen, g
            seen.add(g)
            stack.extend(h for h in step[g] if h not in seen and lo < pos[h] < hi)
        return seen, None

    def cycle_through(self, a: int, b: int) -> int | None:
        """A third group on a path between ``a`` and ``b``, if merging them would make a cycle.

        With ``pos[a] < pos[b]``, a path from ``a`` to ``b`` only visits groups numbered
        between them: the groups ``a`` reaches there must not reach ``b``. Those two sets are
        remembered, since :meth:`merge` renumbers exactly them.
        """
        if self.pos[a] > self.pos[b]:
            a, b = b, a
        lo, hi = self.pos[a], self.pos[b]
        after_a, _ = self._reach(a, b, self.succ, lo, hi)
        before_b: set[int] = set()
        if after_a:
            before_b, hit = self._reach(b, a, self.pred, lo, hi, after_a)
            if hit is not None:
                return hit
        self._renumber[(a, b)] = (sorted(before_b, key=self.pos.__getitem__), sorted(after_a, key=self.pos.__getitem__))
        return None

    def why_no_fuse(self, a: int, b: int) -> tuple[str, int | None] | None:
        """None when groups ``a`` and ``b`` may merge, else (the reason they may not, the
        group a cycle would pass through, if that is the reason)."""
        for gid in (a, b):
            reason = self.opaque_reason(gid)
            if reason is not None:
                return reason, None
        key = (a, self.version[a], b, self.version[b])
        facts = self._checked.get(key)
        if facts is None:
            facts = self._checked[key] = self.check_merge(a, b)
        if isinstance(facts, str):
            return facts, None
        via = self.cycle_through(a, b)
        if via is not None:
            return "would create a cycle through kernel {via}", via
        return None

    def check_merge(self, a: int, b: int) -> GroupFacts | str:
        """:func:`~tensorc.schedule.legality.check_group` of the union of groups ``a`` and ``b``.

        When the larger of them is a merged group that the other does not feed, its facts (kept
        from its own merge) let :func:`~tensorc.schedule.legality.extend_group` check only the
        smaller one: that keeps growing a large kernel from costing its size at every merge."""
        merged = self.flow.in_order(map(id, self.members[a] + self.members[b]))
        known, extra = (a, b) if len(self.members[a]) >= len(self.members[b]) else (b, a)
        cached = self._merged_facts.get(known)
        if cached is not None and cached[0] == self.version[known] and extra not in self.pred[known]:
            facts = extend_group(self.flow, cached[1], self.members[extra], merged, self.graph_outputs, self.names)
            if facts is not None:
                return facts
        return check_group(self.flow, merged, self.graph_outputs, self.names)

    def reduce_signature(self, gid: int) -> tuple | None:
        for node in self.members[gid]:
            if self.flow.kinds[id(node)] == "reduce":
                return Domain.of_reduce(node.inputs[0].shape, node.attrs["axes"]).signature
        return None

    # ------------------------------------------------------------------ candidates

    def _anchored(self, gid: int) -> bool:
        return not self.flow.anchor_ids.isdisjoint(map(id, self.members[gid]))

    def _tier(self, producer: int, consumer: int, readers: set[int]) -> int:
        """Which vertical merges go first. 0: the consumer is the producer's only reader (fusing
        stores nothing new); 1: an elementwise epilogue joins the reduction or matmul it reads
        (its other readers already wait for that kernel, so no new dependency appears); 2: the rest,
        such as a prologue that other kernels also read, which would make them wait for the consumer."""
        if readers == {consumer}:
            return 0
        if self._anchored(producer) and not self._anchored(consumer):
            return 1
        return 2

    def candidates(self) -> list[tuple[tuple, int, int, bool]]:
        """(sort key, a, b, vertical) for every merge worth trying, best first."""
        group_of, value_bytes = self.group_of, self.flow.value_bytes
        saved: dict[tuple[int, int], dict[int, int]] = {}
        readers: dict[int, set[int]] = {}
        for node in self.flow.compute:
            dst = group_of[id(node)]
            for value in self.flow.source_ids[id(node)]:
                readers.setdefault(value, set()).add(dst)
                src = group_of.get(value)
                if src is not None and src != dst:
                    saved.setdefault((src, dst), {})[value] = value_bytes[value]
        readers_of_group: dict[int, set[int]] = {}
        for (a, b) in saved:
            readers_of_group.setdefault(a, set()).add(b)
        out = [((self._tier(a, b, readers_of_group[a]), -sum(v.values()), a, b), a, b, True) for (a, b), v in saved.items()]
        # Horizontal (tier 3): reductions over the same rows, in topological order, scored by what they both read.
        by_sig: dict[tuple, list[int]] = {}
        for gid in sorted(self.members):
            sig = self.reduce_signature(gid)
            if sig is not None:
                by_sig.setdefault(sig, []).append(gid)
        reducing = {gid for same in by_sig.values() for gid in same}
        shared: dict[tuple[int, int], int] = {}  # only pairs of reductions are asked for
        for value, groups in readers.items():
            groups = groups & reducing
            for a in groups:
                for b in groups:
                    if a < b:
                        shared[(a, b)] = shared.get((a, b), 0) + value_bytes[value]
        for same in by_sig.values():
            for a, b in zip(same, same[1:]):
                if (a, b) not in saved and (b, a) not in saved:
                    out.append(((3, -shared.get((a, b), 0), a, b), a, b, False))
        out.sort(key=lambda c: c[0])
        return out

    # ------------------------------------------------------------------ merging

    def merge(self, a: int, b: int) -> int:
        """Contract groups ``a`` and ``b`` (checked by :meth:`why_no_fuse`) and repair the numbering."""
        first, second = (a, b) if self.pos[a] < self.pos[b] else (b, a)
        if (first, second) not in self._renumber:
            assert self.cycle_through(first, second) is None
        before, after = self._renumber.pop((first, second))
        self._renumber.clear()
        keep, gone = min(a, b), max(a, b)
        facts = self._checked.get((a, self.version[a], b, self.version[b]))
        if not after:  # nothing between depends on the first: the merged group can sit where the second was
            self.pos[keep] = self.pos[second]
        else:  # groups that feed the second move before the merged group, those fed by the first after it
            slots = sorted(self.pos[g] for g in before + [first, second] + after)
            for g, slot in zip(before + [keep] + after, slots):
                self.pos[g] = slot
        del self.pos[gone]
        del self.version[gone]
        self.version[keep] += 1
        for node in self.members[gone]:
            self.group_of[id(node)] = keep
        self.members[keep] = self.flow.in_order(map(id, self.members[keep] + self.members.pop(gone)))
        for p in self.pred.pop(gone):
            self.succ[p].discard(gone)
            if p != keep:
                self.succ[p].add(keep)
                self.pred[keep].add(p)
        for s in self.succ.pop(gone):
            self.pred[s].discard(gone)
            if s != keep:
                self.pred[s].add(keep)
                self.succ[keep].add(s)
        self.succ[keep].discard(gone)
        self.pred[keep].discard(gone)
        if isinstance(facts, GroupFacts):  # the merged group's facts, reused at the end
            self._merged_facts[keep] = (self.version[keep], facts)
        return keep

    def run(self) -> list[Refusal]:
        """Merge to a fixed point; return the refusals of the final round."""
        while True:
            refusals: list[Refusal] = []
            merged_any = False
            for _, a, b, vertical in self.candidates():
                a, b = self.group_of[id(self.members_first(a))], self.group_of[id(self.members_first(b))]
                if a == b:
                    continue
                why = self.why_no_fuse(a, b)
                if why is None:
                    self.merge(a, b)
                    merged_any = True
                else:
                    refusals.append(Refusal(a, b, why[0], vertical, why[1]))
            if not merged_any:
                break
        self.dag = nx.DiGraph()
        self.dag.add_nodes_from(self.members)
        self.dag.add_edges_from((a, b) for a, succ in self.succ.items() for b in succ)
        assert nx.is_directed_acyclic_graph(self.dag), "scheduler bug: the kernel graph has a cycle"
        assert all(self.pos[a] < self.pos[b] for a, b in self.dag.edges), "scheduler bug: stale topological numbering"
        for gid, members in self.members.items():
            if self.opaque_reason(gid) is not None:
                continue
            cached = self._merged_facts.get(gid)
            if cached is not None and cached[0] == self.version[gid]:
                facts = cached[1]
            else:
                facts = check_group(self.flow, members, self.graph_outputs, self.names)
                if isinstance(facts, str):
                    raise AssertionError(f"scheduler bug: group {gid} is not a legal kernel: {facts}")
            group_loads(self.flow, members, facts)
            self.facts[gid] = facts
        return refusals

    def members_first(self, gid: int) -> Node:
        """The first node a group id was created for (group ids are stable node indices)."""
        return self.flow.order[gid]

    def launch_order(self) -> list[int]:
        """Group ids in a topological order of the group DAG, earliest node first."""
        return list(nx.lexicographical_topological_sort(self.dag, key=lambda g: g))
