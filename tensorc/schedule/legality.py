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

The partitioner asks this for every candidate merge, most of them a large
kernel growing by a few computations. :func:`extend_group` answers those from
the large kernel's facts by checking only the new computations, when the
rules the old ones passed provably still hold; it gives the answer
:func:`check_group` would give, reasons included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..ir.node import Node
from .dataflow import Chain, Dataflow, Read
from .domain import Domain
from .views import View

INDEX_PRESERVING = ("elementwise", "copy")  # kinds whose inputs are read at the output's own index
PROLOGUE_MATMUL = "matmul operands are loaded, not computed in the kernel (no prologue fusion)"


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
    """What :func:`check_group` learned about a legal kernel (the sets hold node ids)."""

    domain: Domain
    post_anchor: set[int]
    materialized: set[int]
    loads: list[Load] | None = None  # listed by :func:`group_loads`


def materialized_ids(flow: Dataflow, members: Iterable[Node], ids: set[int], graph_outputs: set[int]) -> set[int]:
    """Members read by computations outside ``ids``, or returned by the graph."""
    readers, nobody = flow.reader_ids, frozenset()
    return {i for i in map(id, members) if i in graph_outputs or not readers.get(i, nobody) <= ids}


def _domain(flow: Dataflow, members: list[Node], anchors: list[Node], materialized: set[int]) -> Domain | str:
    """The iteration space of the kernel ``members``, given those of them that are anchors (a
    kernel with anchors has theirs, whatever else it holds)."""
    matmuls = [n for n in anchors if flow.kinds[id(n)] == "matmul"]
    reduces = [n for n in anchors if flow.kinds[id(n)] == "reduce"]
    scatters = [n for n in anchors if n.op == "scatter_add"]
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
    numels = flow.numels
    biggest = max(written, key=lambda n: numels[id(n)])
    for n in written:
        if numels[id(n)] != numels[id(biggest)]:
            return f"different iteration spaces {shape_text(biggest.shape)} vs {shape_text(n.shape)}"
    return Domain.elementwise(biggest.shape)


def _edge_reason(flow: Dataflow, domain: Domain, consumer: Node, read: Read, post: set[int], ids: set[int],
                 name: dict[int, str]) -> str | None:
    producer, kind = read.src, flow.kinds[id(consumer)]
    if kind == "matmul":
        return PROLOGUE_MATMUL
    if consumer.op == "scatter_add" and read.operand == 0:
        return "scatter_add copies its base from a buffer"
    if producer.op == "scatter_add":
        return "scatter_add's result is complete only when its kernel ends"
    if consumer.op == "gather" and read.operand == 0:
        return "gather reads its table at data-dependent indices: the table must be in a buffer"
    view, identity = flow.read_view(read)
    if producer.op == "gather" and not identity:
        return "a gather is not recomputed through a view"
    if id(producer) not in post:
        return None  # depends only on loads: recomputed where it is read
    p_level = domain.level(flow.numels[id(producer)])
    c_level = "elem" if kind == "reduce" or consumer.op == "scatter_add" else domain.level(flow.numels[id(consumer)])
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


def _load_chains(flow: Dataflow, members: list[Node], ids: set[int], roots: set[int]) -> dict[tuple, tuple[Node, Chain]]:
    """Every buffer read of the kernel, with the view chain of each place it is evaluated at:
    (source, chain) by (source id, :func:`~tensorc.schedule.dataflow.chain_key` of the chain),
    in the order :attr:`GroupFacts.loads` lists them.

    A member that is not a root is evaluated where its readers in the kernel need it, once per
    *context*: the chain of views between it and a root."""
    kinds = flow.kinds
    at_root: dict[tuple, Chain] = {(): ()}
    contexts: dict[int, dict[tuple, Chain]] = {}  # of the members that are not roots, by chain key
    loads: dict[tuple, tuple[Node, Chain]] = {}
    for node in reversed(members):
        ctxs = contexts.get(id(node), at_root)
        # Reads are evaluated in each context, unless the context is the root's (nothing to
        # compose) or the node does not read at its own index (a new chain starts there).
        composes = ctxs is not at_root and kinds[id(node)] in INDEX_PRESERVING
        for read in flow.reads[id(node)]:
            src = id(read.src)
            if composes:
                chains = [(read.chain_ids + key, read.chain + ctx) for key, ctx in ctxs.items()]
            else:
                chains = [(read.chain_ids, read.chain)]
            for key, chain in chains:
                if src not in ids:
                    loads.setdefault((src, key), (read.src, chain))
                elif src not in roots:
                    contexts.setdefault(src, {})[key] = chain
    return loads


