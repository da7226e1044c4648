"""Flash-style attention for the LLVM backend: ``fused_attention`` and ``fused_attention_bwd``, float32 and float64.

Native functions (all shapes and strides at run time, in an ``i64`` parameter array ``prm``)::

    void attention_fwd_f32(ptr q, ptr k, ptr v, ptr mask, ptr o, ptr lse, ptr prm, double scale)
    void attention_bwd_f32(ptr do, ptr q, ptr k, ptr v, ptr o, ptr lse, ptr mask,
                           ptr dq, ptr dk, ptr dv, ptr dmask, ptr prm, double scale)

Operands are ``(N0, N1, rows, features)`` with element strides per dim (the leading dims of the
op merged into at most two, so ``q.transpose(0, 2, 1, 3)`` views of one ``(B, T, 3, H, D)``
buffer are read in place); the mask's strides are in bytes; outputs are contiguous. Statistics
are kept in the element type (the op's stats dtype: float32 for float32, float64 for float64).

Forward (flash attention, one pass over the keys per query tile): for each batch item the
keys are transposed once into ``Kt`` (E x S, in a per-thread scratch), then for each tile of
``BR`` query rows and each block of ``BC`` keys, the score tile ``S = q_tile Kt[:, block]`` comes
from a register-tiled micro-kernel (``MR`` rows x ``NR`` vectors of FMA accumulators, the q
elements broadcast from rows read in place), then the online softmax updates each row's running
max ``m`` and sum ``l`` (scores scaled, masked by causality, a bool mask or an additive mask,
exponentials by a vectorized polynomial, :meth:`_Emit.exp`), rescales the row's output
accumulator by ``exp(m_old - m_new)`` and adds ``P V[block]`` with the same micro-kernel. Causal
key blocks past the diagonal are never visited, and inside a diagonal tile the micro-kernels skip
the ``MR``-row strips' columns (or contraction steps) that are all masked. Finally ``o = O / l``
and ``lse = m + log l`` (a row with every key masked gets ``o = 0``, ``lse = -inf``).

Backward (flash-attention-2 without the T x T matrices): per batch item, ``Kt`` and ``Vt`` are
transposed once and ``dK``, ``dV`` accumulate in the thread's scratch; for each query tile,
``delta = rowsum(do * o)`` and, for each key block, ``S = q Kt``, ``dP = do Vt`` (micro-kernel),
``P = exp(S * scale + mask - lse)``, ``dS = P (dP - delta)`` (elementwise), then
``dV += Pᵀ do``, ``dK += dSᵀ q`` and ``dQ_tile += dS K`` (micro-kernel again, reading ``P``/``dS``
transposed through strides); ``dq``, ``dk`` are scaled by ``scale`` on the way out. The add-mask
gradient ``dmask = dS`` is written tile by tile into a zero-filled output. A thread owns whole
batch items, so ``dK``/``dV`` need no atomics. Memory: tile-sized scratch plus the per-item
``Kt``, ``Vt``, ``dK``, ``dV`` (S x E each), never L x S.

Threads (libgomp, :func:`~tensorc.backends.llvm.parallel.parallel_for`): the work items are batch
items (forward: batch item x query chunk, when there are too few batch items for the threads)
taken one at a time from a shared atomic counter, so a thread slowed by another process on its
core does not hold the others up; each thread allocates its scratch once per call. Small
problems run on the calling thread.

Vector width: ``library.lanes(itemsize)`` (8 f32 lanes with AVX2, 16 with AVX-512); the
micro-kernel is 6 rows x 2 vectors (12 accumulators) with 16 vector registers, 6 x 3 with 32;
tiles are 48 x 48. Where a micro-kernel reads k, v, q or do rows as vectors (``B`` operands)
and the feature dim is strided or not a multiple of the lanes, the rows are copied per batch
item into zero-padded scratch; q and do with a strided feature dim are made contiguous first.

>>> import numpy as np
>>> from tensorc.ir.node import Attrs, Node
>>> from tensorc.ir import dtypes
>>> q = np.ones((1, 2, 3), np.float32)
>>> node = Node("fused_attention", (), Attrs(dict(scale=1.0, causal=True, mask_kind="none")),
...             ((1, 2, 3), (1, 2)), (dtypes.float32, dtypes.float32))
>>> class Ctx: pass
>>> ctx = Ctx(); ctx.node = node
>>> o, lse = attention_forward(ctx, q, q, q)
>>> o.shape, lse.dtype
((1, 2, 3), dtype('float32'))
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import llvmlite.ir as ir
import numpy as np

from .. import library
from ..parallel import counted_loop, num_threads, parallel_for

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F32, F64 = ir.FloatType(), ir.DoubleType()
PTR = ir.PointerType()
VOID = ir.VoidType()

MR = 6  #: rows of the micro-kernel's register tile
_BIG = 1 << 40  #: "no limit" for the micro-kernel's causal bounds
_KINDS = ("none", "bool", "add")
_SERIAL_WORK = 1 << 18  #: multiply-adds below which a call runs on the calling thread

# Forward parameter slots (prm[i]).
_FWD = ("N1", "L", "S", "E", "Ev", "causal", "kind", "CR", "nq", "items", "serial",
        "q0", "q1", "qr", "qc", "k0", "k1", "kr", "kc", "v0", "v1", "vr", "vc", "m0", "m1", "mr", "v_direct")
# Backward parameter slots.
_BWD = ("N1", "L", "S", "E", "Ev", "causal", "kind", "items", "serial",
        "q0", "q1", "qr", "qc", "k0", "k1", "kr", "kc", "v0", "v1", "vr", "vc",
        "d0", "d1", "dr", "dc", "o0", "o1", "or", "oc", "m0", "m1", "mr", "l0", "l1", "lr",
        "q_direct", "k_direct", "d_direct")


def _nr() -> int:
    """Vectors per micro-kernel row: 2 with 16 vector registers (12 accumulators), 3 with 32 (AVX-512)."""
    return 3 if library.host_vector_bits() >= 512 else 2


def block_size(itemsize: int) -> int:
    """Query rows per tile and keys per block: a multiple of MR and of the lanes (48 for 8 or 16 lanes)."""
    unit = math.lcm(MR, library.lanes(itemsize))
    return unit * max(1, -(-48 // unit))


def _sfx(t: ir.Type) -> str:
    """The type's suffix in overloaded intrinsic names (``v8f32``, ``f64``, ``i8``)."""
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{_sfx(t.element)}"
    return "f32" if t == F32 else "f64" if t == F64 else f"i{t.width}"


