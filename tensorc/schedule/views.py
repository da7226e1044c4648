"""Strided views: how a kernel reads a buffer through movement ops without copying.

A :class:`View` maps an index of its ``shape`` to an element of a contiguous
buffer: ``offset + sum(i * stride)``, and reads ``fill`` where the index falls
outside ``mask`` (padding). ``permute`` and ``expand`` only change strides,
``slice`` changes the offset (and strides, for steps), ``pad`` adds a mask, and
``reshape`` works whenever the merged axes are laid out contiguously. A chain
of movement ops that cannot be written as one View (for example a reshape
that merges a permuted pair of axes) forces the scheduler to materialize the
value before the failing op.

>>> v = View.contiguous((4, 6)).permute((1, 0))
>>> v.shape, v.strides
((6, 4), (1, 6))
>>> v.reshape((24,)) is None          # a transposed matrix is not one flat strided run
True
>>> View.contiguous((4, 6)).reshape((2, 2, 6)).strides
(12, 6, 1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..ir.node import Node

Shape = tuple[int, ...]
MOVEMENT_OPS = ("reshape", "permute", "expand", "slice", "pad", "concat")


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major strides of ``shape`` (in elements)."""
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(strides))


@dataclass(frozen=True)
class View:
    """``shape`` indexed into a contiguous buffer with ``strides`` and ``offset``;
    ``mask[i] = (lo, hi)`` bounds the valid indices of axis i (None: all valid)."""

    shape: Shape
    strides: tuple[int, ...]
    offset: int = 0
    mask: tuple[tuple[int, int], ...] | None = None
    fill: float = 0.0

    @staticmethod
    def contiguous(shape: Sequence[int]) -> View:
        return View(tuple(shape), contiguous_strides(shape))

    @property
    def is_contiguous(self) -> bool:
        """True when the view reads the buffer front to back, once, without padding."""
        return self.offset == 0 and self.mask is None and all(
            s == c or n == 1 for n, s, c in zip(self.shape, self.strides, contiguous_strides(self.shape)))

    @property
    def is_bijection(self) -> bool:
        """True when every element of the buffer is read exactly once (a permutation of it)."""
        if self.mask is not None or 0 in self.shape:
            return self.mask is None
        dims = sorted((s, n) for n, s in zip(self.shape, self.strides) if n != 1)
        expect = 1
        for s, n in dims:
            if s != expect:
                return False
            expect *= n
        return self.offset == 0

    def distinct_elements(self) -> int:
        """How many buffer elements the view touches (an upper bound; broadcast axes count once)."""
        total = 1
        for i, (n, s) in enumerate(zip(self.shape, self.strides)):
            if self.mask is not None:
                lo, hi = self.mask[i]
                n = max(0, hi - lo)
            total *= n if s != 0 else min(n, 1)
        return total

    # ------------------------------------------------------------------ movement ops

    def permute(self, dims: Sequence[int]) -> View:
        mask = tuple(self.mask[d] for d in dims) if self.mask is not None else None
        return View(tuple(self.shape[d] for d in dims), tuple(self.strides[d] for d in dims), self.offset, mask, self.fill)

    def expand(self, shape: Sequence[int]) -> View:
        strides = tuple(s if n == m else 0 for n, m, s in zip(self.shape, shape, self.strides))
        mask = None
        if self.mask is not None:
            mask = tuple(mk if n == m else ((0, m) if mk[1] > mk[0] else (0, 0))
                         for n, m, mk in zip(self.shape, shape, self.mask))
        return View(tuple(shape), strides, self.offset, mask, self.fill)

    def slice(self, starts: Sequence[int], stops: Sequence[int], steps: Sequence[int]) -> View:
        shape = tuple(len(range(a, b, c)) for a, b, c in zip(starts, stops, steps))
        offset = self.offset + sum(a * s for a, s in zip(starts, self.strides))
        strides = tuple(s * c for s, c in zip(self.strides, steps))
        mask = None
        if self.mask is not None:
            new_mask = []
            for (lo, hi), a, c, n in zip(self.mask, starts, steps, shape):
                first = max(0, -(-(lo - a) // c))
                last = min(n, max(0, -(-(hi - a) // c)))
                new_mask.append((min(first, last), last))
            mask = tuple(new_mask)
        return View(shape, strides, offset, mask, self.fill)

    def pad(self, low: Sequence[int], high: Sequence[int], fill: float = 0.0) -> View | None:
        if self.mask is not None and fill != self.fill:
            return None  # two pads with different fill values need two masks
        shape = tuple(n + a + b for n, a, b in zip(self.shape, low, high))
        offset = self.offset - sum(a * s for a, s in zip(low, self.strides))
        old = self.mask or tuple((0, n) for n in self.shape)
        mask = tuple((lo + a, hi + a) for (lo, hi), a in zip(old, low))
        return View(shape, self.strides, offset, mask, fill)

    def reshape(self, new_shape: Sequence[int]) -> View | None:
        """The same elements in ``new_shape``, or None when no single strided view can hold them."""
        new_shape = tuple(new_shape)
        if math.prod(new_shape) != math.prod(self.shape):
            return None
        if 0 in self.shape:
            return View(new_shape, contiguous_strides(new_shape), 0, None, self.fill)
        old = [(n, s, None if self.mask is None else self.mask[i]) for i, (n, s) in enumerate(zip(self.shape, self.strides))
               if n != 1 or (self.mask is not None and self.mask[i] != (0, 1))]
        if any(n == 1 for n, _, _ in old):
            return None  # a size-1 axis that is masked out
        strides = [0] * len(new_shape)
        mask: list[tuple[int, int]] = [(0, n) for n in new_shape]
        new_axes = [i for i, n in enumerate(new_shape) if n != 1]
        oi = ni = 0
        while oi < len(old) and ni < len(new_axes):
            oj, nj = oi + 1, ni + 1
            osize, nsize = old[oi][0], new_shape[new_axes[ni]]
            while osize != nsize:
                if osize < nsize:
                    osize *= old[oj][0]
                    oj += 1
                else:
                    nsize *= new_shape[new_axes[nj]]
                    nj += 1
            group_old, group_new = old[oi:oj], new_axes[ni:nj]
            for (_, s1, _), (n2, s2, _) in zip(group_old, group_old[1:]):
                if s1 != n2 * s2:
                    return None  # the merged axes are not one contiguous run
            masked = [mk for n, _, mk in group_old if mk is not None and mk != (0, n)]
            if masked and not (len(group_old) == 1 and len(group_new) == 1):
                return None  # padding cannot be split or merged
            acc = group_old[-1][1]
            for ax in reversed(group_new):
                strides[ax] = acc
                acc *= new_shape[ax]
            if len(group_old) == 1 and group_old[0][2] is not None:
                mask[group_new[0]] = group_old[0][2]
            oi, ni = oj, nj
        return View(new_shape, tuple(strides), self.offset, tuple(mask) if self.mask is not None else None, self.fill)

    def __str__(self) -> str:
        text = f"view{list(self.shape)} strides={list(self.strides)}"
        if self.offset:
            text += f" offset={self.offset}"
        if self.mask is not None:
            text += f" mask={[list(m) for m in self.mask]}"
        return text


def apply_movement(view: View, node: Node, operand: int = 0) -> View | None:
    """``view`` after movement op ``node`` (read through its ``operand``-th input), or None."""
    a = node.attrs
    if node.op == "reshape":
        return view.reshape(a["shape"])
    if node.op == "permute":
        return view.permute(a["dims"])
    if node.op == "expand":
        return view.expand(a["shape"])
    if node.op == "slice":
        return view.slice(a["starts"], a["stops"], a["steps"])
    if node.op == "pad":
        return view.pad(a["low"], a["high"], float(a["value"]))
    if node.op == "concat":
        # Operand j of a concat is the whole result masked to j's range: a pad whose fill is the other operands.
        axis = a["axis"]
        before = sum(i.shape[axis] for i in node.inputs[:operand])
        after = node.shape[axis] - before - node.inputs[operand].shape[axis]
        low = [0] * len(node.shape)
        high = [0] * len(node.shape)
        low[axis], high[axis] = before, after
        return view.pad(low, high, view.fill)
    raise ValueError(f"{node.op} is not a movement op")


def compose(base_shape: Sequence[int], chain: Sequence[tuple[Node, int]]) -> tuple[View | None, Node | None]:
    """The view that reads a contiguous ``base_shape`` buffer through ``chain`` of
    (movement node, operand index), innermost first; on failure (None, failing node)."""
    view: View | None = View.contiguous(base_shape)
    for node, operand in chain:
        view = apply_movement(view, node, operand)
        if view is None:
            return None, node
    return view, None
