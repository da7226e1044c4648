"""The one node type of the IR, its attributes, source locations, and Graph.

A :class:`Node` is immutable and compares structurally: two nodes are equal
when op, attrs, shape, dtype and inputs are equal (the source location does
not take part). Its hash is computed once, at construction, from its inputs'
hashes, so hashing and CSE cost O(1) per node.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .dtypes import type_str

Shape = tuple[int, ...]


@dataclass(frozen=True)
class SourceLoc:
    """Where the user's code created a node (file, line, function)."""

    filename: str
    lineno: int
    function: str = ""

    def __str__(self) -> str:
        return f"{os.path.basename(self.filename)}:{self.lineno}"


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INTERNAL_PREFIXES = (_PACKAGE_DIR + os.sep, os.path.dirname(os.__file__) + os.sep + "contextlib")


def user_location() -> SourceLoc | None:
    """The innermost stack frame outside tensorc itself: the user's line."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_INTERNAL_PREFIXES):
            return SourceLoc(filename, frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back
    return None


class ConstValue:
    """A numpy array held as an attribute: hashable by content, read-only."""

    __slots__ = ("array", "_hash", "digest")

    def __init__(self, array: np.ndarray) -> None:
        arr = np.array(array, copy=True)
        arr.setflags(write=False)
        self.array = arr
        digest = hashlib.blake2b(arr.tobytes() + str((arr.shape, arr.dtype)).encode(), digest_size=8).hexdigest()
        self.digest = digest  # stable across processes, unlike hash()
        self._hash = hash((arr.shape, str(arr.dtype), digest))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, ConstValue) or self._hash != other._hash:
            return False
        a, b = self.array, other.array
        return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()

    def __repr__(self) -> str:
        a = self.array
        if a.ndim == 0:
            return repr(a.item())
        if a.size <= 4:
            return repr(a.tolist())
        return f"<{a.dtype}{list(a.shape)} #{self.digest[:4]}>"


class Attrs(Mapping[str, Any]):
    """An immutable, hashable mapping of an op's static attributes."""

    __slots__ = ("_items", "_dict", "_hash")

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        d = dict(items)
        self._items = tuple(sorted(d.items()))
        self._dict = d
        self._hash = hash(self._items)

    def __getitem__(self, key: str) -> Any:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Attrs):
            return self._hash == other._hash and self._items == other._items
        return NotImplemented

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k}={v!r}" for k, v in self._items) + "}"


class Node:
    """One operation in the graph: ``op(inputs; attrs) -> shape, dtype``.

    Multi-output ops (``scan``) have a tuple of shapes and a tuple of dtypes;
    ``tuple_get`` nodes pick their parts.
    """

    __slots__ = ("op", "inputs", "attrs", "shape", "dtype", "loc", "_hash")

    def __init__(
        self,
        op: str,
        inputs: tuple[Node, ...],
        attrs: Attrs,
        shape: Any,
        dtype: Any,
        loc: SourceLoc | None = None,
    ) -> None:
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "attrs", attrs if isinstance(attrs, Attrs) else Attrs(attrs))
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "loc", loc)
        h = hash((op, self.attrs, shape, dtype, tuple(i._hash for i in self.inputs)))
        object.__setattr__(self, "_hash", h)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Node is immutable")

    @property
    def is_tuple(self) -> bool:
        return isinstance(self.dtype, tuple)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def type_str(self) -> str:
        if self.is_tuple:
            return "(" + ", ".join(type_str(s, d) for s, d in zip(self.shape, self.dtype)) + ")"
        return type_str(self.shape, self.dtype)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Node) or self._hash != other._hash:
            return False
        # Iterative structural comparison: graphs can be deeper than the recursion limit.
        stack, seen = [(self, other)], set()
        while stack:
            a, b = stack.pop()
            if a is b or (id(a), id(b)) in seen:
                continue
            seen.add((id(a), id(b)))
            if (
                a._hash != b._hash
                or a.op != b.op
                or a.shape != b.shape
                or a.dtype != b.dtype
                or a.attrs != b.attrs
                or len(a.inputs) != len(b.inputs)
            ):
                return False
            stack.extend(zip(a.inputs, b.inputs))
        return True

    def replace(self, **changes: Any) -> Node:
        """A copy with some fields changed (the node itself never changes)."""
        fields = {k: getattr(self, k) for k in ("op", "inputs", "attrs", "shape", "dtype", "loc")}
        fields.update(changes)
        return Node(**fields)

    def __repr__(self) -> str:
        return f"Node({self.op}, {self.type_str}, attrs={self.attrs!r}, n_inputs={len(self.inputs)})"


def toposort(outputs: Iterable[Node]) -> list[Node]:
    """Every node reachable from ``outputs``, inputs before users (iterative DFS)."""
    order: list[Node] = []
    visited: set[int] = set()
    for root in outputs:
        if id(root) in visited:
            continue
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for inp in reversed(node.inputs):
                if id(inp) not in visited:
                    stack.append((inp, False))
    return order


class Graph:
    """An SSA DAG: ``param`` input nodes, output nodes, and what lies between.

    Graphs are immutable and compare structurally; ``str(graph)`` is the
    stable text form.
    """

    __slots__ = ("name", "inputs", "outputs", "_hash", "_nodes")

    def __init__(self, inputs: Iterable[Node], outputs: Iterable[Node], name: str = "main") -> None:
        self.name = name
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self._hash = hash((tuple(i._hash for i in self.inputs), tuple(o._hash for o in self.outputs)))
        self._nodes: list[Node] | None = None

    @property
    def nodes(self) -> list[Node]:
        """All nodes in a topological order (computed once)."""
        if self._nodes is None:
            self._nodes = toposort(list(self.inputs) + list(self.outputs))
        return self._nodes

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Graph) or self._hash != other._hash:
            return False
        return self.inputs == other.inputs and self.outputs == other.outputs

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.outputs)} outputs, {len(self.nodes)} nodes>"