def _reads_computed_operand(flow: Dataflow, anchors: list[Node], ids: set[int]) -> bool:
    """Does a matmul among ``anchors`` read a value computed in the kernel (``ids``)?"""
    return any(flow.kinds[id(n)] == "matmul" and not ids.isdisjoint(flow.source_ids[id(n)]) for n in anchors)


def _post_anchor(flow: Dataflow, members: list[Node], post: set[int]) -> set[int]:
    """Add to ``post`` the ``members`` (in topological order) that are anchors or read a value
    already in ``post``; returns ``post``."""
    anchor_ids, sources = flow.anchor_ids, flow.source_ids
    for i in map(id, members):
        if i in anchor_ids or not post.isdisjoint(sources[i]):
            post.add(i)
    return post


def _outside_domain(flow: Dataflow, domain: Domain, members: list[Node], post: set[int], materialized: set[int],
                    name: dict[int, str]) -> str | None:
    """Why the first of ``members`` that is computed once per element or row (post-anchor or
    stored) has no place in ``domain``, if one has none."""
    numels = flow.numels
    for n in members:
        if (id(n) in post or id(n) in materialized) and n.op != "scatter_add" and domain.level(numels[id(n)]) is None:
            return (f"different iteration spaces {domain.describe()} vs {shape_text(n.shape)} "
                    f"({name.get(id(n), n.op)})")
    return None


def _refused_read(flow: Dataflow, domain: Domain, consumers: list[Node], post: set[int], ids: set[int],
                  name: dict[int, str]) -> str | None:
    """Why the first read inside the kernel (``ids``) by one of ``consumers`` is refused, if one is."""
    # _edge_reason refuses a read of a value that is not post-anchor only if a matmul, scatter_add
    # or gather reads or is read: the other reads need no call.
    special = ("scatter_add", "gather")
    for consumer in consumers:
        for read in flow.reads[id(consumer)]:
            src = id(read.src)
            if src in ids and (src in post or read.src.op in special or consumer.op in special
                               or flow.kinds[id(consumer)] == "matmul"):
                reason = _edge_reason(flow, domain, consumer, read, post, ids, name)
                if reason is not None:
                    return reason
    return None


def _unviewable(flow: Dataflow, loads: dict[tuple, tuple[Node, Chain]], name: dict[int, str]) -> str | None:
    """Why the first load (of :func:`_load_chains`) that no strided view can read is refused, if
    there is one."""
    for (src, key), (node, chain) in loads.items():
        if src not in flow.inline_ids and flow.compose(node.shape, chain, key)[0] is None:
            return (f"reading {name.get(src, node.op)} through {Load(node, chain, None).ops_text()} "
                    "inside one kernel is not one strided view")
    return None


def check_group(flow: Dataflow, members: list[Node], graph_outputs: set[int], name: dict[int, str]) -> GroupFacts | str:
    """The facts of a legal kernel made of ``members`` (in topological order), or why it is not legal."""
    ids = set(map(id, members))
    anchors = flow.in_order(flow.anchor_ids & ids)
    if _reads_computed_operand(flow, anchors, ids):
        return PROLOGUE_MATMUL
    materialized = materialized_ids(flow, members, ids, graph_outputs)
    domain = _domain(flow, members, anchors, materialized)
    if isinstance(domain, str):
        return domain
    post = _post_anchor(flow, members, set())
    reason = (_outside_domain(flow, domain, members, post, materialized, name)
              or _refused_read(flow, domain, members, post, ids, name))
    if reason is not None:
        return reason
    return _unviewable(flow, _load_chains(flow, members, ids, post | materialized), name) or GroupFacts(
        domain, post, materialized)


