"""The errors tensorc raises for user mistakes.

Every error that a user's program can cause is a :class:`TensorcError`; the
message names the op, the operands' types and the user's source line, e.g.
``ShapeError: matmul at model.py:12: f32[4,8] @ f32[7,16]: inner dims 8 != 7``.
"""

from __future__ import annotations


class TensorcError(Exception):
    """Base class of every error caused by a user's program or arguments."""


class ShapeError(TensorcError, ValueError):
    """Operand shapes do not fit the op (broadcasting, matmul dims, axes...)."""


class DTypeError(TensorcError, TypeError):
    """Operand dtypes do not fit the op (e.g. float indices, int sqrt grad)."""


class CompileError(TensorcError):
    """A graph could not be lowered or compiled for the chosen target."""


class TracerError(TensorcError):
    """A traced value was used where a concrete one is needed (or leaked)."""
