"""Graph -> Graph passes: simplification, CSE, DCE and pattern fusion."""

from .manager import PassManager, default_passes, optimize
from .rewrite import count_ops, rewrite_graph
from .simplify import cse, dce, simplify

__all__ = ["PassManager", "count_ops", "cse", "dce", "default_passes", "optimize", "rewrite_graph", "simplify"]
