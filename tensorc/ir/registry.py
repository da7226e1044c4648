"""The op registry: every op is declared once, here, and every stage looks it up.

An :class:`OpDef` carries an op's type rule, its numpy reference semantics,
its cost and (filled in by :mod:`tensorc.autodiff`) its VJP rule. Adding an
op means adding one entry, not editing every stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import DTypeError, ShapeError
from .dtypes import DType
from .node import Attrs, Graph, Node


class RefContext(Protocol):
    """What a reference implementation may ask of the interpreter running it."""

    node: Node

    def run(self, graph: Graph, args: list[np.ndarray]) -> list[np.ndarray]: ...


# A type rule maps the operand types and attrs to the result type, or raises
# ShapeError/DTypeError with a short detail (the caller adds op, types, line).
TypeRule = Callable[[list[tuple[Any, Any]], Attrs], tuple[Any, Any]]
RefImpl = Callable[..., Any]


@dataclass
class OpDef:
    """One op's declaration: type rule, numpy reference, cost, and (set by autodiff) its VJP rule."""
    name: str
    kind: str  # "elementwise", "reduce", "movement", "matmul", "index", "source", "control"
    infer: TypeRule
    ref: RefImpl
    differentiable: bool = True
    symbol: str = ","  # joins operand types in error messages ("@" for matmul)
    flops_per_element: int = 1
    vjp: Callable[..., Any] | None = None  # set by tensorc.autodiff
    doc: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def cost(self, node: Node) -> tuple[int, int]:
        """(FLOPs, bytes moved) of one node if it ran as its own kernel."""
        return op_cost(self, node)


REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    """Add an op to the registry (each name once)."""
    if opdef.name in REGISTRY:
        raise ValueError(f"op {opdef.name!r} registered twice")
    REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    """The registry entry of ``name`` (KeyError naming it if unknown)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}") from None


def _nbytes(shape: Any, dtype: Any) -> int:
    if isinstance(dtype, tuple):
        return sum(_nbytes(s, d) for s, d in zip(shape, dtype))
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def op_cost(opdef: OpDef, node: Node) -> tuple[int, int]:
    """(FLOPs, bytes) of ``node`` run on its own; fused ops state their FLOPs in ``extra['flops']``."""
    out_bytes = _nbytes(node.shape, node.dtype)
    in_bytes = sum(_nbytes(i.shape, i.dtype) for i in node.inputs)
    if "flops" in opdef.extra:  # fused ops state their own FLOP count
        return int(opdef.extra["flops"](node)), in_bytes + out_bytes
    if opdef.kind == "matmul":
        a, b = node.inputs
        batch = int(np.prod(node.shape[:-2], dtype=np.int64))
        return 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1], in_bytes + out_bytes
    if opdef.kind == "source":
        return 0, out_bytes
    if opdef.kind == "movement":
        return 0, in_bytes + out_bytes
    if opdef.kind == "reduce":
        return int(np.prod(node.inputs[0].shape, dtype=np.int64)), in_bytes + out_bytes
    if opdef.kind == "control":
        return 0, in_bytes + out_bytes
    return opdef.flops_per_element * (node.size if not node.is_tuple else 0), in_bytes + out_bytes


def infer_type(op: str, in_types: list[tuple[Any, Any]], attrs: Attrs) -> tuple[Any, Any]:
    """Run ``op``'s type rule (raises ShapeError/DTypeError with a bare detail)."""
    return get_op(op).infer(in_types, attrs)


def check(cond: bool, detail: str, kind: type[Exception] = ShapeError) -> None:
    """Raise ``kind(detail)`` unless ``cond``: the idiom type rules use."""
    if not cond:
        raise kind(detail)


def check_dtype(cond: bool, detail: str) -> None:
    """Raise ``DTypeError(detail)`` unless ``cond``."""
    check(cond, detail, DTypeError)


def dtype_of(t: tuple[Any, Any]) -> DType:
    """The dtype part of a ``(shape, dtype)`` type."""
    return t[1]