def extend_group(flow: Dataflow, known: GroupFacts, extra: list[Node], members: list[Node], graph_outputs: set[int],
                 name: dict[int, str]) -> GroupFacts | str | None:
    """What :func:`check_group` answers for ``members``, the union of a legal kernel whose facts
    are ``known`` and the computations ``extra`` (both lists in topological order), found by
    checking only ``extra``; None when the known facts do not settle it (then ask
    :func:`check_group`).

    It requires that no known member reads one of ``extra`` (``extra`` reads the known kernel,
    or nothing of it). Then the known members' post-anchor values stay what they were, and
    every rule they passed still holds if

    - the iteration space keeps its loop nest (the same levels, the same row broadcasts);
    - each known member that was stored stays a root of the kernel (stored, or post-anchor):
      then ``extra`` reads it in place, and every known member is evaluated through the same
      views as before, so its loads stay one strided view each;
    - ``extra`` reads no known ``copy`` (a copy may store through a permutation only while
      nothing in its kernel reads it).

    So the first rule the union breaks, if any, is broken by ``extra``: only ``extra``'s
    computations and reads are checked, in :func:`check_group`'s order, which gives the same
    reason. This keeps a large kernel cheap to grow.
    """
    ids = set(map(id, members))
    extra_ids = set(map(id, extra))
    extra_anchors = flow.in_order(flow.anchor_ids & extra_ids)
    if _reads_computed_operand(flow, extra_anchors, ids):  # the known matmuls read no computed value
        return PROLOGUE_MATMUL
    known_read = {src for n in extra for src in flow.source_ids[id(n)] if src in ids} - extra_ids
    if any(flow.kinds[i] == "copy" for i in known_read):
        return None
    # A known member that was not stored is read only by known members: it still is not. One
    # that was (every one ``extra`` reads) is not any more if ``extra`` holds its other readers.
    readers, nobody = flow.reader_ids, frozenset()
    not_stored = {i for i in known_read if i not in graph_outputs and readers.get(i, nobody) <= ids}
    if not not_stored <= known.post_anchor:
        return None
    materialized = (known.materialized - not_stored) | materialized_ids(flow, extra, ids, graph_outputs)
    if known.post_anchor and not extra_anchors:
        domain: Domain | str = known.domain  # the same anchors (the post-anchor values include them)
    else:
        domain = _domain(flow, members, flow.in_order(flow.anchor_ids & ids), materialized)
    if isinstance(domain, str):
        return domain
    if domain.signature != known.domain.signature:
        return None
    post = _post_anchor(flow, extra, set(known.post_anchor))
    reason = (_outside_domain(flow, domain, extra, post, materialized, name)
              or _refused_read(flow, domain, extra, post, ids, name)
              or _unviewable(flow, _load_chains(flow, extra, ids, post | materialized), name))
    return reason or GroupFacts(domain, post, materialized)


def group_loads(flow: Dataflow, members: list[Node], facts: GroupFacts) -> list[Load]:
    """The loads of the legal kernel ``members`` (``facts.loads``, listed on first use: the
    candidate kernels that are checked and then grown further never need them)."""
    if facts.loads is None:
        chains = _load_chains(flow, members, set(map(id, members)), facts.post_anchor | facts.materialized)
        facts.loads = []
        for (src, key), (node, chain) in chains.items():
            inline = src in flow.inline_ids
            facts.loads.append(Load(node, chain, None if inline else flow.compose(node.shape, chain, key)[0], inline))
    return facts.loads
