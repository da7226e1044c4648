"""Iteration spaces: which loop nest a kernel runs, and where each value lives in it.

A kernel's :class:`Domain` is a full index space split into *rows* (the axes
kept) and the *reduced* axes of its reductions. A value of the kernel is
computed either once per element of the full space (level ``"elem"``) or once
per row (level ``"row"``). Two spaces are equal when, after dropping size-1
axes and merging neighbouring axes of the same kind, the lists of
(size, reduced?) agree: ``sum`` over axis 2 of ``[2, 4, 16]`` runs the same
loop nest as ``sum`` over axis 1 of ``[8, 16]``.

>>> d = Domain.of_reduce((8, 16), (1,))
>>> d.rows, d.full, d.describe()
(8, 128, '(8, 16) reducing axis 1')
>>> d.level(128), d.level(8), d.level(3)
('elem', 'row', None)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

from .views import View, contiguous_strides

Signature = tuple[tuple[int, bool], ...]


def merged_signature(shape: Sequence[int], reduced: Sequence[int]) -> Signature:
    """(size, reduced?) per axis, size-1 axes dropped, neighbours of one kind merged."""
    red = set(reduced)
    sig: list[tuple[int, bool]] = []
    for axis, n in enumerate(shape):
        if n == 1:
            continue
        kind = axis in red
        if sig and sig[-1][1] == kind:
            sig[-1] = (sig[-1][0] * n, kind)
        else:
            sig.append((n, kind))
    return tuple(sig)


@dataclass(frozen=True)
class Domain:
    """The loop nest of one kernel (see the module docstring)."""

    signature: Signature
    shape: tuple[int, ...]  # a representative full shape, for messages
    axes: tuple[int, ...]   # its reduced axes

    @staticmethod
    def of_reduce(shape: Sequence[int], axes: Sequence[int]) -> Domain:
        return _reduce_domain(tuple(shape), tuple(axes))

    @staticmethod
    def elementwise(shape: Sequence[int]) -> Domain:
        return Domain(merged_signature(shape, ()), tuple(shape), ())

    # ``full`` and ``rows`` are computed once per Domain: the scheduler asks a kernel's domain the
    # level of every value it checks.
    @cached_property
    def full(self) -> int:
        return math.prod(n for n, _ in self.signature)

    @cached_property
    def rows(self) -> int:
        return math.prod(n for n, red in self.signature if not red)

    @property
    def reduces(self) -> bool:
        return any(red for _, red in self.signature)

    def level(self, numel: int) -> str | None:
        """``"elem"`` for a value of the full space, ``"row"`` for one per row, else None."""
        if numel == self.full:
            return "elem"
        if numel == self.rows:
            return "row"
        return None

    def describe(self) -> str:
        shape = "(" + ", ".join(str(n) for n in self.shape) + ("," if len(self.shape) == 1 else "") + ")"
        if not self.axes:
            return shape
        word = "axis" if len(self.axes) == 1 else "axes"
        return f"{shape} reducing {word} {', '.join(str(a) for a in self.axes)}"

    def is_row_broadcast(self, view: View) -> bool:
        """Does ``view`` (over a full-space value) read element (row, k) from row ``row`` of a row value?"""
        sizes = [n for n, _ in self.signature]
        if math.prod(view.shape) != self.full:
            return False
        merged = view.reshape(sizes) if sizes else view.reshape(())
        if merged is None or merged.mask is not None or merged.offset != 0:
            return False
        keep_strides = iter(contiguous_strides([n for n, red in self.signature if not red]))
        for (_, red), stride in zip(self.signature, merged.strides):
            want = 0 if red else next(keep_strides)
            if stride != want:
                return False
        return True


@lru_cache(maxsize=1024)
def _reduce_domain(shape: tuple[int, ...], axes: tuple[int, ...]) -> Domain:
    """:meth:`Domain.of_reduce`, remembered (a Domain is immutable): the scheduler asks for the
    domain of every reduction of every group it checks, over and over."""
    return Domain(merged_signature(shape, axes), shape, axes)


def is_identity(view: View, numel_in: int) -> bool:
    """True when ``view`` reads a ``numel_in``-element value in its own order (a free reshape)."""
    return view.is_contiguous and math.prod(view.shape) == numel_in
