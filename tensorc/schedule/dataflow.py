"""What each computation reads, through which views: the scheduler's view of a Graph.

Movement ops are not computations: a computation reads the nearest
non-movement value (its *source*) through the chain of movement ops between
them, which :mod:`~tensorc.schedule.views` turns into one strided view. Where
that is impossible, the movement op whose result the chain cannot read is
*materialized*: it becomes a ``copy`` computation of its own, and the
scheduler reports it. A graph output that is a view (other than a free
reshape) is materialized the same way, since a caller receives contiguous
arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from ..ir.node import Graph, Node
from ..ir.registry import REGISTRY
from .domain import is_identity
from .views import MOVEMENT_OPS, View, compose

SOURCE_OPS = ("param", "const", "iota")  # read in place (buffers, index math), never kernels
INLINE_KINDS = ("elementwise",)  # ops that are index math when every input is (a causal mask from iotas)

Chain = tuple[tuple[Node, int], ...]


def numel(node: Node) -> int:
    """Elements of a (non-tuple) value; ``math.prod``, much cheaper than ``Node.size``."""
    return math.prod(node.shape)


def nbytes(node: Node) -> int:
    return 0 if node.is_tuple else math.prod(node.shape) * node.dtype.itemsize


def chain_key(chain: Chain) -> tuple[tuple[int, int], ...]:
    """``chain`` as (node id, operand) pairs: a cheap dict key (Nodes compare structurally)."""
    return tuple((id(n), k) for n, k in chain)


@dataclass(frozen=True)
class Read:
    """``reader`` reads ``src`` through ``chain`` (movement ops, innermost first) as its input ``operand``."""

    src: Node
    chain: Chain
    operand: int

    def chain_text(self) -> str:
        return " -> ".join(n.op for n, _ in self.chain)

    @cached_property
    def chain_ids(self) -> tuple[tuple[int, int], ...]:
        """:func:`chain_key` of ``chain``, computed once (kernel loads are keyed by it)."""
        return chain_key(self.chain)


@dataclass
class Materialization:
    """A view the scheduler had to turn into a copy (a buffer of its own)."""

    node: Node
    reason: str


@dataclass
class Dataflow:
    """The computations of ``graph``, what each reads, and who reads each value.

    The scheduler asks the same questions about a computation every time it checks a group
    that holds it (hundreds of times in a training step), so the answers that do not depend
    on the group are computed once here: ``kinds``, ``numels``, ``source_ids``, ``reader_ids``
    and ``anchor_ids`` of the computations, ``value_bytes`` of every value (keyed by
    ``id(node)``, like every map here), and, on first use, the view of each read
    (:meth:`read_view`).
    """

    graph: Graph
    order: list[Node]
    index: dict[int, int]
    compute: list[Node]
    reads: dict[int, list[Read]]
    consumers: dict[int, list[tuple[Node, Read]]]
    materializations: list[Materialization] = field(default_factory=list)
    copies: set[int] = field(default_factory=set)
    compute_ids: set[int] = field(default_factory=set)
    inline_ids: set[int] = field(default_factory=set)
    kinds: dict[int, str] = field(init=False)  # the scheduling kind (:meth:`kind`) of each computation
    numels: dict[int, int] = field(init=False)  # elements of each computation's value (tuples excluded)
    source_ids: dict[int, tuple[int, ...]] = field(init=False)  # the values each computation reads
    reader_ids: dict[int, frozenset[int]] = field(init=False)  # the computations that read each value
    anchor_ids: set[int] = field(init=False)  # reductions, matmuls and scatter_adds: what a kernel is built around
    value_bytes: dict[int, int] = field(init=False)  # :func:`nbytes` of every node of the graph
    _views: dict[tuple, tuple[View | None, Node | None]] = field(default_factory=dict)
    _read_views: dict[int, tuple[View | None, bool]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kinds = {id(n): self.kind(n) for n in self.compute}
        self.numels = {id(n): numel(n) for n in self.compute if not n.is_tuple}
        self.source_ids = {id(n): tuple(id(r.src) for r in self.reads[id(n)]) for n in self.compute}
        self.reader_ids = {src: frozenset(id(c) for c, _ in cs) for src, cs in self.consumers.items()}
        self.anchor_ids = {id(n) for n in self.compute if self.kinds[id(n)] in ("matmul", "reduce") or n.op == "scatter_add"}
        self.value_bytes = {id(n): nbytes(n) for n in self.order}

    def in_order(self, ids: Iterable[int]) -> list[Node]:
        """The nodes of these ids in topological order (sorted without a Python call per node)."""
        return list(map(self.order.__getitem__, sorted(map(self.index.__getitem__, ids))))

    def compose(self, base_shape: tuple[int, ...], chain: Chain, key: tuple | None = None) -> tuple[View | None, Node | None]:
        """:func:`~tensorc.schedule.views.compose`, remembered per chain; ``key`` is
        :func:`chain_key` of ``chain`` when the caller already has it."""
        return _remembered_compose(self._views, base_shape, chain, key)

    def read_view(self, read: Read) -> tuple[View | None, bool]:
        """The strided view ``read`` reads its source through (None when no single view can), and
        whether that view is the identity (the source in its own order, :func:`is_identity`).

        Remembered per Read object (by ``id``): the reads are the ones in :attr:`reads`, which
        live as long as the Dataflow."""
        hit = self._read_views.get(id(read))
        if hit is None:
            src = read.src
            view = self.compose(src.shape, read.chain)[0] if read.chain else View.contiguous(src.shape)
            hit = self._read_views[id(read)] = (view, view is not None and is_identity(view, numel(src)))
        return hit

    def is_compute(self, node: Node) -> bool:
        return id(node) in self.compute_ids

    def is_inline(self, node: Node) -> bool:
        """Immediates and index math (scalar constants, iota, elementwise ops of them): computed where
        read, never stored."""
        return id(node) in self.inline_ids

    def inline_closure(self, node: Node) -> list[Node]:
        """``node`` and the index math and views it is computed from (constants and inputs excluded)."""
        out: dict[int, Node] = {}
        stack = [node]
        while stack:
            n = stack.pop()
            if id(n) in out or n.op in ("const", "param"):
                continue
            out[id(n)] = n
            stack.extend(n.inputs)
        return list(out.values())

    def kind(self, node: Node) -> str:
        """The scheduling kind: the registry's, with ``copy`` for materialized views (``kinds``
        holds it for every computation)."""
        if id(node) in self.copies:
            return "copy"
        return _KINDS.get(node.op) or _KINDS.setdefault(node.op, REGISTRY[node.op].kind)


_KINDS: dict[str, str] = {}


def _remembered_compose(views: dict[tuple, tuple[View | None, Node | None]], base_shape: tuple[int, ...], chain: Chain,
                        key: tuple | None = None) -> tuple[View | None, Node | None]:
    key = (base_shape, chain_key(chain) if key is None else key)
    hit = views.get(key)
    if hit is None:
        hit = views[key] = compose(base_shape, chain)
    return hit


def describe_movement(node: Node) -> str:
    """``reshape to (2, 8, 32)``, ``permute (0, 2, 1, 3)``: a movement op in words."""
    a = node.attrs
    if node.op in ("reshape", "expand"):
        return f"{node.op} to {tuple(a['shape'])}"
    if node.op == "permute":
        return f"permute {tuple(a['dims'])}"
    if node.op == "concat":
        return f"concat on axis {a['axis']}"
    return f"{node.op} of {node.inputs[0].type_str}"


def _walk_back(start: Node, operand: int, chain: Chain, copies: set[int]) -> list[Read]:
    """Follow movement ops back from ``start`` to every source: a non-movement node or a materialized view."""
    reads: list[Read] = []
    stack: list[tuple[Node, Chain]] = [(start, chain)]
    while stack:
        node, ch = stack.pop()
        if node.op in MOVEMENT_OPS and id(node) not in copies:
            for j, inp in enumerate(node.inputs):
                stack.append((inp, ((node, j),) + ch))
        else:
            reads.append(Read(node, ch, operand))
    reads.reverse()
    return reads


def reads_of(node: Node, copies: set[int]) -> list[Read]:
    """Every (source, view chain) ``node`` reads; a materialized view reads through itself."""
    reads: list[Read] = []
    for k, inp in enumerate(node.inputs):
        if id(node) in copies:
            reads += _walk_back(inp, k, ((node, k),), copies)
        else:
            reads += _walk_back(inp, k, (), copies)
    return reads


def analyze(graph: Graph) -> Dataflow:
    """Find the computations of ``graph`` and materialize the views no strided view can express."""
    order = graph.nodes
    index = {id(n): i for i, n in enumerate(order)}
    copies: set[int] = set()
    materializations: list[Materialization] = []

    def materialize(node: Node, reason: str) -> None:
        copies.add(id(node))
        materializations.append(Materialization(node, reason))

    inline = _index_math(graph)
    views: dict[tuple, tuple[View | None, Node | None]] = {}  # compose() by chain: the Dataflow keeps it
    for out in graph.outputs:
        if out.op in MOVEMENT_OPS and id(out) not in copies:
            for read in _walk_back(out, 0, (), copies):
                view, _ = compose(read.src.shape, read.chain)
                if view is None or not view.is_contiguous or numel(read.src) != numel(out) or id(read.src) in inline:
                    materialize(out, "a graph output is returned as a contiguous array")
                    break
    while True:
        compute = [n for n in order if (n.op not in MOVEMENT_OPS and n.op not in SOURCE_OPS and id(n) not in inline)
                   or id(n) in copies or (id(n) in inline and n.op != "const" and any(o is n for o in graph.outputs))]
        reads: dict[int, list[Read]] = {}
        added = False
        for node in compute:
            reads[id(node)] = reads_of(node, copies)  # final once a pass materializes nothing
            for read in reads[id(node)]:
                if id(read.src) in inline or not read.chain:
                    continue
                view, failed = _remembered_compose(views, read.src.shape, read.chain, read.chain_ids)
                if view is None:
                    pos = next(i for i, (n, _) in enumerate(read.chain) if n is failed)
                    target = read.chain[pos - 1][0] if pos > 0 else None
                    if target is None or id(target) in copies:
                        continue  # a contiguous buffer always composes; nothing better to materialize
                    materialize(target, f"{describe_movement(failed)} cannot read the result of "
                                        f"{describe_movement(target)} as one strided view")
                    added = True
        if not added:
            break
    consumers: dict[int, list[tuple[Node, Read]]] = {}
    for node in compute:
        for read in reads[id(node)]:
            consumers.setdefault(id(read.src), []).append((node, read))
    compute_ids = {id(n) for n in compute}
    return Dataflow(graph, order, index, compute, reads, consumers, materializations, copies, compute_ids,
                    inline - compute_ids, _views=views)


def _index_math(graph: Graph) -> set[int]:
    """Ids of scalar constants (immediates), iotas, and elementwise ops whose inputs are all index
    math, constants or views of them."""
    inline: set[int] = set()
    for node in graph.nodes:
        if node.op == "iota" or (node.op == "const" and numel(node) <= 1):
            inline.add(id(node))
        elif REGISTRY[node.op].kind in INLINE_KINDS and node.inputs and all(_is_index(i, inline) for i in node.inputs):
            inline.add(id(node))
    return inline


def _is_index(node: Node, inline: set[int]) -> bool:
    while node.op in MOVEMENT_OPS and len(node.inputs) == 1:
        node = node.inputs[0]
    return id(node) in inline or node.op == "const"
