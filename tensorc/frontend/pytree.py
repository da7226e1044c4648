"""Pytrees: nested dicts, lists, tuples and namedtuples of leaves.

``flatten`` gives the leaves in a fixed order (dict keys sorted) and a
hashable ``TreeDef``; ``unflatten`` builds the same structure back. Classes
can join with :func:`register_pytree_node`.

>>> leaves, tree = flatten({"b": 1, "a": (2, 3)})
>>> leaves
[2, 3, 1]
>>> unflatten(tree, [20, 30, 10])
{'a': (20, 30), 'b': 10}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

_CUSTOM: dict[type, tuple[Callable[[Any], tuple[list[Any], Any]], Callable[[Any, list[Any]], Any]]] = {}


def register_pytree_node(cls: type, flatten_fn: Callable[[Any], tuple[list[Any], Any]],
                         unflatten_fn: Callable[[Any, list[Any]], Any]) -> None:
    """Let ``cls`` be a container: ``flatten_fn(obj) -> (children, aux)``, ``unflatten_fn(aux, children)``."""
    _CUSTOM[cls] = (flatten_fn, unflatten_fn)


@dataclass(frozen=True)
class TreeDef:
    """The structure of a pytree: a container kind, static data and children."""

    kind: str  # "leaf", "dict", "list", "tuple", "namedtuple", "none", "custom"
    aux: Any = None
    children: tuple[TreeDef, ...] = ()

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)

    def __str__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        inner = [str(c) for c in self.children]
        if self.kind == "dict":
            return "{" + ", ".join(f"{k!r}: {v}" for k, v in zip(self.aux, inner)) + "}"
        if self.kind == "list":
            return "[" + ", ".join(inner) + "]"
        if self.kind == "tuple":
            return "(" + ", ".join(inner) + ("," if len(inner) == 1 else "") + ")"
        name = getattr(self.aux[0], "__name__", "?") if isinstance(self.aux, tuple) else "?"
        return f"{name}(" + ", ".join(inner) + ")"


LEAF = TreeDef("leaf")


def _dict_keys(d: dict) -> list[Any]:
    keys = list(d.keys())
    try:
        return sorted(keys)
    except TypeError:
        return keys


def _children(node: Any) -> tuple[str, Any, list[Any], list[str]] | None:
    """(kind, aux, children, child path labels) for a container; None for a leaf."""
    if node is None:
        return "none", None, [], []
    t = type(node)
    if t in _CUSTOM:
        children, aux = _CUSTOM[t][0](node)
        return "custom", (t, aux), list(children), [f"[{i}]" for i in range(len(children))]
    if isinstance(node, dict):
        keys = _dict_keys(node)
        return "dict", tuple(keys), [node[k] for k in keys], [f"[{k!r}]" for k in keys]
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return "namedtuple", (t, None), list(node), [f".{f}" for f in node._fields]
    if isinstance(node, tuple):
        return "tuple", None, list(node), [f"[{i}]" for i in range(len(node))]
    if isinstance(node, list):
        return "list", None, list(node), [f"[{i}]" for i in range(len(node))]
    return None


def flatten_with_path(tree: Any, prefix: str = "") -> tuple[list[tuple[str, Any]], TreeDef]:
    """Leaves with their paths (``"['w'][0]"``) and the TreeDef."""
    out: list[tuple[str, Any]] = []

    def rec(node: Any, path: str) -> TreeDef:
        spec = _children(node)
        if spec is None:
            out.append((path, node))
            return LEAF
        kind, aux, children, labels = spec
        return TreeDef(kind, aux, tuple(rec(c, path + lab) for c, lab in zip(children, labels)))

    treedef = rec(tree, prefix)
    return out, treedef


def flatten(tree: Any) -> tuple[list[Any], TreeDef]:
    """Leaves in order and the TreeDef."""
    leaves, treedef = flatten_with_path(tree)
    return [leaf for _, leaf in leaves], treedef


def unflatten(treedef: TreeDef, leaves: Iterable[Any]) -> Any:
    """Build the structure of ``treedef`` with ``leaves`` in flatten's order."""
    it = iter(leaves)

    def rec(td: TreeDef) -> Any:
        if td.kind == "leaf":
            return next(it)
        if td.kind == "none":
            return None
        kids = [rec(c) for c in td.children]
        if td.kind == "dict":
            return dict(zip(td.aux, kids))
        if td.kind == "list":
            return kids
        if td.kind == "tuple":
            return tuple(kids)
        if td.kind == "namedtuple":
            return td.aux[0](*kids)
        cls, aux = td.aux
        return _CUSTOM[cls][1](aux, kids)

    result = rec(treedef)
    rest = list(it)
    if rest:
        raise ValueError(f"unflatten: {len(rest)} leaves left over for structure {treedef}")
    return result


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply ``fn`` to each leaf (and the matching leaves of ``rest``)."""
    leaves, treedef = flatten(tree)
    others = [flatten(r) for r in rest]
    for i, (_, td) in enumerate(others):
        if td != treedef:
            raise ValueError(f"tree_map: tree {i + 1} has structure {td}, expected {treedef}")
    return unflatten(treedef, [fn(*xs) for xs in zip(leaves, *[o[0] for o in others])])
