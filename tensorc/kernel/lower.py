"""Lower a scheduled :class:`~tensorc.schedule.kernel.Kernel` to a loop nest (:mod:`tensorc.kernel.ir`).

Supported: kernels whose computations are elementwise (unary, binary,
compare, ``where``, ``cast``) and ``sum``/``max`` reductions that share one
iteration space, over bool/int32/int64/uint32/float16/bfloat16/float32/float64
values, and materialized copies and concats, reading buffers through strided
views (expand = stride 0, permute, slice, reshape, pad via a mask) and index
sources (``iota``, scalar consts). A value recomputed under padding or inside
a concat piece is built under *guards* (``lo <= index < hi``) that also mask
its loads, so nothing is read out of bounds. Everything else (matmul,
gather/scatter_add, scan, fused ops, a concat under another view) makes
:func:`lower_kernel` return None; the LLVM backend runs matmul and fused ops
with library routines and the rest with the reference semantics.

An elementwise kernel is one loop nest over its output's shape. A reduction
kernel loops over the rows (the kept axes); inside a row, each *phase* of
reductions (a reduction that reads another one's result, as softmax's sum
reads its max, runs in a later phase) is one loop over the reduced axes,
then the values stored per element get a last loop over those axes.

Kernel values that are not stored are recomputed at every index they are
read at, so a value read through a view becomes an index substitution: the
view's strides are split back into the producer's axes (see
:func:`split_view`). Reads of a reduction's result must land on the row
being computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..ir import dtypes
from ..ir.node import Node
from ..schedule.kernel import Kernel
from ..schedule.views import MOVEMENT_OPS, View, compose, contiguous_strides
from .ir import (
    AccInit,
    AccRef,
    Affine,
    Binary,
    Cast,
    Const,
    Expr,
    Index,
    LoadExpr,
    Loop,
    LoopFunc,
    Reduce,
    Stmt,
    Store,
    Unary,
    Where,
)
from .split import split_loops

HALF_DTYPES = (dtypes.float16, dtypes.bfloat16)  # a column reduction's in-memory row buffer would round every step
NATIVE_DTYPES = (dtypes.bool_, dtypes.int32, dtypes.int64, dtypes.uint32, dtypes.float16, dtypes.bfloat16,
                 dtypes.float32, dtypes.float64)  # float16/bfloat16: stored as such, computed in float32
FLOAT_UNARY = ("exp", "log", "sqrt", "rsqrt", "reciprocal", "tanh", "sigmoid", "sin", "cos", "erf", "floor")
NUMERIC_UNARY = ("neg", "abs", "sign")
ARITH_BINARY = ("add", "sub", "mul", "div", "maximum", "minimum")
FLOAT_BINARY = ("pow", "floordiv", "mod")
COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")
LOGICAL = ("logical_and", "logical_or")
REDUCE_OPS = ("sum", "max")


class Unsupported(Exception):
    """The kernel (or one of its values) has no native lowering yet."""


@dataclass
class LoweredKernel:
    """A loop nest and the graph nodes bound to its buffer arguments (``outputs`` are written, ``scratch`` temporary)."""

    func: LoopFunc
    args: list[Node]
    outputs: list[Node]
    scratch: list[Node] = field(default_factory=list)  # row buffers the runtime allocates and drops


def _idx(axes: list[int]) -> tuple[Affine, ...]:
    return tuple(Affine.var(f"i{a}") for a in axes)


def flat_offset(index: tuple[Affine, ...], strides: tuple[int, ...], offset: int = 0) -> Affine:
    """``offset + sum(index[a] * strides[a])``."""
    acc = Affine.constant(offset)
    for ix, s in zip(index, strides):
        if s:
            acc = acc.add(ix.scale(s))
    return acc


def split_view(view: View, index: tuple[Affine, ...], src_shape: tuple[int, ...]) -> tuple[Affine, ...]:
    """The index of a contiguous ``src_shape`` value that ``view`` reads at ``index``, axis by axis.

    Works when every view axis steps inside one source axis without carrying into the next
    (permute, expand, slice, splitting or merging reshapes of contiguous runs); raises
    :class:`Unsupported` otherwise, and for masked views.
    """
    if view.mask is not None and any(m != (0, n) for m, n in zip(view.mask, view.shape)):
        raise Unsupported("a recomputed value read through padding (see padded_window)")
    if 0 in src_shape or 0 in view.shape:
        return tuple(Affine() for _ in src_shape)
    cs = contiguous_strides(src_shape)
    if not 0 <= view.offset < math.prod(src_shape):
        raise Unsupported("view offset outside its source")
    parts = [Affine.constant((view.offset // c) % n) for c, n in zip(cs, src_shape)]
    reach = [(view.offset // c) % n for c, n in zip(cs, src_shape)]
    for ix, n, s in zip(index, view.shape, view.strides):
        if n == 1 or s == 0:
            continue
        k = next((k for k, (c, m) in enumerate(zip(cs, src_shape)) if m > 1 and c <= s < c * m), None)
        if k is None or s % cs[k]:
            raise Unsupported("a view axis that straddles source axes")
        coef = s // cs[k]
        parts[k] = parts[k].add(ix.scale(coef))
        reach[k] += coef * (n - 1)
    if any(r >= n for r, n in zip(reach, src_shape)):
        raise Unsupported("a view axis that carries into the next source axis")
    return tuple(parts)


def padded_window(view: View, index: tuple[Affine, ...]) -> tuple[View, tuple[Affine, ...], tuple[tuple[Affine, int, int], ...]]:
    """A padded view as its unpadded window: (the window's view, the index into it, the guards).

    A read at ``index`` is the window's value at the shifted index where every guard
    ``lo <= ix < hi`` holds, else the padding value."""
    shape, idx, guards, off = list(view.shape), list(index), [], view.offset
    for a, ((lo, hi), n) in enumerate(zip(view.mask or (), view.shape)):
        if (lo, hi) != (0, n):
            guards.append((index[a], lo, hi))
            idx[a] = index[a].add(Affine.constant(-lo))
            shape[a] = hi - lo
            off += lo * view.strides[a]
    return View(tuple(shape), view.strides, off), tuple(idx), tuple(guards)


class _Lowerer:
    def __init__(self, kernel: Kernel, preloaded: frozenset[int] = frozenset()) -> None:
        self.kernel = kernel
        self.preloaded = preloaded  # computations of the kernel that another routine already stored
        self.members = {id(n) for n in kernel.nodes}
        self.exec = {id(n): n for n in kernel.exec_nodes}
        self.args: list[Node] = []
        self.arg_of: dict[int, int] = {}
        self.acc_of: dict[int, str] = {}
        self.in_memory: dict[int, int] = {}  # reductions accumulated in a row buffer (column reductions)
        self.scratch: list[Node] = []
        self.full: tuple[Affine, ...] = ()
        self.row_index: tuple[Affine, ...] = ()
        self.memo: dict[tuple, Expr] = {}
        self.guards: tuple[tuple[Affine, int, int], ...] = ()  # padding bounds the values being built sit under

    # ------------------------------------------------------------------ values

    def buf(self, node: Node) -> int:
        if id(node) not in self.arg_of:
            self.arg_of[id(node)] = len(self.args)
            self.args.append(node)
        return self.arg_of[id(node)]

    def computable(self, node: Node) -> bool:
        return (id(node) in self.exec and node.op not in MOVEMENT_OPS and node.op not in ("param", "const")
                and id(node) not in self.preloaded)

    def read(self, inp: Node, index: tuple[Affine, ...], copy: Node | None = None) -> Expr:
        """The value of operand ``inp`` at ``index``, through the movement ops between it and its source
        (``copy``: a materialized movement op of the kernel, read through like the others)."""
        node, chain = inp, []
        if node.op == "concat" and id(node) in self.exec and (id(node) not in self.members or node is copy):
            return self.concat(node, index)
        while node.op in MOVEMENT_OPS and id(node) in self.exec and (id(node) not in self.members or node is copy):
            if node.op == "concat":
                raise Unsupported("concat under another view")
            chain.insert(0, (node, 0))
            node = node.inputs[0]
        if not chain:
            return self.value(node, index)
        view, _ = compose(node.shape, tuple(chain))
        if view is None:
            raise Unsupported("not one strided view")
        if not self.computable(node) and not (node.op == "const" and math.prod(node.shape) == 1 and view.mask is None):
            return self.load(node, view, index)
        if view.mask is not None and any(m != (0, n) for m, n in zip(view.mask, view.shape)):
            # A recomputed value read through padding (a concat of gradients): computed under guards
            # that keep its loads in bounds, and selected where the guards hold.
            window, inner, guards = padded_window(view, index)
            if any(hi <= lo for _, lo, hi in guards):
                return Const(view.fill, node.dtype)
            value, cond = self.guarded(guards, lambda: self.value(node, split_view(window, inner, node.shape)))
            return Where(cond, value, Const(view.fill, node.dtype), node.dtype)
        return self.value(node, split_view(view, index, node.shape))

    def guarded(self, guards: tuple[tuple[Affine, int, int], ...], build: Callable[[], Expr]) -> tuple[Expr, Expr]:
        """(the value ``build`` makes with its loads kept inside ``guards``, the guards as a bool)."""
        outer = self.guards
        self.guards = outer + guards
        try:
            value = build()
        finally:
            self.guards = outer
        cond: Expr | None = None
        for ix, lo, hi in guards:
            i = Index(ix, dtypes.int64)
            ok = Binary("logical_and", Binary("ge", i, Const(lo, dtypes.int64), dtypes.bool_),
                        Binary("lt", i, Const(hi, dtypes.int64), dtypes.bool_), dtypes.bool_)
            cond = ok if cond is None else Binary("logical_and", cond, ok, dtypes.bool_)
        assert cond is not None
        return value, cond

    def concat(self, node: Node, index: tuple[Affine, ...]) -> Expr:
        """A concat read at ``index``: each piece under the guard of its range along the axis."""
        axis, start, result = node.attrs["axis"], 0, None
        for piece in node.inputs:
            n = piece.shape[axis]
            if n:
                inner = tuple(ix.add(Affine.constant(-start)) if a == axis else ix for a, ix in enumerate(index))
                value, cond = self.guarded(((index[axis], start, start + n),), lambda p=piece, i=inner: self.read(p, i))
                result = value if result is None else Where(cond, value, result, node.dtype)
            start += n
        return result if result is not None else Const(0, node.dtype)

    def load(self, node: Node, view: View, index: tuple[Affine, ...]) -> Expr:
        if node.dtype not in NATIVE_DTYPES or node.is_tuple:
            raise Unsupported(f"dtype {node.dtype}")
        if math.prod(node.shape) == 0:  # only padding reads it (or nothing runs): never touch its memory
            return Const(view.fill, node.dtype)
        mask: tuple[tuple[Affine, int, int], ...] = self.guards
        if view.mask is not None:
            mask += tuple((ix, lo, hi) for ix, (lo, hi), n in zip(index, view.mask, view.shape) if (lo, hi) != (0, n))
        return LoadExpr(self.buf(node), flat_offset(index, view.strides, view.offset), node.dtype, mask, view.fill)

    def value(self, node: Node, index: tuple[Affine, ...]) -> Expr:
        key = (id(node), index, self.guards)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = self._value(node, index)
        return hit

    def _value(self, node: Node, index: tuple[Affine, ...]) -> Expr:
        dt = node.dtype
        if node.is_tuple or dt not in NATIVE_DTYPES:
            raise Unsupported(f"dtype {dt}")
        if id(node) in self.in_memory:
            strides = contiguous_strides(node.shape)
            return LoadExpr(self.in_memory[id(node)], flat_offset(self.row_index, strides), dt)
        if id(node) in self.acc_of:
            if any(n != 1 and a != b for n, a, b in zip(node.shape, index, self.row_index)):
                raise Unsupported("a reduction read off its row")
            return AccRef(self.acc_of[id(node)], dt)
        if node.op == "const" and math.prod(node.shape) == 1:
            return Const(node.attrs["value"].array.reshape(()).item(), dt)
        if node.op == "iota":
            return Index(index[node.attrs["axis"]], dt)
        if node.op in MOVEMENT_OPS and id(node) in self.members:  # a materialized copy: its input read through it
            return self.read(node, index, copy=node)
        if not self.computable(node):
            return self.load(node, View.contiguous(node.shape), index)
        op = node.op
        if op in REDUCE_OPS:
            raise Unsupported("a reduction outside the kernel's iteration space")
        args = [self.read(i, index) for i in node.inputs]
        if op in FLOAT_UNARY or op in NUMERIC_UNARY or op == "logical_not":
            if op in FLOAT_UNARY and not dt.is_float:
                raise Unsupported(f"{op} on {dt}")
            return Unary(op, args[0], dt)
        if op in ARITH_BINARY or op in COMPARE or op in LOGICAL:
            return Binary(op, args[0], args[1], dt)
        if op in FLOAT_BINARY:
            if not dt.is_float:
                raise Unsupported(f"integer {op}")
            return Binary(op, args[0], args[1], dt)
        if op == "where":
            return Where(args[0], args[1], args[2], dt)
        if op == "cast":
            return Cast(args[0], dt)
        raise Unsupported(op)

    # ------------------------------------------------------------------ structure

    def phase_of(self, node: Node, memo: dict[int, int]) -> int:
        """0 for values that need no reduction of the kernel, else 1 + the deepest reduction they read."""
        if id(node) in memo:
            return memo[id(node)]
        memo[id(node)] = 0
        deps = [self.phase_of(i, memo) for i in node.inputs if id(i) in self.exec]
        depth = max(deps, default=0) + (1 if node.op in REDUCE_OPS and id(node) in self.members else 0)
        memo[id(node)] = depth
        return depth

    def lower(self, name: str) -> LoweredKernel:
        k = self.kernel
        if k.domain is None or k.body is not None:
            raise Unsupported("no iteration space")
        outputs = [o for o in k.outputs if id(o) not in self.preloaded]
        if not outputs:
            raise Unsupported("nothing left to compute")
        reduces = [n for n in k.nodes if n.op in REDUCE_OPS]
        if reduces:
            shape, red = tuple(reduces[0].inputs[0].shape), tuple(reduces[0].attrs["axes"])
            if any(tuple(r.inputs[0].shape) != shape or tuple(r.attrs["axes"]) != red for r in reduces):
                raise Unsupported("reductions over different shapes")
        else:
            shape, red = tuple(outputs[0].shape), ()
        rows = [a for a in range(len(shape)) if a not in red]
        row_shape = tuple(shape[a] for a in rows)
        full, self.row_index = _idx(list(range(len(shape)))), _idx(rows)
        self.full = full
        elem_out = [o for o in outputs if tuple(o.shape) == shape and not (reduces and tuple(o.shape) == row_shape)]
        row_out = [o for o in outputs if o not in elem_out and tuple(o.shape) == row_shape]
        if len(elem_out) + len(row_out) != len(outputs):
            raise Unsupported("an output of another size")
        for o in outputs:
            self.buf(o)

        def nest(axes: list[int], body: list[Stmt], outer: str = "serial", vector: bool = True) -> list[Stmt]:
            for j, a in enumerate(reversed(axes)):
                kind = "vector" if j == 0 and vector else "serial"
                if j == len(axes) - 1 and outer == "parallel" and (len(axes) > 1 or not vector):
                    kind = "parallel"
                body = [Loop(f"i{a}", shape[a], body, kind)]
            return body

        def store(o: Node, index: tuple[Affine, ...]) -> Store:
            return Store(self.arg_of[id(o)], flat_offset(index, contiguous_strides(o.shape)), self.value(o, index))

        trailing = red == tuple(range(len(shape) - len(red), len(shape)))
        if not reduces:
            body = nest(rows, [store(o, full) for o in elem_out], "parallel")
        elif (not trailing and all(self.phase_of(r, {}) == 1 and r.dtype not in HALF_DTYPES for r in reduces)
              and all(self.phase_of(o, {}) == 0 for o in elem_out)):
            # Elementwise outputs that need no reduction (a residual sum whose bias gradient the
            # kernel also takes) are stored during the same in-order walk.
            body = self.column_reduce(reduces, shape, rows, row_out, nest, store, elem_out)
        else:
            memo: dict[int, int] = {}
            phases = sorted({self.phase_of(r, memo) for r in reduces})
            row_body: list[Stmt] = []
            for p in phases:
                group = [r for r in reduces if memo[id(r)] == p]
                inner: list[Stmt] = []
                for r in group:
                    acc = f"acc{len(self.acc_of)}"
                    row_body.append(AccInit(acc, r.op, r.dtype))
                    inner.append(Reduce(acc, r.op, self.read(r.inputs[0], full)))
                    self.acc_of[id(r)] = acc
                row_body += nest(list(red), inner)
            if elem_out:
                row_body += nest(list(red), [store(o, full) for o in elem_out])
            row_body += [store(o, self.row_index) for o in row_out]
            body = nest(rows, row_body, "parallel", vector=False)
        func = LoopFunc(name, [n.dtype for n in self.args], split_loops(body))
        return LoweredKernel(func, self.args, outputs, self.scratch)

    def column_reduce(self, reduces: list[Node], shape: tuple[int, ...], rows: list[int], row_out: list[Node],
                      nest: Callable[..., list[Stmt]], store: Callable[[Node, tuple[Affine, ...]], Store],
                      elem_out: list[Node] = ()) -> list[Stmt]:  # type: ignore[assignment]
        """Reductions over leading or middle axes: accumulate in a row buffer while walking the input in order.

        The row buffer is the reduction's output when the kernel stores it, else a scratch buffer.
        """
        row_strides = contiguous_strides(tuple(shape[a] for a in rows))
        row_flat = flat_offset(self.row_index, row_strides)
        parts = partial_rows(shape, rows)
        if parts:
            return self.partial_column_reduce(reduces, shape, rows, row_out, nest, store, elem_out, parts)
        init: list[Stmt] = []
        step: list[Stmt] = []
        for r in reduces:
            if id(r) not in self.arg_of:
                self.scratch.append(r)
            buf = self.buf(r)
            init.append(Store(buf, row_flat, Const(_identity(r), r.dtype)))
            cur = LoadExpr(buf, row_flat, r.dtype)
            step.append(Store(buf, row_flat, Binary("add" if r.op == "sum" else "maximum", cur, self.read(r.inputs[0], self.full), r.dtype)))
        step += [store(o, self.full) for o in elem_out]
        for r in reduces:
            self.in_memory[id(r)] = self.arg_of[id(r)]
        stored = [o for o in row_out if id(o) not in self.in_memory]
        # The walk over the input accumulates into the row buffer across its outer (reduced) axes: serial.
        return (nest(rows, init, "parallel") + nest(list(range(len(shape))), step, "serial")
                + (nest(rows, [store(o, self.row_index) for o in stored], "parallel") if stored else []))


    def partial_column_reduce(self, reduces: list[Node], shape: tuple[int, ...], rows: list[int], row_out: list[Node],
                              nest: Callable[..., list[Stmt]], store: Callable[[Node, tuple[Affine, ...]], Store],
                              elem_out: list[Node], parts: int) -> list[Stmt]:
        """A reduction over the leading axes in ``parts`` slices of axis 0, walked in parallel, each in
        order into a partial row of its own; then the partial rows are added, in a fixed order, so the
        result does not depend on the thread count. (Column blocks per thread walked memory with a
        stride and were slower than one thread; slices of rows stream it.)"""
        last, chunk = len(shape) - 1, shape[0] // parts
        row_strides = contiguous_strides(tuple(shape[a] for a in rows))
        row_flat = flat_offset(self.row_index, row_strides)
        width = math.prod(shape[a] for a in rows)
        part = Affine.var("p0").scale(width)
        full = (Affine(((f"i{0}", 1), ("p0", chunk)), 0),) + self.full[1:]
        init: list[Stmt] = []
        step: list[Stmt] = []
        combine: list[Stmt] = []
        for r in reduces:
            if id(r) not in self.arg_of:
                self.scratch.append(r)
            buf = self.buf(r)
            partial = Node("scratch", (), {}, (parts, width), r.dtype)
            self.scratch.append(partial)
            pb = self.buf(partial)
            init.append(Store(pb, part.add(row_flat), Const(_identity(r), r.dtype)))
            cur = LoadExpr(pb, part.add(row_flat), r.dtype)
            op = "add" if r.op == "sum" else "maximum"
            step.append(Store(pb, part.add(row_flat), Binary(op, cur, self.read(r.inputs[0], full), r.dtype)))
            total: Expr = LoadExpr(pb, row_flat, r.dtype)
            for q in range(1, parts):
                total = Binary(op, total, LoadExpr(pb, row_flat.add(Affine.constant(q * width)), r.dtype), r.dtype)
            combine.append(Store(buf, row_flat, total))
        step += [store(o, full) for o in elem_out]
        for r in reduces:
            self.in_memory[id(r)] = self.arg_of[id(r)]
        stored = [o for o in row_out if id(o) not in self.in_memory]
        walk: list[Stmt] = [Loop(f"i{last}", shape[last], step, "vector")]
        for a in range(last - 1, 0, -1):
            walk = [Loop(f"i{a}", shape[a], walk)]
        walk = [Loop("p0", parts, [Loop("i0", chunk, walk)], "parallel")]
        return ([Loop("p0", parts, nest(rows, init), "parallel")] + walk + nest(rows, combine, "parallel")
                + (nest(rows, [store(o, self.row_index) for o in stored], "parallel") if stored else []))


def _identity(r: Node) -> float | int:
    """The start value of reduction ``r``: 0 for a sum, the lowest value for a max."""
    if r.op != "max":
        return 0
    return float("-inf") if r.dtype.is_float else {dtypes.int32: -(2 ** 31), dtypes.int64: -(2 ** 63)}.get(r.dtype, 0)


#: Slices of axis 0 a reduction over the leading axes is split into (when it divides axis 0 and
#: the reduction is large enough to run in parallel); fixed, so results do not depend on threads.
PARTIAL_ROWS = 8
PARTIAL_MIN_ELEMENTS = 1 << 16


def partial_rows(shape: tuple[int, ...], rows: list[int]) -> int:
    """How many partial rows a column reduction of ``shape`` keeping axes ``rows`` uses (0: one walk)."""
    n = len(shape)
    if not rows or rows != list(range(n - len(rows), n)) or rows[0] == 0 or math.prod(shape) < PARTIAL_MIN_ELEMENTS:
        return 0
    for parts in (PARTIAL_ROWS, PARTIAL_ROWS // 2, 2):
        if shape[0] % parts == 0 and shape[0] // parts >= 4:
            return parts
    return 0


def lower_kernel(kernel: Kernel, name: str | None = None, preloaded: frozenset[int] = frozenset()) -> LoweredKernel | None:
    """The loop nest of ``kernel``, or None when it holds something this backend does not lower yet.

    ``preloaded``: ids of computations of the kernel that are already in memory (a matmul a library
    routine computed): the loop nest reads them and computes only the rest (the epilogue)."""
    try:
        return _Lowerer(kernel, preloaded).lower(name or f"kernel{kernel.index}")
    except Unsupported:
        return None


def why_unsupported(kernel: Kernel) -> str | None:
    """Why :func:`lower_kernel` returns None for ``kernel`` (None when it lowers)."""
    try:
        _Lowerer(kernel).lower("k")
    except Unsupported as e:
        return str(e)
    return None
