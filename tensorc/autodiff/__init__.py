"""Reverse-mode autodiff as a graph transform: VJP rules, grad, vjp, gradcheck."""

from . import fused as _fused  # noqa: F401  (VJP rules of fused ops)
from . import rules as _rules  # noqa: F401  (fills the registry's VJP slots)
from .api import grad, value_and_grad, vjp
from .check import TOLERANCES, GradcheckError, gradcheck, gradgradcheck
from .transform import vjp_graph

__all__ = ["GradcheckError", "TOLERANCES", "grad", "gradcheck", "gradgradcheck", "value_and_grad", "vjp", "vjp_graph"]
