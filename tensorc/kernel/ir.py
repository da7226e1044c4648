"""A small loop-nest IR: what a backend turns into native code.

A :class:`LoopFunc` is one kernel: numbered buffer arguments and a body of
statements. Statements are :class:`Loop` (over ``range(extent)``, tagged
``serial``, ``parallel`` or ``vector`` as a hint to the backend),
:class:`AccInit` / :class:`Reduce` (an accumulator and one step of it) and
:class:`Store`. Values are scalar expression trees: :class:`Const`,
:class:`Index` (a loop index as a value, for iota), :class:`LoadExpr` (a
buffer read through a strided view with a padding mask), :class:`AccRef`,
:class:`Unary`, :class:`Binary`, :class:`Where` and :class:`Cast`.
Indices are :class:`Affine`: integer combinations of loop variables.

>>> i = Affine.var("i0")
>>> str(i.scale(4).add(Affine.constant(2)))
'4*i0 + 2'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.dtypes import DType


@dataclass(frozen=True)
class Affine:
    """``const + sum(coef * var)`` over loop variables."""

    terms: tuple[tuple[str, int], ...] = ()
    const: int = 0

    @staticmethod
    def var(name: str) -> Affine:
        return Affine(((name, 1),), 0)

    @staticmethod
    def constant(value: int) -> Affine:
        return Affine((), value)

    def scale(self, k: int) -> Affine:
        if k == 0:
            return Affine((), 0)
        return Affine(tuple((v, c * k) for v, c in self.terms), self.const * k)

    def add(self, other: Affine) -> Affine:
        acc: dict[str, int] = dict(self.terms)
        for v, c in other.terms:
            acc[v] = acc.get(v, 0) + c
        return Affine(tuple(sorted((v, c) for v, c in acc.items() if c != 0)), self.const + other.const)

    def __str__(self) -> str:
        parts = [(f"{c}*{v}" if c != 1 else v) for v, c in self.terms]
        if self.const or not parts:
            parts.append(str(self.const))
        return " + ".join(parts)


class Expr:
    """A scalar value of ``dtype``."""

    dtype: DType


@dataclass(eq=False)
class Const(Expr):
    value: float | int | bool
    dtype: DType


@dataclass(eq=False)
class Index(Expr):
    """An affine index used as a value (iota)."""

    index: Affine
    dtype: DType


@dataclass(eq=False)
class LoadExpr(Expr):
    """``buf[offset]`` where every ``lo <= axis_index < hi`` in ``mask`` holds, else ``fill``."""

    buf: int
    offset: Affine
    dtype: DType
    mask: tuple[tuple[Affine, int, int], ...] = ()
    fill: float = 0.0


@dataclass(eq=False)
class AccRef(Expr):
    """The current value of accumulator ``name``."""

    name: str
    dtype: DType


@dataclass(eq=False)
class Unary(Expr):
    op: str
    x: Expr
    dtype: DType


@dataclass(eq=False)
class Binary(Expr):
    op: str
    a: Expr
    b: Expr
    dtype: DType


@dataclass(eq=False)
class Where(Expr):
    cond: Expr
    a: Expr
    b: Expr
    dtype: DType


@dataclass(eq=False)
class Cast(Expr):
    x: Expr
    dtype: DType


class Stmt:
    """A statement of a loop body."""


@dataclass
class Loop(Stmt):
    var: str
    extent: int
    body: list[Stmt]
    kind: str = "serial"  # serial | parallel | vector (a hint; this increment emits every loop serially)


@dataclass
class AccInit(Stmt):
    """Declare accumulator ``name`` of ``op`` (sum | max) and set it to the identity."""

    name: str
    op: str
    dtype: DType


@dataclass
class Reduce(Stmt):
    """``name = op(name, value)``."""

    name: str
    op: str
    value: Expr


@dataclass
class Store(Stmt):
    buf: int
    offset: Affine
    value: Expr


@dataclass
class LoopFunc:
    """One kernel as a loop nest over numbered buffers (``buffers[i]`` is the dtype of argument i)."""

    name: str
    buffers: list[DType]
    body: list[Stmt] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"func {self.name}({', '.join(f'%b{i}: {d}*' for i, d in enumerate(self.buffers))}):"]
        _dump(self.body, 1, lines)
        return "\n".join(lines)


def expr_str(e: Expr) -> str:
    """Text form of an expression tree."""
    if isinstance(e, Const):
        return repr(e.value)
    if isinstance(e, Index):
        return f"({e.index})"
    if isinstance(e, LoadExpr):
        text = f"%b{e.buf}[{e.offset}]"
        if e.mask:
            text += " if " + " and ".join(f"{lo}<={a}<{hi}" for a, lo, hi in e.mask) + f" else {e.fill}"
        return text
    if isinstance(e, AccRef):
        return e.name
    if isinstance(e, Unary):
        return f"{e.op}({expr_str(e.x)})"
    if isinstance(e, Binary):
        return f"{e.op}({expr_str(e.a)}, {expr_str(e.b)})"
    if isinstance(e, Where):
        return f"where({expr_str(e.cond)}, {expr_str(e.a)}, {expr_str(e.b)})"
    if isinstance(e, Cast):
        return f"cast<{e.dtype}>({expr_str(e.x)})"
    raise TypeError(type(e).__name__)


def _dump(body: list[Stmt], depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for s in body:
        if isinstance(s, Loop):
            lines.append(f"{pad}for {s.var} in 0..{s.extent} ({s.kind}):")
            _dump(s.body, depth + 1, lines)
        elif isinstance(s, AccInit):
            lines.append(f"{pad}{s.name}: {s.dtype} = {s.op}-identity")
        elif isinstance(s, Reduce):
            lines.append(f"{pad}{s.name} = {s.op}({s.name}, {expr_str(s.value)})")
        elif isinstance(s, Store):
            lines.append(f"{pad}%b{s.buf}[{s.offset}] = {expr_str(s.value)}")
