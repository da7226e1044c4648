"""Index-set splitting: an innermost loop whose body branches on its own index runs as several loops.

A concat or the gradient of a ``chunk`` (four gate gradients padded into one ``(B, 4H)`` array)
lowers to one loop whose every element evaluates each piece under a guard: a masked load per
piece and a ``where`` per piece. Vectorized, every lane computes all the pieces and keeps one (an
LSTM's gate gradient kernel did 4x its work). When the guards compare the loop index with
constants, :func:`split_loops` cuts the loop at those constants; in each part every guard is
known, so the loads lose their masks (or become their fill value) and each ``where`` keeps
one side. The values and the order of the stores are unchanged.

Only innermost loops that store (no reduction) are split, into at most ``MAX_PARTS`` parts.

>>> from tensorc.ir import dtypes
>>> from tensorc.kernel.ir import Affine, Binary, Const, Index, LoadExpr, Loop, Store, Where
>>> i = Affine.var("i")
>>> first = Binary("lt", Index(i, dtypes.int64), Const(4, dtypes.int64), dtypes.bool_)
>>> value = Where(first, LoadExpr(0, i, dtypes.float32, ((i, 0, 4),)), Const(1.0, dtypes.float32), dtypes.float32)
>>> loops = split_loops([Loop("i", 10, [Store(1, i, value)], "vector")])
>>> [(lp.extent, expr_str(lp.body[0].value)) for lp in loops]
[(4, '%b0[i]'), (6, '1.0')]
"""

from __future__ import annotations

from ..ir import dtypes
from .ir import AccRef, Affine, Binary, Cast, Const, Expr, Index, LoadExpr, Loop, Stmt, Store, Unary, Where
from .ir import expr_str as expr_str  # noqa: F401  (the doctest prints with it)

__all__ = ["split_loops"]

MAX_PARTS = 8
_FLIP = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}


def split_loops(body: list[Stmt]) -> list[Stmt]:
    """``body`` with every splittable innermost loop replaced by its parts (see the module docstring)."""
    out: list[Stmt] = []
    for s in body:
        if not isinstance(s, Loop):
            out.append(s)
        elif any(isinstance(c, Loop) for c in s.body):
            out.append(Loop(s.var, s.extent, split_loops(s.body), s.kind))
        else:
            out += _split(s)
    return out


def _only(a: Affine, var: str) -> bool:
    return a.terms == ((var, 1),)


def _compare(e: Expr, var: str) -> tuple[str, int] | None:
    """``(op, c)`` when ``e`` is ``var + k <op> const`` (or mirrored), as ``var <op> c``."""
    if not (isinstance(e, Binary) and e.op in _FLIP):
        return None
    a, b, op = e.a, e.b, e.op
    if isinstance(b, Index) and isinstance(a, Const):
        a, b, op = b, a, _FLIP[op]
    if isinstance(a, Index) and _only(a.index, var) and isinstance(b, Const) and isinstance(b.value, int):
        return op, b.value - a.index.const
    return None


def _cuts(loop: Loop) -> list[int]:
    """The indices where some guard of ``loop``'s body changes value."""
    var, found, seen = loop.var, set(), set()

    def visit(e: Expr) -> None:
        if id(e) in seen:
            return
        seen.add(id(e))
        if isinstance(e, LoadExpr):
            for a, lo, hi in e.mask:
                if _only(a, var):
                    found.update((lo - a.const, hi - a.const))
        cmp = _compare(e, var)
        if cmp is not None:
            op, c = cmp
            found.add(c + 1 if op in ("le", "gt") else c)
        for child in (getattr(e, f, None) for f in ("x", "a", "b", "cond")):
            if isinstance(child, Expr):
                visit(child)

    for s in loop.body:
        visit(s.value)  # type: ignore[attr-defined]
    return sorted(c for c in found if 0 < c < loop.extent)


def _split(loop: Loop) -> list[Stmt]:
    if not all(isinstance(s, Store) for s in loop.body):
        return [loop]
    cuts = _cuts(loop)
    if not cuts or len(cuts) + 1 > MAX_PARTS:
        return [loop]
    bounds = [0, *cuts, loop.extent]
    parts: list[Stmt] = []
    for start, stop in zip(bounds, bounds[1:]):
        part = _Part(loop.var, start, stop - start)
        parts.append(Loop(loop.var, stop - start, [Store(s.buf, part.affine(s.offset), part.expr(s.value))  # type: ignore[attr-defined]
                                                   for s in loop.body], loop.kind))
    return parts


class _Part:
    """The loop ``var`` over ``[start, start + extent)``, rewritten to run from 0: ``var -> var + start``."""

    def __init__(self, var: str, start: int, extent: int) -> None:
        self.var, self.start, self.extent = var, start, extent
        self.memo: dict[int, Expr] = {}

    def affine(self, a: Affine) -> Affine:
        coef = dict(a.terms).get(self.var, 0)
        return Affine(a.terms, a.const + coef * self.start)

    def known(self, a: Affine, lo: int, hi: int) -> bool | None:
        """Whether ``lo <= a < hi`` holds on the whole part (True / False), or varies (None)."""
        if not _only(a, self.var):
            return None
        first, last = a.const + self.start, a.const + self.start + self.extent - 1
        if lo <= first and last < hi:
            return True
        if last < lo or first >= hi:
            return False
        return None

    def expr(self, e: Expr) -> Expr:
        hit = self.memo.get(id(e))
        if hit is None:
            hit = self.memo[id(e)] = self._expr(e)
        return hit

    def _expr(self, e: Expr) -> Expr:
        if isinstance(e, (Const, AccRef)):
            return e
        if isinstance(e, Index):
            return Index(self.affine(e.index), e.dtype)
        if isinstance(e, LoadExpr):
            mask = []
            for a, lo, hi in e.mask:
                ok = self.known(a, lo, hi)
                if ok is False:
                    return Const(e.fill, e.dtype)
                if ok is None:
                    mask.append((self.affine(a), lo, hi))
            return LoadExpr(e.buf, self.affine(e.offset), e.dtype, tuple(mask), e.fill)
        if isinstance(e, Unary):
            return Unary(e.op, self.expr(e.x), e.dtype)
        if isinstance(e, Cast):
            return Cast(self.expr(e.x), e.dtype)
        if isinstance(e, Where):
            cond = self.expr(e.cond)
            if isinstance(cond, Const):
                return self.expr(e.a) if cond.value else self.expr(e.b)
            return Where(cond, self.expr(e.a), self.expr(e.b), e.dtype)
        if isinstance(e, Binary):
            cmp = _compare(e, self.var)
            if cmp is not None:
                op, c = cmp
                lo, hi = {"ge": (c, 1 << 62), "gt": (c + 1, 1 << 62), "lt": (-(1 << 62), c), "le": (-(1 << 62), c + 1)}[op]
                ok = self.known(Affine(((self.var, 1),), 0), lo, hi)
                if ok is not None:
                    return Const(ok, dtypes.bool_)
            a, b = self.expr(e.a), self.expr(e.b)
            if e.op in ("logical_and", "logical_or"):
                for x, y in ((a, b), (b, a)):
                    if isinstance(x, Const):
                        absorbing = not x.value if e.op == "logical_and" else bool(x.value)
                        return Const(bool(x.value), dtypes.bool_) if absorbing else y
            return Binary(e.op, a, b, e.dtype)
        raise TypeError(type(e).__name__)
