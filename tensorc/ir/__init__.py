"""The IR: one immutable Node type, Graph, dtypes, the op registry, printer, verifier."""

from . import fused as _fused  # noqa: F401  (registers the fused ops)
from . import ops as _ops  # noqa: F401  (registers the primitive ops)
from .dtypes import DType, promote
from .node import Attrs, ConstValue, Graph, Node, SourceLoc, toposort
from .registry import REGISTRY, OpDef, get_op

__all__ = ["Attrs", "ConstValue", "DType", "Graph", "Node", "OpDef", "REGISTRY", "SourceLoc", "get_op", "promote", "toposort"]