class _Emit:
    """Helpers to emit one function body with builder ``b`` over element type ``ft`` and ``w`` lanes."""

    def __init__(self, b: ir.IRBuilder, ft: ir.Type, w: int) -> None:
        self.b, self.ft, self.w = b, ft, w
        self.vt = ir.VectorType(ft, w)
        self.esize = 4 if ft == F32 else 8
        self.module = b.module
        self._entry = b.function.entry_basic_block
        if b.block is self._entry:  # keep the entry block for allocas only: code continues in a new block
            code = b.function.append_basic_block("code")
            b.branch(code)
            b.position_at_end(code)

    # ---- constants and variables
    def i64(self, v: int) -> ir.Constant:
        return ir.Constant(I64, v)

    def const(self, t: ir.Type, v: float) -> ir.Constant:
        if isinstance(t, ir.VectorType):
            return ir.Constant(t, [v] * t.count)
        return ir.Constant(t, v)

    def var(self, t: ir.Type, init: ir.Value | None = None) -> ir.Value:
        """A stack slot in the entry block (promoted to a register by mem2reg)."""
        eb = ir.IRBuilder(self._entry)
        eb.position_before(self._entry.terminator)
        slot = eb.alloca(t)
        slot.type = PTR
        if init is not None:
            self.b.store(init, slot)
        return slot

    def get(self, slot: ir.Value, t: ir.Type) -> ir.Value:
        return self.b.load(slot, typ=t)

    # ---- integer arithmetic
    def imin(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed("<", a, b), a, b)

    def imax(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed(">", a, b), a, b)

    def roundup(self, a: ir.Value, m: int) -> ir.Value:
        return self.b.mul(self.b.sdiv(self.b.add(a, self.i64(m - 1)), self.i64(m)), self.i64(m))

    # ---- memory
    def at(self, p: ir.Value, idx: ir.Value, t: ir.Type | None = None) -> ir.Value:
        return self.b.gep(p, [idx], source_etype=t or self.ft)

    def ld(self, p: ir.Value, idx: ir.Value) -> ir.Value:
        return self.b.load(self.at(p, idx), typ=self.ft, align=self.esize)

    def st(self, v: ir.Value, p: ir.Value, idx: ir.Value) -> None:
        self.b.store(v, self.at(p, idx), align=self.esize)

    def vld(self, p: ir.Value, idx: ir.Value, t: ir.Type | None = None) -> ir.Value:
        t = t or self.vt
        return self.b.load(self.at(p, idx, t.element), typ=t, align=1 if t.element == I8 else self.esize)

    def vst(self, v: ir.Value, p: ir.Value, idx: ir.Value) -> None:
        self.b.store(v, self.at(p, idx), align=self.esize)

    def splat(self, x: ir.Value) -> ir.Value:
        t = ir.VectorType(x.type, self.w)
        v = self.b.insert_element(ir.Constant(t, ir.Undefined), x, ir.Constant(I32, 0))
        return self.b.shuffle_vector(v, ir.Constant(t, ir.Undefined), ir.Constant(ir.VectorType(I32, self.w), [0] * self.w))

    def iota(self) -> ir.Constant:
        return ir.Constant(ir.VectorType(I32, self.w), list(range(self.w)))

    # ---- calls
    def call(self, name: str, ret: ir.Type, args: list[ir.Value], fastmath: tuple[str, ...] = ()) -> ir.Value:
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret, [a.type for a in args]), name=name)
        return self.b.call(fn, args, fastmath=fastmath)

    def intr(self, name: str, *args: ir.Value) -> ir.Value:
        return self.call(f"llvm.{name}.{_sfx(args[0].type)}", args[0].type, list(args))

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        return self.intr("fma", a, b, c)

    def fmax(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.intr("maxnum", a, b)

    def hmax(self, v: ir.Value) -> ir.Value:
        return self.call(f"llvm.vector.reduce.fmax.{_sfx(v.type)}", self.ft, [v])

    def hsum(self, v: ir.Value) -> ir.Value:
        return self.call(f"llvm.vector.reduce.fadd.{_sfx(v.type)}", self.ft, [self.const(self.ft, 0.0), v],
                         fastmath=("reassoc", "nsz"))

    def memzero(self, p: ir.Value, n_elems: ir.Value) -> None:
        self.call("llvm.memset.p0.i64", VOID, [p, ir.Constant(I8, 0), self.b.mul(n_elems, self.i64(self.esize)),
                                               ir.Constant(I1, 0)])

    def loop(self, start: ir.Value, stop: ir.Value, body: Any, step: int | ir.Value = 1, name: str = "i") -> None:
        counted_loop(self.b, start, stop, body, step=step, name=name)

    # ---- exp
    def exp(self, x: ir.Value) -> ir.Value:
        """e^x for a scalar or vector of ``ft``: n = round(x log2 e) by the shifter trick (adding 1.5 * 2^23,
        or 1.5 * 2^52 for f64, plus the exponent bias leaves n + bias in the low mantissa bits, which a
        shift moves into the exponent field of 2^n),
        r = x - n ln2 (Cody-Waite, two FMAs), e^r by its Taylor polynomial (degree 7 for f32, 12 for f64),
        times 2^n. 0 below the smallest normal result (so exp(-inf) = 0); inputs are clamped above where
        2^n is still finite (softmax arguments are <= 0); NaN stays NaN."""
        b, t = self.b, x.type
        vec = isinstance(t, ir.VectorType)
        if self.ft == F32:
            lo, hi, ln2hi, ln2lo, degree, bias, mant, it = -87.0, 88.0, 0.693145751953125, 1.428606765330187e-06, 7, 127, 23, I32
        else:
            lo, hi, ln2hi, ln2lo, degree, bias, mant, it = (-708.0, 709.0, 6.93147180369123816490e-01,
                                                           1.90821492927058770002e-10, 12, 1023, 52, I64)

        def c(v: float) -> ir.Constant:
            return self.const(t, v)

        shifter = 1.5 * 2.0 ** mant + bias
        small = b.fcmp_ordered("<", x, c(lo))
        xc = b.select(small, c(lo), x)
        xc = b.select(b.fcmp_ordered(">", xc, c(hi)), c(hi), xc)
        nb = self.fma(xc, c(1.4426950408889634), c(shifter))  # shifter + n: rounding to an integer gives n
        n = b.fsub(nb, c(shifter))
        r = self.fma(n, c(-ln2hi), xc)
        r = self.fma(n, c(-ln2lo), r)
        p = c(1 / math.factorial(degree))
        for k in range(degree - 1, -1, -1):
            p = self.fma(p, r, c(1 / math.factorial(k)))
        ity = ir.VectorType(it, self.w) if vec else it
        two_n = b.bitcast(b.shl(b.bitcast(nb, ity), self.const(ity, mant)), t)
        return b.select(small, c(0.0), b.fmul(p, two_n))


def _function(module: ir.Module, name: str, args: list[ir.Type], internal: bool = True) -> ir.Function:
    fn = ir.Function(module, ir.FunctionType(VOID, args), name=name)
    if internal:  # called once per tile: inlining them would only multiply the compile time
        fn.linkage = "internal"
        fn.attributes.add("noinline")
    fn.attributes.add("nounwind")
    fn.append_basic_block("entry")
    return fn


# ----------------------------------------------------------------------------- micro-kernel


def _build_gemm(module: ir.Module, name: str, ft: ir.Type, w: int, a_rs: int | None = None,
                a_cs: int | None = None) -> ir.Function:
    """``C[M x N] (+)= A[M x K] B[K x N]`` on MR x NR-vector register tiles.

    ``void gemm(C, ldc, A, a_rs, a_cs, B, ldb, M, Mv, N, K, accumulate, nd, khd, kld)``: M is a
    multiple of MR and N of the lane count (C and B are padded there); A's rows at or past ``Mv``
    are read as row ``Mv - 1`` (so A may be an unpadded user operand). Causal bounds for the
    MR-row strip at ``m0``: columns below ``m0 + MR + nd`` (rounded up to a vector), contraction
    steps in ``[m0 + kld, m0 + MR + khd)``; pass ``_BIG``/``-_BIG`` for none. ``a_rs``/``a_cs``, when
    given, are A's strides as constants (the arguments are then ignored): with a unit stride the
    broadcasts use plain indexed addressing.
    """
    nr = _nr()
    fn = _function(module, name, [PTR, I64, PTR, I64, I64, PTR, I64, I64, I64, I64, I64, I64, I64, I64, I64])
    for i in (0, 2, 5):
        fn.args[i].add_attribute("noalias")
    C, ldc, A, ars, acs, B, ldb, M, Mv, N, K, accum, nd, khd, kld = fn.args
    b = ir.IRBuilder(fn.entry_basic_block)
    e = _Emit(b, ft, w)
    ars = ars if a_rs is None else e.i64(a_rs)
    acs = acs if a_cs is None else e.i64(a_cs)
    acc = [[e.var(e.vt) for _ in range(nr)] for _ in range(MR)]
    zero = e.const(e.vt, 0.0)
    do_acc = b.icmp_signed("!=", accum, e.i64(0))

    def strip(m0: ir.Value) -> None:
        n_end = e.roundup(e.imin(N, e.imax(b.add(b.add(m0, e.i64(MR)), nd), e.i64(0))), w)
        k_lo = e.imax(e.i64(0), b.add(m0, kld))
        k_hi = e.imin(K, b.add(b.add(m0, e.i64(MR)), khd))
        last = b.sub(Mv, e.i64(1))
        rows = [e.at(A, b.mul(e.imin(b.add(m0, e.i64(r)), last), ars)) for r in range(MR)]
        cp = e.at(C, b.mul(m0, ldc))

        def tile(nv: int) -> Any:
            def body(n0: ir.Value) -> None:
                cidx = [[b.add(b.add(b.mul(e.i64(r), ldc), n0), e.i64(c * w)) for c in range(nv)] for r in range(MR)]
                for r in range(MR):
                    for c in range(nv):
                        b.store(b.select(do_acc, e.vld(cp, cidx[r][c]), zero), acc[r][c])

                def step(k: ir.Value) -> None:
                    bp = e.at(B, b.add(b.mul(k, ldb), n0))
                    bv = [e.vld(bp, e.i64(c * w)) for c in range(nv)]
                    koff = b.mul(k, acs)
                    for r in range(MR):
                        a = e.splat(e.ld(rows[r], koff))
                        for c in range(nv):
                            b.store(e.fma(a, bv[c], e.get(acc[r][c], e.vt)), acc[r][c])

                # the pipeline does not unroll: two contraction steps per iteration
                pairs = b.add(k_lo, b.mul(b.sdiv(e.imax(b.sub(k_hi, k_lo), e.i64(0)), e.i64(2)), e.i64(2)))

                def two(k: ir.Value) -> None:
                    step(k)
                    step(b.add(k, e.i64(1)))

                e.loop(k_lo, pairs, two, step=2, name="k2")
                e.loop(pairs, k_hi, step, name="k")
                for r in range(MR):
                    for c in range(nv):
                        e.vst(e.get(acc[r][c], e.vt), cp, cidx[r][c])
            return body

        full = b.mul(b.sdiv(n_end, e.i64(nr * w)), e.i64(nr * w))
        e.loop(e.i64(0), full, tile(nr), step=nr * w, name="n")
        e.loop(full, n_end, tile(1), step=w, name="n1")

    e.loop(e.i64(0), M, strip, step=MR, name="m")
    b.ret_void()
    return fn


def _gemms(module: ir.Module, ft: ir.Type, w: int) -> tuple[ir.Function, ir.Function, ir.Function]:
    """The micro-kernels the forward and backward functions of one dtype share (built once per module):
    A with unit column stride (q and do rows, read in place), A = a score tile (row stride = the
    block size), A = a transposed score tile (``Pᵀ``, ``dSᵀ``)."""
    blk = block_size(4 if ft == F32 else 8)
    out = []
    for suffix, a_rs, a_cs in (("rows", None, 1), ("tile", blk, 1), ("tile_t", 1, blk)):
        name = f"attention_{_sfx(ft)}.gemm_{suffix}"
        fn = module.globals.get(name)
        out.append(fn if fn is not None else _build_gemm(module, name, ft, w, a_rs, a_cs))
    return out[0], out[1], out[2]


# ----------------------------------------------------------------------------- masked score rows


def _columns(e: _Emit, ncols: ir.Value, limr: ir.Value, full: Any, partial: Any, rest: Any) -> None:
    """Visit a row's column vectors ``[0, ncols)``: ``full(c)`` where every lane is below ``limr``,
    ``partial(c, lanes_valid)`` for the vector holding ``limr``, ``rest(c)`` past it."""
    b = e.b
    nfull = b.mul(b.sdiv(e.imin(limr, ncols), e.i64(e.w)), e.i64(e.w))
    e.loop(e.i64(0), nfull, full, step=e.w, name="cf")
    has_partial = b.and_(b.icmp_signed("<", nfull, ncols), b.icmp_signed(">", limr, nfull))
    with b.if_then(has_partial):
        n = b.trunc(b.sub(limr, nfull), I32)
        partial(nfull, b.icmp_signed("<", e.iota(), e.splat(n)))
    after = b.select(has_partial, b.add(nfull, e.i64(e.w)), nfull)
    e.loop(after, ncols, rest, step=e.w, name="cr")


def _mask_vec(e: _Emit, kind: str, mrow: ir.Value, c: ir.Value, valid: ir.Value | None,
              limr: ir.Value) -> tuple[ir.Value | None, ir.Value | None]:
    """(lanes kept by a bool mask, additive mask values) for the vector at column ``c`` of a mask row.
    In a partial vector (``valid`` given) lanes past ``limr`` read the last valid element instead."""
    b = e.b
    if kind == "none":
        return None, None
    et = I8 if kind == "bool" else e.ft
    if valid is None:
        vals = e.vld(mrow, c, ir.VectorType(et, e.w)) if kind == "add" else \
            b.load(e.at(mrow, c, I8), typ=ir.VectorType(I8, e.w), align=1)
    else:
        vals = ir.Constant(ir.VectorType(et, e.w), ir.Undefined)
        last = b.sub(limr, e.i64(1))
        for lane in range(e.w):
            idx = e.imin(b.add(c, e.i64(lane)), last)
            x = b.load(e.at(mrow, idx, et), typ=et, align=1 if et == I8 else e.esize)
            vals = b.insert_element(vals, x, ir.Constant(I32, lane))
    if kind == "bool":
        return b.icmp_unsigned("!=", vals, ir.Constant(ir.VectorType(I8, e.w), [0] * e.w)), None
    return None, vals


def _build_fwd_softmax(module: ir.Module, name: str, ft: ir.Type, w: int, kind: str) -> ir.Function:
    """Online-softmax step over one score tile (in place: scores become probabilities).

    ``void f(St, ldS, Mp, ncols, j0, lim, mtile, m_sr, scale, mstat, lstat, Ot, ldo)``: row ``r``'s
    keys ``j0 + c`` are valid below ``lim[r]``; the row's max/sum statistics are updated and its
    output accumulator ``Ot[r]`` (``ldo`` elements) rescaled.
    """
    fn = _function(module, name, [PTR, I64, I64, I64, I64, PTR, PTR, I64, ft, PTR, PTR, PTR, I64])
    St, ldS, Mp, ncols, j0, lim, mtile, msr, scale, mstat, lstat, Ot, ldo = fn.args
    b = ir.IRBuilder(fn.entry_basic_block)
    e = _Emit(b, ft, w)
    vt = e.vt
    ninf, vninf, vzero = e.const(ft, -math.inf), e.const(vt, -math.inf), e.const(vt, 0.0)
    vmax = e.var(vt)
    vsum = e.var(vt)
    vscale = e.splat(scale)

    def row(r: ir.Value) -> None:
        limr = b.sub(b.load(e.at(lim, r, I64), typ=I64), j0)
        srow = e.at(St, b.mul(r, ldS))
        with b.if_else(b.icmp_signed("<=", limr, e.i64(0))) as (empty, live):
            with empty:
                e.loop(e.i64(0), ncols, lambda c: e.vst(vzero, srow, c), step=w, name="z")
            with live:
                mrow = e.at(mtile, b.mul(r, msr), I8)  # mask row strides are in bytes
                b.store(vninf, vmax)

                def score(c: ir.Value, valid: ir.Value | None) -> None:
                    x = b.fmul(e.vld(srow, c), vscale)
                    keep, add = _mask_vec(e, kind, mrow, c, valid, limr)
                    if add is not None:
                        x = b.fadd(x, add)
                    if valid is not None:
                        keep = valid if keep is None else b.and_(keep, valid)
                    if keep is not None:
                        x = b.select(keep, x, vninf)
                    e.vst(x, srow, c)
                    b.store(e.fmax(e.get(vmax, vt), x), vmax)

                _columns(e, ncols, limr, lambda c: score(c, None), score, lambda c: e.vst(vninf, srow, c))
                m_old = e.ld(mstat, r)
                m_new = e.fmax(m_old, e.hmax(e.get(vmax, vt)))
                mu = b.select(b.fcmp_ordered("==", m_new, ninf), e.const(ft, 0.0), m_new)
                alpha = e.exp(b.fsub(m_old, mu))
                vmu = e.splat(mu)
                b.store(vzero, vsum)

                def prob(c: ir.Value) -> None:
                    p = e.exp(b.fsub(e.vld(srow, c), vmu))
                    e.vst(p, srow, c)
                    b.store(b.fadd(e.get(vsum, vt), p), vsum)

                e.loop(e.i64(0), ncols, prob, step=w, name="p")
                e.st(b.fadd(b.fmul(e.ld(lstat, r), alpha), e.hsum(e.get(vsum, vt))), lstat, r)
                e.st(m_new, mstat, r)
                with b.if_then(b.fcmp_unordered("!=", alpha, e.const(ft, 1.0))):
                    orow = e.at(Ot, b.mul(r, ldo))
                    va = e.splat(alpha)
                    e.loop(e.i64(0), ldo, lambda c: e.vst(b.fmul(e.vld(orow, c), va), orow, c), step=w, name="o")

    e.loop(e.i64(0), Mp, row, name="r")
    b.ret_void()
    return fn


def _build_bwd_elementwise(module: ir.Module, name: str, ft: ir.Type, w: int, kind: str) -> ir.Function:
    """``P = exp(S * scale + mask - lse)``, ``dS = P (dP - delta)`` over one tile, in place (S -> P, dP -> dS).

    ``void f(St, dPt, ldS, Mp, ncols, j0, lim, lse, delta, mtile, m_sr, dmtile, dm_ld, scale)``;
    with an additive mask, ``dS`` is also stored to the valid columns of ``dmtile``.
    """
    fn = _function(module, name, [PTR, PTR, I64, I64, I64, I64, PTR, PTR, PTR, PTR, I64, PTR, I64, ft])
    St, dPt, ldS, Mp, ncols, j0, lim, lse, delta, mtile, msr, dmtile, dmld, scale = fn.args
    b = ir.IRBuilder(fn.entry_basic_block)
    e = _Emit(b, ft, w)
    vt = e.vt
    vzero = e.const(vt, 0.0)
    vscale = e.splat(scale)
    tmp = e.var(ir.ArrayType(ft, w))

    def row(r: ir.Value) -> None:
        limr = b.sub(b.load(e.at(lim, r, I64), typ=I64), j0)
        srow = e.at(St, b.mul(r, ldS))
        drow = e.at(dPt, b.mul(r, ldS))

        def zero(c: ir.Value) -> None:
            e.vst(vzero, srow, c)
            e.vst(vzero, drow, c)

        with b.if_else(b.icmp_signed("<=", limr, e.i64(0))) as (empty, live):
            with empty:
                e.loop(e.i64(0), ncols, zero, step=w, name="z")
            with live:
                mrow = e.at(mtile, b.mul(r, msr), I8)  # mask row strides are in bytes
                dmrow = e.at(dmtile, b.mul(r, dmld))
                vl = e.splat(e.ld(lse, r))
                vd = e.splat(e.ld(delta, r))

                def grad(c: ir.Value, valid: ir.Value | None) -> None:
                    x = b.fmul(e.vld(srow, c), vscale)
                    keep, add = _mask_vec(e, kind, mrow, c, valid, limr)
                    if add is not None:
                        x = b.fadd(x, add)
                    if valid is not None:
                        keep = valid if keep is None else b.and_(keep, valid)
                    p = e.exp(b.fsub(x, vl))
                    ds = b.fmul(p, b.fsub(e.vld(drow, c), vd))
                    if keep is not None:
                        p = b.select(keep, p, vzero)
                        ds = b.select(keep, ds, vzero)
                    e.vst(p, srow, c)
                    e.vst(ds, drow, c)
                    if kind == "add":
                        if valid is None:
                            e.vst(ds, dmrow, c)
                        else:
                            b.store(ds, tmp)
                            e.loop(c, limr, lambda j: e.st(e.ld(tmp, b.sub(j, c)), dmrow, j), name="dm")

                _columns(e, ncols, limr, lambda c: grad(c, None), grad, zero)

    e.loop(e.i64(0), Mp, row, name="r")
    b.ret_void()
    return fn


# ----------------------------------------------------------------------------- copies


def _transpose(e: _Emit, dst: ir.Value, ld: ir.Value, src: ir.Value, s_row: ir.Value, s_col: ir.Value,
               rows: ir.Value, cols: ir.Value) -> None:
    """``dst[c * ld + r] = src[r * s_row + c * s_col]`` for r < rows, c < cols: lanes x lanes blocks in
    registers when the source rows are contiguous, element by element for the edges or other strides."""
    b, w = e.b, e.w
    rb = b.mul(b.sdiv(rows, e.i64(w)), e.i64(w))
    cb = b.mul(b.sdiv(cols, e.i64(w)), e.i64(w))
    with b.if_else(b.icmp_signed("==", s_col, e.i64(1))) as (unit, other):
        with unit:
            def block(r0: ir.Value, c0: ir.Value) -> None:
                vecs = [e.vld(src, b.add(b.mul(b.add(r0, e.i64(i)), s_row), c0)) for i in range(w)]
                for i, vec in enumerate(_transpose_regs(e, vecs)):
                    e.vst(vec, dst, b.add(b.mul(b.add(c0, e.i64(i)), ld), r0))

            e.loop(e.i64(0), rb, lambda r0: e.loop(e.i64(0), cb, lambda c0: block(r0, c0), step=w, name="tbc"),
                   step=w, name="tbr")
            # the edges, element by element: a transposed copy is a row copy with the strides swapped
            _copy_rows(e, e.at(dst, b.mul(cb, ld)), ld, e.at(src, cb), s_col, s_row, b.sub(cols, cb), rb, pad=False)
            _copy_rows(e, e.at(dst, rb), ld, e.at(src, b.mul(rb, s_row)), s_col, s_row, cols, b.sub(rows, rb), pad=False)
        with other:
            _copy_rows(e, dst, ld, src, s_col, s_row, cols, rows, pad=False)


def _transpose_regs(e: _Emit, vecs: list[ir.Value]) -> list[ir.Value]:
    """The transpose of a lanes x lanes block held in ``vecs`` (rows), by log2(lanes) perfect-shuffle stages:
    row pairs ``(i, i + lanes/2)`` are interleaved, low halves into ``2i``, high halves into ``2i + 1``."""
    w, b = e.w, e.b
    h = w // 2
    lo = ir.Constant(ir.VectorType(I32, w), [j // 2 + (w if j % 2 else 0) for j in range(w)])
    hi = ir.Constant(ir.VectorType(I32, w), [h + j // 2 + (w if j % 2 else 0) for j in range(w)])
    for _ in range(w.bit_length() - 1):
        nxt = []
        for i in range(h):
            nxt += [b.shuffle_vector(vecs[i], vecs[i + h], lo), b.shuffle_vector(vecs[i], vecs[i + h], hi)]
        vecs = nxt
    return vecs


def _copy_rows(e: _Emit, dst: ir.Value, ld: ir.Value, src: ir.Value, s_row: ir.Value, s_col: ir.Value,
               rows: ir.Value, cols: ir.Value, pad: bool = True) -> None:
    """``dst[r * ld + c] = src[r * s_row + c * s_col]`` for c < cols, and (``pad``) 0 for cols <= c < ld."""
    b = e.b

    def row(r: ir.Value) -> None:
        sp = e.at(src, b.mul(r, s_row))
        dp = e.at(dst, b.mul(r, ld))
        e.loop(e.i64(0), cols, lambda c: e.st(e.ld(sp, b.mul(c, s_col)), dp, c), name="cc")
        if pad:
            e.loop(cols, ld, lambda c: e.st(e.const(e.ft, 0.0), dp, c), name="cz")

    e.loop(e.i64(0), rows, row, name="cr")


class _Params:
    """Loads of the ``i64`` parameter array by slot name."""

    def __init__(self, e: _Emit, prm: ir.Value, names: tuple[str, ...]) -> None:
        self.vals = {n: e.b.load(e.at(prm, e.i64(i), I64), typ=I64) for i, n in enumerate(names)}

    def __getitem__(self, name: str) -> ir.Value:
        return self.vals[name]


def _scratch(e: _Emit, sizes: list[ir.Value]) -> tuple[ir.Value, list[ir.Value]]:
    """One zero-filled allocation split into arrays of ``sizes`` elements (each rounded to 16 elements)."""
    b = e.b
    offs, total = [], e.i64(0)
    for n in sizes:
        offs.append(total)
        total = b.add(total, e.roundup(n, 16))
    base = e.call("calloc", PTR, [b.add(total, e.i64(16)), e.i64(e.esize)])
    return base, [e.at(base, o) for o in offs]


def _batch_ptr(e: _Emit, base: ir.Value, b0: ir.Value, b1: ir.Value, s0: ir.Value, s1: ir.Value, t: ir.Type) -> ir.Value:
    b = e.b
    return e.at(base, b.add(b.mul(b0, s0), b.mul(b1, s1)), t)


# ----------------------------------------------------------------------------- forward


def _build_forward(module: ir.Module, name: str, ft: ir.Type, w: int) -> None:
    gemm_u, gemm_p, _ = _gemms(module, ft, w)
    softmax = [_build_fwd_softmax(module, f"{name}.softmax_{k}", ft, w, k) for k in _KINDS]
    fn = _function(module, name, [PTR] * 7 + [F64], internal=False)
    q, k, v, mask, o, lse, prm, scale64 = fn.args
    b = ir.IRBuilder(fn.entry_basic_block)
    e = _Emit(b, ft, w)
    scale = b.fptrunc(scale64, ft) if ft == F32 else scale64
    P = _Params(e, prm, _FWD)
    serial = b.icmp_signed("!=", P["serial"], e.i64(0))

    def body(b: ir.IRBuilder, start: ir.Value, stop: ir.Value, vals: list[ir.Value]) -> None:
        e = _Emit(b, ft, w)
        q, k, v, mask, o, lse, prm, scale, counter = vals
        P = _Params(e, prm, _FWD)
        L, S, E, Ev, nq, CR, N1 = (P[x] for x in ("L", "S", "E", "Ev", "nq", "CR", "N1"))
        BR = BC = e.i64(block_size(e.esize))
        causal = b.icmp_signed("!=", P["causal"], e.i64(0))
        one64 = e.i64(1)
        kind = P["kind"]
        v_direct = b.icmp_signed("!=", P["v_direct"], e.i64(0))
        Sp = b.mul(b.sdiv(b.add(S, b.sub(BC, e.i64(1))), BC), BC)
        Evp = e.roundup(Ev, w)
        big, nbig = e.i64(_BIG), e.i64(-_BIG)
        base, (Kt, Vp, St, Ot, mstat, lstat, lim) = _scratch(e, [
            b.mul(E, Sp), b.select(v_direct, e.i64(0), b.mul(Sp, Evp)), b.mul(BR, BC), b.mul(BR, Evp), BR, BR,
            b.mul(BR, e.i64(8 // e.esize))])

        def item(it: ir.Value) -> None:
            # the last query chunks (the most keys under a causal mask) first, for the dynamic schedule
            batch = b.sdiv(P["items"], nq)
            bidx = b.srem(it, batch)
            chunk = b.sub(b.sub(nq, e.i64(1)), b.sdiv(it, batch))
            b0, b1 = b.sdiv(bidx, N1), b.srem(bidx, N1)
            qb = _batch_ptr(e, q, b0, b1, P["q0"], P["q1"], ft)
            kb = _batch_ptr(e, k, b0, b1, P["k0"], P["k1"], ft)
            vb = _batch_ptr(e, v, b0, b1, P["v0"], P["v1"], ft)
            mb = _batch_ptr(e, mask, b0, b1, P["m0"], P["m1"], I8)  # mask strides are in bytes
            r_lo = b.mul(chunk, CR)
            r_hi = e.imin(L, b.add(r_lo, CR))
            kmax = b.select(causal, e.imin(S, r_hi), S)
            _transpose(e, Kt, Sp, kb, P["kr"], P["kc"], kmax, E)
            with b.if_then(b.not_(v_direct)):
                _copy_rows(e, Vp, Evp, vb, P["vr"], P["vc"], kmax, Ev)
            vB = b.select(v_direct, vb, Vp)
            ldv = b.select(v_direct, P["vr"], Evp)

            def tile(i0: ir.Value) -> None:
                rv = e.imin(BR, b.sub(r_hi, i0))
                Mp = e.roundup(rv, MR)
                kend = b.select(causal, e.imin(S, b.add(i0, rv)), S)

                def init(r: ir.Value) -> None:
                    e.st(e.const(ft, -math.inf), mstat, r)
                    e.st(e.const(ft, 0.0), lstat, r)
                    row_lim = b.select(causal, e.imin(S, b.add(b.add(i0, r), e.i64(1))), S)
                    b.store(b.select(b.icmp_signed("<", r, rv), row_lim, e.i64(0)), e.at(lim, r, I64))

                e.loop(e.i64(0), Mp, init, name="init")
                e.memzero(Ot, b.mul(Mp, Evp))
                qt = e.at(qb, b.mul(i0, P["qr"]))
                elsize = b.select(b.icmp_signed("==", kind, e.i64(1)), e.i64(1), e.i64(e.esize))
                mt = e.at(mb, b.mul(i0, P["mr"]), I8)

                def block(j0: ir.Value) -> None:
                    cols = e.imin(BC, b.sub(kend, j0))
                    ncols = e.roundup(cols, w)
                    diag = b.select(causal, b.sub(i0, j0), big)
                    b.call(gemm_u, [St, BC, qt, P["qr"], one64, e.at(Kt, j0), Sp, Mp, rv, ncols, E, e.i64(0), diag, big, nbig])
                    mrow = e.at(mt, b.mul(j0, elsize), I8)
                    args = [St, BC, Mp, ncols, j0, lim, mrow, P["mr"], scale, mstat, lstat, Ot, Evp]
                    with b.if_else(b.icmp_signed("==", kind, e.i64(0))) as (none, some):
                        with none:
                            b.call(softmax[0], args)
                        with some:
                            with b.if_else(b.icmp_signed("==", kind, e.i64(1))) as (is_bool, is_add):
                                with is_bool:
                                    b.call(softmax[1], args)
                                with is_add:
                                    b.call(softmax[2], args)
                    b.call(gemm_p, [Ot, Evp, St, BC, e.i64(1), e.at(vB, b.mul(j0, ldv)), ldv, Mp, Mp, Evp, cols, e.i64(1),
                                  big, diag, nbig])

                e.loop(e.i64(0), kend, block, step=BC, name="j")

                def finish(r: ir.Value) -> None:
                    i = b.add(i0, r)
                    row = b.add(b.mul(bidx, L), i)
                    lsum = e.ld(lstat, r)
                    pos = b.fcmp_ordered(">", lsum, e.const(ft, 0.0))
                    inv = b.select(pos, b.fdiv(e.const(ft, 1.0), lsum), e.const(ft, 0.0))
                    orow = e.at(o, b.mul(row, Ev))
                    acc = e.at(Ot, b.mul(r, Evp))
                    e.loop(e.i64(0), Ev, lambda c: e.st(b.fmul(e.ld(acc, c), inv), orow, c), name="oc")
                    logl = e.intr("log", lsum)
                    e.st(b.select(pos, b.fadd(e.ld(mstat, r), logl), e.const(ft, -math.inf)), lse, row)

                e.loop(e.i64(0), rv, finish, name="fin")

            e.loop(r_lo, r_hi, tile, step=BR, name="i")

        _dynamic_items(e, start, stop, counter, P["items"], item)
        e.call("free", VOID, [base])

    counter = e.var(I64, e.i64(0))
    parallel_for(b, P["items"], [q, k, v, mask, o, lse, prm, scale, counter], body, f"{name}.par", serial_below=serial)
    b.ret_void()


def _dynamic_items(e: _Emit, start: ir.Value, stop: ir.Value, counter: ir.Value, items: ir.Value, item: Any) -> None:
    """Run ``item(i)`` for the work items this thread takes from the shared ``counter`` (one atomic add
    each) until all ``items`` are taken: a thread that runs slower (another process on its core, a
    causal chunk with more keys) takes fewer. Threads given no iterations by the region take none."""
    b = e.b
    fn = b.function
    with b.if_then(b.icmp_signed("<", start, stop)):
        head, body, done = (fn.append_basic_block(f"take.{s}") for s in ("head", "body", "done"))
        b.branch(head)
        b.position_at_end(head)
        it = b.atomic_rmw("add", counter, e.i64(1), "monotonic")
        b.cbranch(b.icmp_signed("<", it, items), body, done)
        b.position_at_end(body)
        item(it)
        b.branch(head)
        b.position_at_end(done)


# ----------------------------------------------------------------------------- backward


def _build_backward(module: ir.Module, name: str, ft: ir.Type, w: int) -> None:
    gemm_u, gemm_p, gemm_t = _gemms(module, ft, w)
    grads = [_build_bwd_elementwise(module, f"{name}.grad_{k}", ft, w, k) for k in _KINDS]
    fn = _function(module, name, [PTR] * 12 + [F64], internal=False)
    *ptrs, prm, scale64 = fn.args
    b = ir.IRBuilder(fn.entry_basic_block)
    e = _Emit(b, ft, w)
    scale = b.fptrunc(scale64, ft) if ft == F32 else scale64
    P = _Params(e, prm, _BWD)
    serial = b.icmp_signed("!=", P["serial"], e.i64(0))
    ew_cols = math.lcm(w, MR)

    def body(b: ir.IRBuilder, start: ir.Value, stop: ir.Value, vals: list[ir.Value]) -> None:
        e = _Emit(b, ft, w)
        do, q, k, v, o, lse, mask, dq, dk, dv, dmask, prm, scale, counter = vals
        P = _Params(e, prm, _BWD)
        L, S, E, Ev, N1, kind = (P[x] for x in ("L", "S", "E", "Ev", "N1", "kind"))
        BR = BC = e.i64(block_size(e.esize))
        causal = b.icmp_signed("!=", P["causal"], e.i64(0))
        q_direct, k_direct, d_direct = (b.icmp_signed("!=", P[x], e.i64(0)) for x in ("q_direct", "k_direct", "d_direct"))
        d_unit = b.icmp_signed("==", P["dc"], e.i64(1))
        Sp = b.mul(b.sdiv(b.add(S, b.sub(BC, e.i64(1))), BC), BC)
        Ep, Evp = e.roundup(E, w), e.roundup(Ev, w)
        big, nbig, zero64, one64 = e.i64(_BIG), e.i64(-_BIG), e.i64(0), e.i64(1)
        base, (Kt, Vt, dK, dV, Kp, Qp, dOp, St, dPt, dQt, lse_t, delta_t, lim) = _scratch(e, [
            b.mul(E, Sp), b.mul(Ev, Sp), b.mul(Sp, Ep), b.mul(Sp, Evp),
            b.select(k_direct, zero64, b.mul(S, Ep)), b.select(q_direct, zero64, b.mul(L, Ep)),
            b.select(d_direct, zero64, b.mul(L, Evp)), b.mul(BR, BC), b.mul(BR, BC), b.mul(BR, Ep), BR, BR,
            b.mul(BR, e.i64(8 // e.esize))])
        elsize = b.select(b.icmp_signed("==", kind, one64), one64, e.i64(e.esize))
        acc, vacc = e.var(ft), e.var(e.vt)
        units = b.and_(d_unit, b.icmp_signed("==", P["oc"], one64))
        ev_full = b.select(units, b.mul(b.sdiv(Ev, e.i64(w)), e.i64(w)), zero64)

        def item(bidx: ir.Value) -> None:
            b0, b1 = b.sdiv(bidx, N1), b.srem(bidx, N1)
            qb, kb, vb, dob, ob, lb = (_batch_ptr(e, p, b0, b1, P[f"{x}0"], P[f"{x}1"], ft)
                                       for p, x in ((q, "q"), (k, "k"), (v, "v"), (do, "d"), (o, "o"), (lse, "l")))
            mb = _batch_ptr(e, mask, b0, b1, P["m0"], P["m1"], I8)  # mask strides are in bytes
            _transpose(e, Kt, Sp, kb, P["kr"], P["kc"], S, E)
            _transpose(e, Vt, Sp, vb, P["vr"], P["vc"], S, Ev)
            with b.if_then(b.not_(k_direct)):
                _copy_rows(e, Kp, Ep, kb, P["kr"], P["kc"], S, E)
            with b.if_then(b.not_(q_direct)):
                _copy_rows(e, Qp, Ep, qb, P["qr"], P["qc"], L, E)
            with b.if_then(b.not_(d_direct)):
                _copy_rows(e, dOp, Evp, dob, P["dr"], P["dc"], L, Ev)
            kB, ldk = b.select(k_direct, kb, Kp), b.select(k_direct, P["kr"], Ep)
            qB, ldq = b.select(q_direct, qb, Qp), b.select(q_direct, P["qr"], Ep)
            dB, ldd = b.select(d_direct, dob, dOp), b.select(d_direct, P["dr"], Evp)
            e.memzero(dK, b.mul(Sp, Ep))
            e.memzero(dV, b.mul(Sp, Evp))

            def tile(i0: ir.Value) -> None:
                rv = e.imin(BR, b.sub(L, i0))
                Mp = e.roundup(rv, MR)
                kend = b.select(causal, e.imin(S, b.add(i0, rv)), S)

                def init(r: ir.Value) -> None:
                    i = b.add(i0, r)
                    with b.if_else(b.icmp_signed("<", r, rv)) as (real, pad):
                        with real:
                            lr = e.ld(lb, b.mul(i, P["lr"]))
                            drow, orow = e.at(dob, b.mul(i, P["dr"])), e.at(ob, b.mul(i, P["or"]))
                            # delta = rowsum(do * o): vectors while both rows are contiguous, then elements
                            b.store(e.const(e.vt, 0.0), vacc)
                            e.loop(zero64, ev_full, lambda c: b.store(e.fma(e.vld(drow, c), e.vld(orow, c), e.get(vacc, e.vt)),
                                                                      vacc), step=w, name="dlv")
                            b.store(e.hsum(e.get(vacc, e.vt)), acc)
                            e.loop(ev_full, Ev, lambda c: b.store(e.fma(e.ld(drow, b.mul(c, P["dc"])), e.ld(orow, b.mul(c, P["oc"])),
                                                                      e.get(acc, ft)), acc), name="dl")
                            e.st(lr, lse_t, r)
                            e.st(e.get(acc, ft), delta_t, r)
                            finite = b.fcmp_ordered("<", e.intr("fabs", lr), e.const(ft, math.inf))
                            row_lim = b.select(causal, e.imin(S, b.add(i, one64)), S)
                            b.store(b.select(finite, row_lim, zero64), e.at(lim, r, I64))
                        with pad:
                            e.st(e.const(ft, 0.0), lse_t, r)
                            e.st(e.const(ft, 0.0), delta_t, r)
                            b.store(zero64, e.at(lim, r, I64))

                e.loop(zero64, Mp, init, name="init")
                e.memzero(dQt, b.mul(Mp, Ep))
                qt, dot = e.at(qb, b.mul(i0, P["qr"])), e.at(dob, b.mul(i0, P["dr"]))
                mt = e.at(mb, b.mul(i0, P["mr"]), I8)
                dmt = e.at(dmask, b.mul(b.add(b.mul(bidx, L), i0), S))

                def block(j0: ir.Value) -> None:
                    cols = e.imin(BC, b.sub(kend, j0))
                    ncols, ecols, mcols = e.roundup(cols, w), e.roundup(cols, ew_cols), e.roundup(cols, MR)
                    diag = b.select(causal, b.sub(i0, j0), big)
                    kdiag = b.select(causal, b.sub(j0, i0), nbig)
                    b.call(gemm_u, [St, BC, qt, P["qr"], one64, e.at(Kt, j0), Sp, Mp, rv, ncols, E, zero64, diag, big, nbig])
                    b.call(gemm_u, [dPt, BC, dot, P["dr"], one64, e.at(Vt, j0), Sp, Mp, rv, ncols, Ev, zero64, diag, big, nbig])
                    args = [St, dPt, BC, Mp, ecols, j0, lim, lse_t, delta_t, e.at(mt, b.mul(j0, elsize), I8), P["mr"],
                            e.at(dmt, j0), S, scale]
                    with b.if_else(b.icmp_signed("==", kind, zero64)) as (none, some):
                        with none:
                            b.call(grads[0], args)
                        with some:
                            with b.if_else(b.icmp_signed("==", kind, one64)) as (is_bool, is_add):
                                with is_bool:
                                    b.call(grads[1], args)
                                with is_add:
                                    b.call(grads[2], args)
                    b.call(gemm_t, [e.at(dV, b.mul(j0, Evp)), Evp, St, one64, BC, e.at(dB, b.mul(i0, ldd)), ldd,
                                  mcols, mcols, Evp, rv, one64, big, big, kdiag])
                    b.call(gemm_t, [e.at(dK, b.mul(j0, Ep)), Ep, dPt, one64, BC, e.at(qB, b.mul(i0, ldq)), ldq,
                                  mcols, mcols, Ep, rv, one64, big, big, kdiag])
                    b.call(gemm_p, [dQt, Ep, dPt, BC, one64, e.at(kB, b.mul(j0, ldk)), ldk, Mp, Mp, Ep, cols, one64,
                                  big, diag, nbig])

                e.loop(zero64, kend, block, step=BC, name="j")
                _scaled_rows(e, e.at(dq, b.mul(b.add(b.mul(bidx, L), i0), E)), E, dQt, Ep, rv, E, scale)

            e.loop(zero64, L, tile, step=BR, name="i")
            _scaled_rows(e, e.at(dk, b.mul(b.mul(bidx, S), E)), E, dK, Ep, S, E, scale)
            _scaled_rows(e, e.at(dv, b.mul(b.mul(bidx, S), Ev)), Ev, dV, Evp, S, Ev, e.const(ft, 1.0))

        _dynamic_items(e, start, stop, counter, P["items"], item)
        e.call("free", VOID, [base])

    counter = e.var(I64, e.i64(0))
    parallel_for(b, P["items"], [*ptrs, prm, scale, counter], body, f"{name}.par", serial_below=serial)
    b.ret_void()


def _scaled_rows(e: _Emit, dst: ir.Value, ld_dst: ir.Value, src: ir.Value, ld_src: ir.Value, rows: ir.Value,
                 cols: ir.Value, scale: ir.Value) -> None:
    """``dst[r * ld_dst + c] = src[r * ld_src + c] * scale`` for r < rows, c < cols."""
    b = e.b

    def row(r: ir.Value) -> None:
        s, d = e.at(src, b.mul(r, ld_src)), e.at(dst, b.mul(r, ld_dst))
        e.loop(e.i64(0), cols, lambda c: e.st(b.fmul(e.ld(s, c), scale), d, c), name="sc")

    e.loop(e.i64(0), rows, row, name="sr")


def _register() -> None:
    for ft, np_dt in ((F32, np.float32), (F64, np.float64)):
        sfx = _sfx(ft)
        w = library.lanes(np.dtype(np_dt).itemsize)
        library.register(f"attention_fwd_{sfx}", [ctypes.c_void_p] * 7 + [ctypes.c_double],
                         lambda m, ft=ft, w=w, sfx=sfx: _build_forward(m, f"attention_fwd_{sfx}", ft, w))
        library.register(f"attention_bwd_{sfx}", [ctypes.c_void_p] * 12 + [ctypes.c_double],
                         lambda m, ft=ft, w=w, sfx=sfx: _build_backward(m, f"attention_bwd_{sfx}", ft, w))


_register()


# ----------------------------------------------------------------------------- graph ops


def _elem_strides(a: np.ndarray) -> tuple[int, ...] | None:
    if any(s % a.itemsize for s in a.strides):
        return None
    return tuple(s // a.itemsize for s in a.strides)


def _merge_batch(lead: tuple[int, ...], arrays: list[np.ndarray]) -> list[tuple[int, list[int]]] | None:
    """The leading dims as at most two ``(size, [element stride per array])``, merging dims whose
    strides allow it in every array; None when more than two remain."""
    merged: list[tuple[int, list[int]]] = []
    for i, n in enumerate(lead):
        if n == 1:
            continue
        st = [a.strides[i] // a.itemsize for a in arrays]
        if merged and all(ps == s * n for ps, s in zip(merged[-1][1], st)):
            merged[-1] = (merged[-1][0] * n, st)
        else:
            merged.append((n, st))
    if len(merged) > 2:
        return None
    while len(merged) < 2:
        merged.insert(0, (1, [0] * len(arrays)))
    return merged


def _mask_layout(m: np.ndarray) -> np.ndarray:
    """A mask whose last dim is contiguous, copying only its non-broadcast part when it is not."""
    if m.strides[-1] == m.itemsize and _elem_strides(m) is not None:
        return m
    core = np.ascontiguousarray(m[tuple(slice(None) if s else slice(0, 1) for s in m.strides[:-1])])
    return np.broadcast_to(core, m.shape)


def _batched(lead: tuple[int, ...], arrays: list[np.ndarray]) -> tuple[list[np.ndarray], list[tuple[int, list[int]]]]:
    """``arrays`` (made contiguous where their strides cannot be merged) and their merged batch dims."""
    if all(_elem_strides(a) is not None for a in arrays):
        merged = _merge_batch(lead, arrays)
        if merged is not None:
            return arrays, merged
    arrays = [np.ascontiguousarray(a) for a in arrays]
    merged = _merge_batch(lead, arrays)
    assert merged is not None
    return arrays, merged


def _unit_features(a: np.ndarray) -> np.ndarray:
    """``a`` with a contiguous last dim (the micro-kernel broadcasts q and do elements along it)."""
    return a if a.strides[-1] == a.itemsize or a.shape[-1] <= 1 else np.ascontiguousarray(a)


def _rows(a: np.ndarray) -> list[int]:
    """Element strides of the last two dims (rows, features)."""
    return [a.strides[-2] // a.itemsize, a.strides[-1] // a.itemsize]


def _mask_strides(m: np.ndarray | None, merged: list[tuple[int, list[int]]], idx: int) -> list[int]:
    """Byte strides (batch 0, batch 1, row) of the mask operand."""
    if m is None:
        return [0, 0, 0]
    return [merged[0][1][idx] * m.itemsize, merged[1][1][idx] * m.itemsize, m.strides[-2]]


def _prepare_mask(kind: str, mask: tuple[np.ndarray, ...], dt: np.dtype) -> np.ndarray | None:
    if kind == "none":
        return None
    m = mask[0].astype(np.bool_ if kind == "bool" else dt, copy=False)
    return _mask_layout(m)


@library.implement("fused_attention")
def attention_forward(ctx: Any, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                      *mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Native ``fused_attention`` (float32/float64): ``(o, lse)`` as the reference returns them; None otherwise."""
    dt = q.dtype
    if dt not in (np.float32, np.float64) or k.dtype != dt or v.dtype != dt:
        return None
    a = ctx.node.attrs
    kind, causal, scale = a["mask_kind"], bool(a["causal"]), float(a["scale"])
    lead, (L, E), (S, Ev) = q.shape[:-2], q.shape[-2:], v.shape[-2:]
    batch = math.prod(lead)
    o = np.zeros(lead + (L, Ev), dt)
    lse = np.full(lead + (L,), -np.inf, dt)
    if batch == 0 or L == 0 or S == 0:
        return o, lse
    m = _prepare_mask(kind, mask, dt)
    ops, merged = _batched(lead, [_unit_features(q), k, v] + ([m] if m is not None else []))
    q, k, v = ops[:3]
    m = ops[3] if m is not None else None
    w = library.lanes(dt.itemsize)
    blk = block_size(dt.itemsize)
    nth = num_threads()
    work = batch * L * S * (E + Ev)
    serial = nth == 1 or work < _SERIAL_WORK
    n_tiles = -(-L // blk)
    nq = 1 if serial or batch >= 2 * nth else min(n_tiles, -(-4 * nth // batch))
    CR = -(-n_tiles // nq) * blk
    nq = -(-L // CR)
    items = batch * nq
    (_, (q0, k0, v0, *_)), (N1, (q1, k1, v1, *_)) = merged
    vals = dict(N1=N1, L=L, S=S, E=E, Ev=Ev, causal=int(causal), kind=_KINDS.index(kind), CR=CR, nq=nq,
                items=items, serial=int(serial or items == 1), q0=q0, q1=q1, k0=k0, k1=k1, v0=v0, v1=v1)
    vals.update(zip(("qr", "qc"), _rows(q)))
    vals.update(zip(("kr", "kc"), _rows(k)))
    vals.update(zip(("vr", "vc"), _rows(v)))
    vals.update(zip(("m0", "m1", "mr"), _mask_strides(m, merged, 3)))
    vals["v_direct"] = int(vals["vc"] == 1 and Ev % w == 0)
    prm = np.array([vals[x] for x in _FWD], np.int64)
    fn = library.function(f"attention_fwd_{'f32' if dt == np.float32 else 'f64'}")
    fn(q.ctypes.data, k.ctypes.data, v.ctypes.data, (m if m is not None else q).ctypes.data, o.ctypes.data,
       lse.ctypes.data, prm.ctypes.data, scale)
    return o, lse


@library.implement("fused_attention_bwd")
def attention_backward(ctx: Any, do: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, o: np.ndarray,
                       lse: np.ndarray, *mask: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """Native ``fused_attention_bwd`` (float32/float64): ``(dq, dk, dv[, dmask])``; None for other dtypes."""
    dt = q.dtype
    if dt not in (np.float32, np.float64) or k.dtype != dt or v.dtype != dt:
        return None
    a = ctx.node.attrs
    kind, causal, scale = a["mask_kind"], bool(a["causal"]), float(a["scale"])
    lead, (L, E), (S, Ev) = q.shape[:-2], q.shape[-2:], v.shape[-2:]
    batch = math.prod(lead)
    dq, dk, dv = np.zeros(q.shape, dt), np.zeros(k.shape, dt), np.zeros(v.shape, dt)
    dmask = np.zeros(mask[0].shape, mask[0].dtype) if kind == "add" else None
    out = (dq, dk, dv) + ((dmask,) if dmask is not None else ())
    if batch == 0 or L == 0 or S == 0:
        return out
    if dmask is not None and dmask.dtype != dt:
        return None
    do, o, lse = do.astype(dt, copy=False), o.astype(dt, copy=False), lse.astype(dt, copy=False)
    m = _prepare_mask(kind, mask, dt)
    ops, merged = _batched(lead, [_unit_features(q), k, v, _unit_features(do), o, lse[..., None]] + ([m] if m is not None else []))
    q, k, v, do, o, lse2 = ops[:6]
    m = ops[6] if m is not None else None
    w = library.lanes(dt.itemsize)
    nth = num_threads()
    serial = nth == 1 or batch == 1 or batch * L * S * (E + Ev) < _SERIAL_WORK
    (_, s0), (N1, s1) = merged
    vals = dict(N1=N1, L=L, S=S, E=E, Ev=Ev, causal=int(causal), kind=_KINDS.index(kind), items=batch,
                serial=int(serial))
    for i, x in enumerate("qkvdol"):
        vals[f"{x}0"], vals[f"{x}1"] = s0[i], s1[i]
    for x, arr in zip("qkvdo", (q, k, v, do, o)):
        vals[f"{x}r"], vals[f"{x}c"] = _rows(arr)
    vals["lr"] = lse2.strides[-2] // lse2.itemsize
    vals.update(zip(("m0", "m1", "mr"), _mask_strides(m, merged, 6)))
    vals["q_direct"] = int(vals["qc"] == 1 and E % w == 0)
    vals["k_direct"] = int(vals["kc"] == 1 and E % w == 0)
    vals["d_direct"] = int(vals["dc"] == 1 and Ev % w == 0)
    prm = np.array([vals[x] for x in _BWD], np.int64)
    fn = library.function(f"attention_bwd_{'f32' if dt == np.float32 else 'f64'}")
    dm = dmask if dmask is not None else dq
    fn(do.ctypes.data, q.ctypes.data, k.ctypes.data, v.ctypes.data, o.ctypes.data, lse2.ctypes.data,
       (m if m is not None else q).ctypes.data, dq.ctypes.data, dk.ctypes.data, dv.ctypes.data, dm.ctypes.data,
       prm.ctypes.data, scale)
    return out
