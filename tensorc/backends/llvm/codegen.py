"""LLVM IR for a :class:`~tensorc.kernel.ir.LoopFunc`, built with llvmlite.

Each kernel becomes ``<name>_impl(ptr noalias %b0, ...)`` (always inlined)
and an entry ``<name>(ptr %table)`` that reads the buffer addresses from a
table, so the runtime makes one ctypes call per kernel. Loops are plain
counted loops; LLVM's vectorizer (O3, host CPU features) vectorizes the
innermost one. ``sum`` reductions of floats carry ``reassoc`` so they
vectorize too. float32 exp (so sigmoid and softmax) and tanh are polynomials that
vectorize; log/sqrt/sin/cos/pow and float64 exp use LLVM intrinsics; erf
and float64 tanh call libm.
"""

from __future__ import annotations

from collections.abc import Callable

import llvmlite.ir as ir
import numpy as np

from ...ir import dtypes
from ...ir.dtypes import DType
from ...kernel.ir import (
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
from .parallel import counted_loop, parallel_for

I1, I8, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()
_FCMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


HALF = (dtypes.float16, dtypes.bfloat16)


def compute_dtype(dt: DType) -> DType:
    """The dtype arithmetic runs in: float32 for the half types (storage only), else ``dt``."""
    return dtypes.float32 if dt in HALF else dt


def value_type(dt: DType) -> ir.Type:
    """The register type of ``dt`` (bool is i1; float16/bfloat16 values are float32 in registers)."""
    if dt == dtypes.bool_:
        return I1
    if dt == dtypes.float32 or dt in HALF:
        return ir.FloatType()
    if dt == dtypes.float64:
        return ir.DoubleType()
    return ir.IntType(dt.itemsize * 8)


def memory_type(dt: DType) -> ir.Type:
    """The in-memory type of ``dt`` (bool is one byte, as numpy stores it; bfloat16 is its 16 bits)."""
    if dt == dtypes.float16:
        return ir.HalfType()
    if dt == dtypes.bfloat16:
        return ir.IntType(16)
    return I8 if dt == dtypes.bool_ else value_type(dt)


def _const(dt: DType, value: float | int | bool) -> ir.Constant:
    if dt in HALF:  # the constant as the half type holds it
        return ir.Constant(value_type(dt), float(np.asarray(value, dt.np).astype(np.float32)))
    if dt.is_float:
        return ir.Constant(value_type(dt), float(value))
    if dt == dtypes.bool_:
        return ir.Constant(I1, int(bool(value)))
    v = int(value)
    return ir.Constant(value_type(dt), v & ((1 << (dt.itemsize * 8)) - 1) if dt == dtypes.uint32 else v)


PARALLEL_MIN_WORK = 1 << 15  # work (about one vector op per unit) below which a parallel loop runs on one thread
#: Work of one element of a transcendental function (a polynomial, a division, a select), in units
#: of a store: an LSTM cell of 8192 elements and five of them is 10x the work of adding two arrays.
TRANSCENDENTAL_WORK = 8
_TRANSCENDENTAL = frozenset({"exp", "log", "tanh", "sigmoid", "erf", "sin", "cos", "sqrt", "rsqrt", "reciprocal", "pow"})


def _work(s: Stmt) -> int:
    """A static estimate of a statement's work: per innermost iteration, one per store or
    reduction step plus ``TRANSCENDENTAL_WORK`` per distinct transcendental it evaluates."""
    if isinstance(s, Loop):
        inner = [c for c in s.body if not isinstance(c, Loop)]
        per = sum(_work(c) for c in s.body if isinstance(c, Loop)) + len(inner) + _transcendentals(inner)
        return s.extent * max(1, per)
    return 1


def _transcendentals(body: list[Stmt]) -> int:
    """``TRANSCENDENTAL_WORK`` times the distinct transcendental nodes of the statements' values."""
    seen: set[int] = set()
    count = 0

    def expr(e: Expr) -> None:
        nonlocal count
        if id(e) in seen:
            return
        seen.add(id(e))
        if isinstance(e, Unary) and e.op in _TRANSCENDENTAL or isinstance(e, Binary) and e.op == "pow":
            count += 1
        for child in vars(e).values():
            if isinstance(child, Expr):
                expr(child)

    for st in body:
        value = getattr(st, "value", None)
        if isinstance(value, Expr):
            expr(value)
    return TRANSCENDENTAL_WORK * count


def _loaded_buffers(body: list[Stmt]) -> set[int]:
    """Buffers some expression of ``body`` loads."""
    found: set[int] = set()
    seen: set[int] = set()

    def expr(e: Expr) -> None:
        if id(e) in seen:
            return
        seen.add(id(e))
        if isinstance(e, LoadExpr):
            found.add(e.buf)
        for child in vars(e).values():
            if isinstance(child, Expr):
                expr(child)

    def stmt(st: Stmt) -> None:
        if isinstance(st, Loop):
            for c in st.body:
                stmt(c)
        elif isinstance(st, (Store, Reduce)):
            expr(st.value)

    for st in body:
        stmt(st)
    return found


def _parallel_ok(s: Loop) -> bool:
    """A loop the lowerer marked parallel, or an elementwise loop: only stores, each to a place that
    moves with the loop variable, so iterations touch disjoint elements."""
    if s.kind == "parallel":
        return True
    return s.kind == "vector" and all(isinstance(c, Store) and any(v == s.var and k for v, k in c.offset.terms)
                                      for c in s.body)


class FuncEmitter:
    """Emits one loop nest into ``module``."""

    def __init__(self, module: ir.Module, func: LoopFunc) -> None:
        self.module, self.func = module, func
        impl_ty = ir.FunctionType(VOID, [PTR] * len(func.buffers))
        self.impl = ir.Function(module, impl_ty, name=f"{func.name}_impl")
        self.impl.linkage = "internal"
        self.impl.attributes.add("alwaysinline")
        self.impl.attributes.add("nounwind")
        for a in self.impl.args:
            a.add_attribute("noalias")
        entry = self.impl.append_basic_block("entry")
        self.alloca_builder = ir.IRBuilder(entry)
        body = self.impl.append_basic_block("body")
        self.alloca_builder.branch(body)
        self.alloca_builder.position_at_start(entry)
        self.b = ir.IRBuilder(body)
        self.fn = self.impl  # the function being filled (an outlined parallel body while inside one)
        self.args: list[ir.Value] = list(self.impl.args)
        self.in_parallel = False
        self.n_regions = 0
        self.read_bufs = _loaded_buffers(func.body)
        self.vars: dict[str, ir.Value] = {}
        self.accs: dict[str, tuple[ir.Value, DType]] = {}
        self.cache: dict[int, ir.Value] = {}

    def emit(self) -> None:
        self.block(self.func.body)
        self.b.ret_void()
        wrapper = ir.Function(self.module, ir.FunctionType(VOID, [PTR]), name=self.func.name)
        wb = ir.IRBuilder(wrapper.append_basic_block("entry"))
        table = wrapper.args[0]
        ptrs = [wb.load(wb.gep(table, [ir.Constant(I64, i)], source_etype=PTR), typ=PTR) for i in range(len(self.func.buffers))]
        wb.call(self.impl, ptrs)
        wb.ret_void()

    # ------------------------------------------------------------------ statements

    def block(self, body: list[Stmt]) -> None:
        # Consecutive stores share their common subexpressions (an optimizer step's many outputs all
        # read one clipping factor); anything else may change what a cached value would read.
        share = False
        for s in body:
            if not (share and isinstance(s, Store)):
                self.cache = {}
            share = isinstance(s, Store) and s.buf not in self.read_bufs
            if isinstance(s, Loop):
                self.loop(s)
            elif isinstance(s, AccInit):
                ty = value_type(s.dtype)
                slot = self.alloca_builder.alloca(ty)
                slot.type = PTR
                self.accs[s.name] = (slot, s.dtype)
                if s.op == "sum":
                    init = _const(s.dtype, 0)
                elif s.dtype.is_float:
                    init = ir.Constant(ty, float("-inf"))
                else:
                    info = {dtypes.int32: -(2 ** 31), dtypes.int64: -(2 ** 63), dtypes.uint32: 0}
                    init = ir.Constant(ty, info[s.dtype])
                self.b.store(init, slot)
            elif isinstance(s, Reduce):
                slot, dt = self.accs[s.name]
                cur = self.b.load(slot, typ=value_type(dt))
                v = self.expr(s.value)
                if s.op == "sum":
                    new = self.b.fadd(cur, v, flags=("reassoc", "nsz")) if dt.is_float else self.b.add(cur, v)
                else:
                    new = self.maximum(cur, v, dt)
                self.b.store(new, slot)
            elif isinstance(s, Store):
                v = self.expr(s.value)
                dt = s.value.dtype
                if dt == dtypes.bool_:
                    v = self.b.zext(v, I8)
                elif dt in HALF:
                    v = self.narrow_half(v, dt)
                ptr = self.b.gep(self.args[s.buf], [self.affine(s.offset)], source_etype=memory_type(dt), inbounds=True)
                self.b.store(v, ptr, align=dt.itemsize)
            else:
                raise TypeError(type(s).__name__)

    def loop(self, s: Loop) -> None:
        if not self.in_parallel and _parallel_ok(s) and _work(s) >= PARALLEL_MIN_WORK and s.extent > 1:
            self.parallel_loop(s)
            return
        pre = self.b.block
        header = self.fn.append_basic_block(f"{s.var}.head")
        body = self.fn.append_basic_block(f"{s.var}.body")
        done = self.fn.append_basic_block(f"{s.var}.done")
        self.b.branch(header)
        self.b.position_at_end(header)
        i = self.b.phi(I64, name=s.var)
        i.add_incoming(ir.Constant(I64, 0), pre)
        self.b.cbranch(self.b.icmp_signed("<", i, ir.Constant(I64, s.extent)), body, done)
        self.b.position_at_end(body)
        saved = self.vars.get(s.var)
        self.vars[s.var] = i
        self.block(s.body)
        nxt = self.b.add(i, ir.Constant(I64, 1), flags=("nuw", "nsw"))
        i.add_incoming(nxt, self.b.block)
        self.b.branch(header)
        self.b.position_at_end(done)
        if saved is not None:
            self.vars[s.var] = saved
        else:  # out of scope: a later parallel region must not capture it
            del self.vars[s.var]
        self.cache = {}

    def parallel_loop(self, s: Loop) -> None:
        """``s`` split over OpenMP threads: its body moves into an outlined function."""
        names, accs = list(self.vars), list(self.accs)
        captured = self.args + [self.vars[n] for n in names] + [self.accs[a][0] for a in accs]
        saved = (self.fn, self.b, self.alloca_builder, self.args, self.vars, self.accs, self.cache)

        def body(ob: ir.IRBuilder, lo: ir.Value, hi: ir.Value, vals: list[ir.Value]) -> None:
            self.fn, self.b, self.in_parallel = ob.function, ob, True
            self.alloca_builder = ir.IRBuilder(ob.function.entry_basic_block)
            self.alloca_builder.position_at_start(ob.function.entry_basic_block)
            nbuf = len(self.args)
            self.args = vals[:nbuf]
            self.vars = dict(zip(names, vals[nbuf:nbuf + len(names)]))
            # accumulators of the enclosing function are read (their final values) through pointers
            self.accs = {a: (v, self.accs[a][1]) for a, v in zip(accs, vals[nbuf + len(names):])}
            self.cache = {}

            def one(i: ir.Value) -> None:
                self.vars[s.var] = i
                self.block(s.body)

            counted_loop(ob, lo, hi, one, name=s.var)

        self.n_regions += 1
        parallel_for(self.b, ir.Constant(I64, s.extent), captured, body, f"{self.func.name}.par{self.n_regions}")
        self.fn, self.b, self.alloca_builder, self.args, self.vars, self.accs, self.cache = saved
        self.in_parallel = False

    # ------------------------------------------------------------------ expressions

    def affine(self, a: Affine) -> ir.Value:
        acc: ir.Value = ir.Constant(I64, a.const)
        for var, coef in a.terms:
            term = self.vars[var]
            if coef != 1:
                term = self.b.mul(term, ir.Constant(I64, coef), flags=("nsw",))
            acc = self.b.add(acc, term, flags=("nsw",))
        return acc

    def expr(self, e: Expr) -> ir.Value:
        hit = self.cache.get(id(e))
        if hit is None:
            hit = self.cache[id(e)] = self._expr(e)
        return hit

    def intrinsic(self, name: str, args: list[ir.Value]) -> ir.Value:
        ty = args[0].type
        full = f"{name}.{'f32' if isinstance(ty, ir.FloatType) else 'f64'}"
        fn = self.module.globals.get(full)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ty, [ty] * len(args)), name=full)
        return self.b.call(fn, args)

    def libm(self, name: str, x: ir.Value, dt: DType) -> ir.Value:
        fname = name + ("f" if compute_dtype(dt) == dtypes.float32 else "")
        fn = self.module.globals.get(fname)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(x.type, [x.type]), name=fname)
            fn.attributes.add("nounwind")
        return self.b.call(fn, [x])

    def maximum(self, a: ir.Value, b: ir.Value, dt: DType, want_max: bool = True) -> ir.Value:
        if dt.is_float:
            return self.intrinsic("llvm.maximum" if want_max else "llvm.minimum", [a, b])
        cmp = self.b.icmp_unsigned if dt in (dtypes.uint32, dtypes.bool_) else self.b.icmp_signed
        return self.b.select(cmp(">" if want_max else "<", a, b), a, b)

    def _expr(self, e: Expr) -> ir.Value:
        b = self.b
        if isinstance(e, Const):
            return _const(e.dtype, e.value)
        if isinstance(e, Index):
            return self.convert(self.affine(e.index), dtypes.int64, e.dtype)
        if isinstance(e, AccRef):
            slot, dt = self.accs[e.name]
            return self.rounded(b.load(slot, typ=value_type(dt)), dt)
        if isinstance(e, LoadExpr):
            return self.load(e)
        if isinstance(e, Unary):
            return self.rounded(self.unary(e.op, self.expr(e.x), e.dtype), e.dtype)
        if isinstance(e, Binary):
            return self.rounded(self.binary(e.op, self.expr(e.a), self.expr(e.b), e.a.dtype), e.dtype)
        if isinstance(e, Where):
            return b.select(self.expr(e.cond), self.expr(e.a), self.expr(e.b))
        if isinstance(e, Cast):
            return self.convert(self.expr(e.x), e.x.dtype, e.dtype)
        raise TypeError(type(e).__name__)

    def load(self, e: LoadExpr) -> ir.Value:
        b = self.b
        off = self.affine(e.offset)
        cond = None
        for ix, lo, hi in e.mask:
            v = self.affine(ix)
            ok = b.and_(b.icmp_signed(">=", v, ir.Constant(I64, lo)), b.icmp_signed("<", v, ir.Constant(I64, hi)))
            cond = ok if cond is None else b.and_(cond, ok)
        if cond is not None:
            off = b.select(cond, off, ir.Constant(I64, 0))
        mt = memory_type(e.dtype)
        ptr = b.gep(self.args[e.buf], [off], source_etype=mt, inbounds=True)
        v = b.load(ptr, typ=mt, align=e.dtype.itemsize)
        if e.dtype in HALF:
            v = self.widen_half(v, e.dtype)
        if e.dtype == dtypes.bool_:
            v = b.icmp_unsigned("!=", v, ir.Constant(I8, 0))
        if cond is not None:
            v = b.select(cond, v, _const(e.dtype, e.fill))
        return v

    def unary(self, op: str, x: ir.Value, dt: DType) -> ir.Value:
        b = self.b
        one = _const(dt, 1)
        zero = _const(dt, 0)
        if op == "exp":
            return self.exp(x, dt)
        if op in ("log", "sqrt", "sin", "cos", "floor"):
            return self.intrinsic(f"llvm.{op}", [x])
        if op == "tanh" and compute_dtype(dt) == dtypes.float32:
            return self.tanh32(x)
        if op in ("tanh", "erf"):
            return self.libm(op, x, dt)
        if op == "rsqrt":
            return b.fdiv(one, self.intrinsic("llvm.sqrt", [x]))
        if op == "reciprocal":
            return b.fdiv(one, x)
        if op == "sigmoid":
            return b.fdiv(one, b.fadd(one, self.exp(b.fneg(x), dt)))
        if op == "neg":
            return b.fneg(x) if dt.is_float else b.sub(zero, x)
        if op == "abs":
            if dt.is_float:
                return self.intrinsic("llvm.fabs", [x])
            return x if dt == dtypes.uint32 else b.select(b.icmp_signed("<", x, zero), b.sub(zero, x), x)
        if op == "sign":
            if dt.is_float:
                return b.select(b.fcmp_ordered(">", x, zero), one,
                                b.select(b.fcmp_ordered("<", x, zero), _const(dt, -1), x))
            if dt == dtypes.uint32:
                return b.zext(b.icmp_unsigned("!=", x, zero), x.type)
            return b.sub(b.zext(b.icmp_signed(">", x, zero), x.type), b.zext(b.icmp_signed("<", x, zero), x.type))
        if op == "logical_not":
            return b.xor(x, ir.Constant(I1, 1))
        raise NotImplementedError(op)

    def exp(self, x: ir.Value, dt: DType) -> ir.Value:
        """exp: a vectorizable polynomial for float32 (relative error about 2e-7), llvm.exp for float64.

        n = roundeven(x log2 e); r = x - n ln2 (two FMAs); e^r by a degree-7 Taylor polynomial;
        times 2 * 2^(n-1) built from exponent bits. Below -86.5 the result is 0, above log(FLT_MAX) inf, NaN stays NaN.
        """
        if compute_dtype(dt) != dtypes.float32:
            return self.intrinsic("llvm.exp", [x])
        b, f = self.b, ir.FloatType()

        def c(v: float) -> ir.Constant:
            return ir.Constant(f, v)

        lo, hi = -86.5, 88.72283
        xc = b.select(b.fcmp_ordered("<", x, c(lo)), c(lo), b.select(b.fcmp_ordered(">", x, c(hi)), c(hi), x))
        n = self.intrinsic("llvm.roundeven", [b.fmul(xc, c(1.4426950408889634))])
        r = self.intrinsic("llvm.fma", [n, c(-0.693145751953125), xc])
        r = self.intrinsic("llvm.fma", [n, c(-1.428606765330187e-06), r])
        p = c(1 / 5040)
        for k in (720, 120, 24, 6, 2, 1, 1):
            p = self.intrinsic("llvm.fma", [p, r, c(1 / k)])
        bits = b.shl(b.add(b.fptosi(n, ir.IntType(32)), ir.Constant(ir.IntType(32), 126)), ir.Constant(ir.IntType(32), 23))
        y = b.fmul(b.fmul(p, c(2.0)), b.bitcast(bits, f))
        y = b.select(b.fcmp_ordered("<", x, c(lo)), c(0.0), b.select(b.fcmp_ordered(">", x, c(hi)), c(float("inf")), y))
        return b.select(b.fcmp_unordered("uno", x, x), x, y)

    def tanh32(self, x: ir.Value) -> ir.Value:
        """float32 tanh: an odd Taylor polynomial below |x| = 0.1, else sign(x) (1 - 2 / (exp(2|x|) + 1))."""
        b, f = self.b, ir.FloatType()

        def c(v: float) -> ir.Constant:
            return ir.Constant(f, v)

        ax = self.intrinsic("llvm.fabs", [x])
        big = b.fsub(c(1.0), b.fdiv(c(2.0), b.fadd(self.exp(b.fmul(ax, c(2.0)), dtypes.float32), c(1.0))))
        big = self.intrinsic("llvm.copysign", [big, x])
        x2 = b.fmul(x, x)
        p = c(-17 / 315)
        for k in (2 / 15, -1 / 3, 1.0):
            p = self.intrinsic("llvm.fma", [p, x2, c(k)])
        return b.select(b.fcmp_ordered("<", ax, c(0.1)), b.fmul(x, p), big)

    def binary(self, op: str, x: ir.Value, y: ir.Value, dt: DType) -> ir.Value:
        b = self.b
        f = dt.is_float
        simple: dict[str, Callable[..., ir.Value]] = (
            {"add": b.fadd, "sub": b.fsub, "mul": b.fmul, "div": b.fdiv} if f else {"add": b.add, "sub": b.sub, "mul": b.mul})
        if op in simple:
            return simple[op](x, y)
        if op in ("maximum", "minimum"):
            return self.maximum(x, y, dt, op == "maximum")
        if op in _FCMP:
            sym = _FCMP[op]
            if f:
                return b.fcmp_unordered(sym, x, y) if op == "ne" else b.fcmp_ordered(sym, x, y)
            cmp = b.icmp_unsigned if dt in (dtypes.uint32, dtypes.bool_) else b.icmp_signed
            return cmp(sym, x, y)
        if op == "logical_and":
            return b.and_(x, y)
        if op == "logical_or":
            return b.or_(x, y)
        if op == "pow":
            return self.intrinsic("llvm.pow", [x, y])
        if op == "floordiv":
            return self.intrinsic("llvm.floor", [b.fdiv(x, y)])
        if op == "mod":  # numpy: the result takes the divisor's sign
            r = b.frem(x, y)
            zero = _const(dt, 0)
            fix = b.and_(b.fcmp_ordered("!=", r, zero), b.icmp_unsigned("!=", b.fcmp_ordered("<", r, zero),
                                                                         b.fcmp_ordered("<", y, zero)))
            return b.select(fix, b.fadd(r, y), r)
        raise NotImplementedError(op)

    def rounded(self, v: ir.Value, dt: DType) -> ir.Value:
        """A float16/bfloat16 op's float32 result rounded to its dtype, as every backend rounds after
        each op (so fused kernels agree bit for bit with the reference); other dtypes unchanged."""
        return self.widen_half(self.narrow_half(v, dt), dt) if dt in HALF else v

    def widen_half(self, v: ir.Value, dt: DType) -> ir.Value:
        """A float16/bfloat16 in memory form to float32."""
        b = self.b
        if dt == dtypes.float16:
            return b.fpext(v, ir.FloatType())
        return b.bitcast(b.shl(b.zext(v, ir.IntType(32)), ir.Constant(ir.IntType(32), 16)), ir.FloatType())

    def narrow_half(self, v: ir.Value, dt: DType) -> ir.Value:
        """float32 to float16/bfloat16 memory form, rounding to nearest even (NaN stays NaN)."""
        b = self.b
        if dt == dtypes.float16:
            return b.fptrunc(v, ir.HalfType())
        i32 = ir.IntType(32)
        bits = b.bitcast(v, i32)
        lsb = b.and_(b.lshr(bits, ir.Constant(i32, 16)), ir.Constant(i32, 1))
        rounded = b.lshr(b.add(bits, b.add(ir.Constant(i32, 0x7FFF), lsb)), ir.Constant(i32, 16))
        nan = b.fcmp_unordered("uno", v, v)
        quiet = b.or_(b.lshr(bits, ir.Constant(i32, 16)), ir.Constant(i32, 0x40))
        return b.trunc(b.select(nan, quiet, rounded), ir.IntType(16))

    def convert(self, x: ir.Value, src: DType, dst: DType) -> ir.Value:
        b = self.b
        if src == dst:
            return x
        if dst in HALF:  # compute in float32, then round to the half type's precision
            if src in HALF:
                x, src = self.widen_half(self.narrow_half(x, dst), dst), dst
                return x
            x = self.convert(x, src, dtypes.float32)
            return self.widen_half(self.narrow_half(x, dst), dst)
        if src in HALF:
            src = dtypes.float32
            if src == dst:
                return x
        to = value_type(dst)
        if dst == dtypes.bool_:
            return b.fcmp_unordered("!=", x, _const(src, 0)) if src.is_float else b.icmp_unsigned("!=", x, _const(src, 0))
        if src == dtypes.bool_:
            return b.uitofp(x, to) if dst.is_float else b.zext(x, to)
        if src.is_float and dst.is_float:
            return b.fpext(x, to) if dst.itemsize > src.itemsize else b.fptrunc(x, to)
        if src.is_float:
            wide = b.fptosi(x, I64)
            return wide if dst == dtypes.int64 else b.trunc(wide, to)
        if dst.is_float:
            return b.uitofp(x, to) if src == dtypes.uint32 else b.sitofp(x, to)
        if dst.itemsize > src.itemsize:
            return b.zext(x, to) if src == dtypes.uint32 else b.sext(x, to)
        return b.trunc(x, to) if dst.itemsize < src.itemsize else x


def build_module(funcs: list[LoopFunc], name: str = "tensorc") -> ir.Module:
    """One LLVM module holding every kernel of a program."""
    module = ir.Module(name=name)
    for f in funcs:
        FuncEmitter(module, f).emit()
    return module
