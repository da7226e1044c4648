"""Batched GEMM for the LLVM backend: ``C[b] = A[b] @ B[b]``, BLIS-style, float32 and float64.

The native functions ``gemm_f32`` / ``gemm_f64`` take every shape and stride at run time::

    void gemm_f32(ptr A, ptr B, ptr C, i64 batch, i64 M, i64 N, i64 K,
                  i64 sa_b, i64 sa_m, i64 sa_k,   # A[b] is M x K, element strides (may be 0 or negative)
                  i64 sb_b, i64 sb_k, i64 sb_n,   # B[b] is K x N
                  i64 sc_b, i64 ldc,              # C[b] is M x N with unit column stride
                  ptr work, i64 slots,            # workspace: `slots` slots, 64-byte aligned
                  ptr pre, ptr bias)              # null, or B packed once by gemm_f32_pack; null, or a
                                                  # row of N added to C (both for batch 1 only)

``gemm_f32_call(ptr block, ptr shape)`` is the same function with its arguments in two blocks
(see ``CALL_ARGTYPES``): a ctypes call costs ~0.3 us per integer argument.

Algorithm (the five loops of BLIS, ``shared/research/llvm-cpu-facts.md`` Q1/Q2): for each
NC-wide column block of B and each KC-deep slice of K, the KC x NC panel of B is packed into
NR-wide strips (``Bp[s][k][0:NR]``, zero-padded past N); then, for each MC-tall row block of A,
the MC x KC block is packed into MR-tall strips (``Ap[t][k][0:MR]``, zero-padded past M), and the
micro-kernel computes each MR x NR tile of C from one A strip and one B strip: per k it loads
NR/lanes vectors of B, broadcasts the MR elements of A and issues MR * NR/lanes ``llvm.fma``
on accumulators that live in registers (allocas with constant indices, promoted by SROA; the
k loop is unrolled by hand since the pipeline does not unroll). It prefetches the C tile first
(+10-25%: the C loads after the k loop otherwise miss). Full tiles are stored straight into C;
edge tiles go through a stack tile. The first KC slice writes C, later ones add to it. When a
(sub-)GEMM has at most ``DIRECT_B_ROWS`` rows, a row-major B is read in place (only a partial last
strip is packed): each B element then serves so few FMAs that packing it cost more than the
product (1x2304x768: 5 -> 12 GF/s; 6 rows: 25 -> 54), and micro-kernels for 1..MR rows avoid
computing padding rows. Packing
reads A and B through their strides, so transposed, sliced and broadcast (stride 0) operands
need no copy. Each output element is the same chain of FMAs whatever the thread split, so the
result does not depend on the thread count. A B packed beforehand (``pre``: a scan's weight, packed
once for all its steps by :func:`.matmul.prepack`) is read instead of packed. A ``bias`` row is added to the
accumulators as the first depth slice is stored (:func:`.matmul.matmul_bias`: ``x @ W + b`` without a
second pass over the product).

Register tile (MR x NR), from :func:`blocking`: 6 x (2 vectors) with 256-bit vectors (6x16 f32,
6x8 f64: 12 accumulators of the 16 ymm), 6 x (4 vectors) with AVX-512 (6x64 f32, 6x32 f64: 24
of the 32 zmm). The lanes come from :func:`library.lanes` when the library is built.

Threads (libgomp, :func:`~tensorc.backends.llvm.parallel.parallel_for`), one region per call
and no barrier inside it: a batch whose size the thread count divides (or is >= 4x it) is
split over batch items, each thread running whole GEMMs; otherwise each GEMM's output is split
into a tm x tn grid of sub-GEMMs, one per thread, each packing its own A rows and B columns (on
2 threads: split the longer of M and N). Every thread packing its own B panel costs a little
duplicated packing, but a region with barriers between a shared packing step and the compute
measured 1.5-2x slower on this 2-core machine while other processes loaded it: each sync point waits for a thread
that another process has preempted. Problems under ``SERIAL_WORK`` multiply-adds run on the
calling thread; so does everything when OpenMP has more threads than the workspace has slots.

Workspace: one slot per thread, each a packed B panel (``min(KC, K) x min(NC, N)``, rounded up
to NR) followed by a packed A block (``MC x min(KC, K)``); :func:`workspace_bytes` gives the size.
The graph op ``matmul`` on these functions (plans, workspaces, bias, prepacked weights) is in
:mod:`.matmul`.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import llvmlite.ir as ir

from .. import library
from ..parallel import counted_loop, parallel_for

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

#: Below this many multiply-adds (the whole batch) a GEMM runs on the calling thread: about 20 us of
#: work, against a region's 1-2 us (more when the workers have gone to sleep or the cores are shared).
SERIAL_WORK = 1 << 20
#: A sub-GEMM with at most this many rows reads a row-major B in place instead of packing it.
DIRECT_B_ROWS = 24
WORKSPACE_ALIGN = 64
K_UNROLL = 4


@dataclass(frozen=True)
class Blocking:
    """Register tile ``mr x nr`` (``nr = vecs * lanes``) and cache blocks ``mc, kc, nc``."""

    lanes: int
    mr: int
    vecs: int
    kc: int
    mc: int
    nc: int
    itemsize: int

    @property
    def nr(self) -> int:
        return self.vecs * self.lanes

    def slot_elems(self, n: int, k: int) -> int:
        """Elements of one thread's workspace slot for a GEMM with ``n`` columns and depth ``k``.

        A slot holds a packed B panel (``min(KC, k)`` x ``min(NC, n)`` rounded up to NR) and a
        packed A block (``MC x min(KC, k)``), rounded up to 64 bytes. Mirrored in the IR.
        """
        kc = min(self.kc, k)
        ncp = -(-min(self.nc, n) // self.nr) * self.nr
        per = WORKSPACE_ALIGN // self.itemsize
        return -(-(kc * (ncp + self.mc)) // per) * per


def blocking(itemsize: int, lanes: int | None = None) -> Blocking:
    """The GEMM blocking for elements of ``itemsize`` bytes and ``lanes`` per vector (default: host).

    >>> b = blocking(4, 8)
    >>> (b.mr, b.nr, b.kc)
    (6, 16, 256)
    """
    lanes = library.lanes(itemsize) if lanes is None else lanes
    bits = lanes * itemsize * 8
    vecs = 4 if bits >= 512 else 2
    nr = vecs * lanes
    mr = 6
    if bits >= 512:  # the research's AVX-512 measurements (6x64, KC 512, MC 96, NC 2048)
        kc, mc, nc_target = (512, 96, 2048) if itemsize == 4 else (256, 96, 2048)
    else:  # AVX2 (znver3): KC 256/384/512 measured within 2% at 1024^3; MC as BLIS's Zen configuration
        kc, mc, nc_target = (256, 144, 4096) if itemsize == 4 else (256, 72, 4096)
    return Blocking(lanes, mr, vecs, kc, mc, max(nr, nc_target // nr * nr), itemsize)


def workspace_bytes(itemsize: int, n: int, k: int, threads: int, lanes: int | None = None) -> int:
    """Bytes of workspace a GEMM with ``n`` columns and depth ``k`` needs for ``threads`` threads."""
    return blocking(itemsize, lanes).slot_elems(n, k) * itemsize * threads


def _declare(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, args), name=name)
    return fn


def _internal(module: ir.Module, name: str, args: list[ir.Type]) -> tuple[ir.Function, ir.IRBuilder]:
    fn = ir.Function(module, ir.FunctionType(VOID, args), name=name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def _smin(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def _offset_or_null(b: ir.IRBuilder, p: ir.Value, i: ir.Value, ty: ir.Type) -> ir.Value:
    """``p + i`` elements, or null when ``p`` is null."""
    null = ir.Constant(PTR, None)
    return b.select(b.icmp_unsigned("==", b.ptrtoint(p, I64), I64(0)), null, b.gep(p, [i], source_etype=ty))


def _ceil_div(b: ir.IRBuilder, x: ir.Value, d: int) -> ir.Value:
    return b.sdiv(b.add(x, I64(d - 1)), I64(d))


class _GemmBuilder:
    """Emits ``name`` and its internal helpers (``name.micro``, ``name.pack_a``, ...) into a module."""

    def __init__(self, module: ir.Module, name: str, ty: ir.Type, blk: Blocking, prefetch_c: bool = True) -> None:
        self.m, self.name, self.T, self.bk = module, name, ty, blk
        self.prefetch_c = prefetch_c
        self.L, self.MR, self.NR = blk.lanes, blk.mr, blk.nr
        self.VT = ir.VectorType(ty, blk.lanes)
        self.size = blk.itemsize
        self.vec_align = blk.lanes * blk.itemsize
        import llvmlite.binding as llvm

        feats = llvm.get_host_cpu_features()
        fused = "llvm.fma" if (feats.get("fma") or feats.get("avx512f")) else "llvm.fmuladd"
        suffix = f"v{blk.lanes}{'f32' if blk.itemsize == 4 else 'f64'}"
        self.fma = _declare(module, f"{fused}.{suffix}", self.VT, [self.VT] * 3)
        self.zero = ir.Constant(ty, 0.0)

    # ---------------------------------------------------------------- small helpers
    # User buffers are accessed with align 1: numpy does not promise element alignment, and on x86
    # the unaligned forms are the same instructions. Only the workspace gets aligned vector loads.
    def at(self, b: ir.IRBuilder, p: ir.Value, idx: ir.Value | int) -> ir.Value:
        return b.gep(p, [I64(idx) if isinstance(idx, int) else idx], source_etype=self.T)

    def load(self, b: ir.IRBuilder, p: ir.Value, idx: ir.Value | int) -> ir.Value:
        return b.load(self.at(b, p, idx), typ=self.T, align=1)

    def store(self, b: ir.IRBuilder, v: ir.Value, p: ir.Value, idx: ir.Value | int) -> None:
        b.store(v, self.at(b, p, idx), align=1)

    def alloca(self, b: ir.IRBuilder, ty: ir.Type, n: int) -> ir.Value:
        with b.goto_entry_block():
            slot = b.alloca(ty, size=I64(n))
        slot.align = 64
        slot.type = PTR
        return slot

    def splat(self, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
        v = b.insert_element(ir.Constant(self.VT, ir.Undefined), x, I32(0))
        return b.shuffle_vector(v, ir.Constant(self.VT, ir.Undefined), ir.Constant(ir.VectorType(I32, self.L), [0] * self.L))

    # ---------------------------------------------------------------- micro-kernel
    def build_micro(self, rows: int, direct: bool) -> ir.Function:
        """``micro(pa, pb, ldb, kc, c, ldc, accumulate, mr, nr, bias)``: C[0:mr, 0:nr] (+)= A strip @ B strip.

        ``bias`` (null, or the tile's first column of a bias row) is added to every row when not
        accumulating (so once, with the first depth slice).

        Computes ``rows`` rows (``mr <= rows`` are stored). The A strip is packed (MR elements per
        k, the first ``rows`` used); the B strip is packed (``direct=False``: NR elements per k,
        aligned) or, with ``direct``, read in place from a row-major B with rows ``ldb`` apart.
        """
        fn, b = _internal(self.m, f"{self.name}.micro{rows}{'d' if direct else ''}",
                          [PTR, PTR, I64, I64, PTR, I64, I1, I64, I64, PTR])
        fn.attributes.add("noinline")
        pa, pb, ldb, kc, c, ldc, accumulate, mr, nr, bias = fn.args
        add_bias = b.and_(b.not_(accumulate), b.icmp_unsigned("!=", b.ptrtoint(bias, I64), I64(0)))
        MR, NR, L, V, VT = self.MR, self.NR, self.L, self.bk.vecs, self.VT
        acc = self.alloca(b, VT, rows * V)

        def acc_at(i: int, v: int) -> ir.Value:
            return b.gep(acc, [I64(i * V + v)], source_etype=VT)

        for i in range(rows * V):
            b.store(ir.Constant(VT, None), b.gep(acc, [I64(i)], source_etype=VT))
        if self.prefetch_c:
            # The C tile is read (accumulate) and written after the k loop, where out-of-order
            # execution cannot hide a miss: fetch its lines now (first and last element of each row).
            pf = _declare(self.m, "llvm.prefetch.p0", VOID, [PTR, I32, I32, I32])
            last = b.sub(nr, I64(1))
            for i in range(rows):
                row = b.gep(c, [b.mul(I64(i), ldc)], source_etype=self.T)
                row = b.select(b.icmp_signed("<", I64(i), mr), row, c)
                b.call(pf, [row, I32(1), I32(3), I32(1)])
                b.call(pf, [b.gep(row, [last], source_etype=self.T), I32(1), I32(3), I32(1)])
        b_stride, b_align = (ldb, 1) if direct else (I64(NR), self.vec_align)

        def step(k: ir.Value) -> None:
            bp = b.gep(pb, [b.mul(k, b_stride)], source_etype=self.T)
            bv = [b.load(b.gep(bp, [I64(v * L)], source_etype=self.T), typ=VT, align=b_align) for v in range(V)]
            ap = b.gep(pa, [b.mul(k, I64(MR))], source_etype=self.T)
            for i in range(rows):
                s = self.splat(b, b.load(b.gep(ap, [I64(i)], source_etype=self.T), typ=self.T, align=self.size))
                for v in range(V):
                    p = acc_at(i, v)
                    b.store(b.call(self.fma, [s, bv[v], b.load(p, typ=VT)]), p)

        main = b.mul(b.sdiv(kc, I64(K_UNROLL)), I64(K_UNROLL))

        def unrolled(k: ir.Value) -> None:
            for u in range(K_UNROLL):
                step(b.add(k, I64(u)))

        counted_loop(b, I64(0), main, unrolled, step=K_UNROLL, name="k")
        counted_loop(b, main, kc, step, name="krest")

        full = b.and_(b.icmp_signed("==", mr, I64(rows)), b.icmp_signed("==", nr, I64(NR)))
        with b.if_else(full) as (then, otherwise):
            with then:
                with b.if_then(add_bias):  # all NR columns exist: whole vectors of the bias row
                    for v in range(V):
                        bv = b.load(b.gep(bias, [I64(v * L)], source_etype=self.T), typ=VT, align=1)
                        for i in range(rows):
                            b.store(b.fadd(b.load(acc_at(i, v), typ=VT), bv), acc_at(i, v))
                for i in range(rows):
                    row = b.gep(c, [b.mul(I64(i), ldc)], source_etype=self.T)
                    for v in range(V):
                        p = b.gep(row, [I64(v * L)], source_etype=self.T)
                        val = b.load(acc_at(i, v), typ=VT)
                        old = b.load(p, typ=VT, align=1)
                        val = b.select(accumulate, b.fadd(val, old), val)
                        b.store(val, p, align=1)
            with otherwise:  # the last rows or columns: through a stack tile
                tile = self.alloca(b, VT, rows * V)
                for i in range(rows * V):
                    b.store(b.load(b.gep(acc, [I64(i)], source_etype=VT), typ=VT), b.gep(tile, [I64(i)], source_etype=VT))

                def row(i: ir.Value) -> None:
                    crow = b.gep(c, [b.mul(i, ldc)], source_etype=self.T)
                    trow = b.gep(tile, [b.mul(i, I64(NR))], source_etype=self.T)

                    def col(j: ir.Value) -> None:
                        val = self.load(b, trow, j)
                        with b.if_then(accumulate):
                            self.store(b, b.fadd(val, self.load(b, crow, j)), crow, j)
                        with b.if_then(add_bias):
                            self.store(b, b.fadd(val, self.load(b, bias, j)), crow, j)
                        with b.if_then(b.not_(b.or_(accumulate, add_bias))):
                            self.store(b, val, crow, j)

                    counted_loop(b, I64(0), nr, col, name="j")

                counted_loop(b, I64(0), mr, row, name="i")
        b.ret_void()
        return fn

    def call_micro(self, b: ir.IRBuilder, kernels: dict[int, ir.Function], mr: ir.Value, args: list[ir.Value]) -> None:
        """Call ``kernels[mr]`` (the kernel computing ``mr`` rows, 1 <= mr <= MR)."""
        fn = b.function
        after = fn.append_basic_block("micro.after")
        full = fn.append_basic_block("micro.full")
        switch = b.switch(mr, full)
        for rows in range(1, self.MR):
            blk = fn.append_basic_block(f"micro.{rows}")
            switch.add_case(I64(rows), blk)
            b.position_at_end(blk)
            b.call(kernels[rows], args)
            b.branch(after)
        b.position_at_end(full)
        b.call(kernels[self.MR], args)
        b.branch(after)
        b.position_at_end(after)

    # ---------------------------------------------------------------- packing
    def build_pack_b(self) -> ir.Function:
        """``pack_b(src, sbk, sbn, kc, nc, s0, s1, dst)``: strips s0..s1 of the kc x nc panel at src."""
        fn, b = _internal(self.m, f"{self.name}.pack_b", [PTR, I64, I64, I64, I64, I64, I64, PTR])
        src, sbk, sbn, kc, nc, s0, s1, dst = fn.args
        NR, L, VT = self.NR, self.L, self.VT

        def strip(s: ir.Value) -> None:
            j = b.mul(s, I64(NR))
            nr = _smin(b, I64(NR), b.sub(nc, j))
            sp = b.gep(src, [b.mul(j, sbn)], source_etype=self.T)
            dp = b.gep(dst, [b.mul(s, b.mul(kc, I64(NR)))], source_etype=self.T)
            contiguous = b.and_(b.icmp_signed("==", nr, I64(NR)), b.icmp_signed("==", sbn, I64(1)))
            with b.if_else(contiguous) as (then, otherwise):
                with then:  # row-major B: NR contiguous elements per k

                    def krow(k: ir.Value) -> None:
                        row = b.gep(sp, [b.mul(k, sbk)], source_etype=self.T)
                        out = b.gep(dp, [b.mul(k, I64(NR))], source_etype=self.T)
                        for v in range(self.bk.vecs):
                            x = b.load(b.gep(row, [I64(v * L)], source_etype=self.T), typ=VT, align=1)
                            b.store(x, b.gep(out, [I64(v * L)], source_etype=self.T), align=self.vec_align)

                    counted_loop(b, I64(0), kc, krow, name="k")
                with otherwise:  # any strides, or the last strip: one column at a time, zero padding

                    def column(jj: ir.Value) -> None:
                        cp = b.gep(sp, [b.mul(jj, sbn)], source_etype=self.T)
                        out = b.gep(dp, [jj], source_etype=self.T)

                        def elem(k: ir.Value) -> None:
                            self.store(b, self.load(b, cp, b.mul(k, sbk)), out, b.mul(k, I64(NR)))

                        counted_loop(b, I64(0), kc, elem, name="k")

                    counted_loop(b, I64(0), nr, column, name="jj")

                    def pad(jj: ir.Value) -> None:
                        out = b.gep(dp, [jj], source_etype=self.T)
                        counted_loop(b, I64(0), kc, lambda k: self.store(b, self.zero, out, b.mul(k, I64(NR))), name="k")

                    counted_loop(b, nr, I64(NR), pad, name="pad")

        counted_loop(b, s0, s1, strip, name="s")
        b.ret_void()
        return fn

    def build_pack_a(self) -> ir.Function:
        """``pack_a(src, sam, sak, mc, kc, dst)``: the mc x kc block at src into MR-row strips."""
        fn, b = _internal(self.m, f"{self.name}.pack_a", [PTR, I64, I64, I64, I64, PTR])
        src, sam, sak, mc, kc, dst = fn.args
        MR = self.MR

        def strip(t: ir.Value) -> None:
            i = b.mul(t, I64(MR))
            mr = _smin(b, I64(MR), b.sub(mc, i))
            sp = b.gep(src, [b.mul(i, sam)], source_etype=self.T)
            dp = b.gep(dst, [b.mul(t, b.mul(kc, I64(MR)))], source_etype=self.T)
            with b.if_else(b.icmp_signed("==", mr, I64(MR))) as (then, otherwise):
                with then:
                    rows = [b.gep(sp, [b.mul(I64(ii), sam)], source_etype=self.T) for ii in range(MR)]

                    def kcol(k: ir.Value) -> None:
                        off = b.mul(k, sak)
                        out = b.gep(dp, [b.mul(k, I64(MR))], source_etype=self.T)
                        vals = [self.load(b, r, off) for r in rows]
                        for ii, x in enumerate(vals):
                            self.store(b, x, out, ii)

                    # Row-major A makes this a transpose; a vectorized one (MR loads, shuffles, MR
                    # stores) measured no faster: packing A is bound by reading A from memory.
                    counted_loop(b, I64(0), kc, kcol, name="k")
                with otherwise:

                    def row(ii: ir.Value) -> None:
                        rp = b.gep(sp, [b.mul(ii, sam)], source_etype=self.T)
                        out = b.gep(dp, [ii], source_etype=self.T)
                        counted_loop(b, I64(0), kc, lambda k: self.store(b, self.load(b, rp, b.mul(k, sak)), out,
                                                                         b.mul(k, I64(MR))), name="k")

                    counted_loop(b, I64(0), mr, row, name="ii")

                    def pad(ii: ir.Value) -> None:
                        out = b.gep(dp, [ii], source_etype=self.T)
                        counted_loop(b, I64(0), kc, lambda k: self.store(b, self.zero, out, b.mul(k, I64(MR))), name="k")

                    counted_loop(b, mr, I64(MR), pad, name="pad")

        counted_loop(b, I64(0), _ceil_div(b, mc, MR), strip, name="t")
        b.ret_void()
        return fn

    # ---------------------------------------------------------------- macro-kernel
    def build_macro(self, pack_a: ir.Function) -> ir.Function:
        """``macro(a, sam, sak, bp, kc, nc, s0, s1, r0, r1, c, ldc, accumulate, ap, direct, bsrc, ldb, bias)``.

        Rows r0..r1 of C times strips s0..s1 of the packed panel ``bp``; ``a`` points at A[0, k0],
        ``c`` at C[0, j0]; the A blocks are packed into ``ap``. With ``direct``, full strips are
        read in place from ``bsrc`` (B[k0, j0], row-major with rows ``ldb`` apart) instead.
        """
        # A kernel per row count: a bottom-edge tile computes only its rows (M = 32 is five 6-row tiles
        # and a 2-row one, which as a 6-row tile cost 12 % more work). Below MR rows, the in-place
        # kernels serve packed strips too (a packed strip is a B with rows NR apart).
        in_place = {rows: self.build_micro(rows, direct=True) for rows in range(1, self.MR + 1)}
        packed = dict(in_place)
        packed[self.MR] = self.build_micro(self.MR, direct=False)
        fn, b = _internal(self.m, f"{self.name}.macro",
                          [PTR, I64, I64, PTR, I64, I64, I64, I64, I64, I64, PTR, I64, I1, PTR, I1, PTR, I64, PTR])
        a, sam, sak, bp, kc, nc, s0, s1, r0, r1, c, ldc, accumulate, ap, direct, bsrc, ldb, bias = fn.args
        MR, NR, MC = self.MR, self.NR, self.bk.mc

        def block(ic: ir.Value) -> None:
            mc = _smin(b, I64(MC), b.sub(r1, ic))
            b.call(pack_a, [b.gep(a, [b.mul(ic, sam)], source_etype=self.T), sam, sak, mc, kc, ap])
            cblock = b.gep(c, [b.mul(ic, ldc)], source_etype=self.T)

            def strip(s: ir.Value) -> None:
                j = b.mul(s, I64(NR))
                nr = _smin(b, I64(NR), b.sub(nc, j))
                bs = b.gep(bp, [b.mul(s, b.mul(kc, I64(NR)))], source_etype=self.T)
                ccol = b.gep(cblock, [j], source_etype=self.T)
                use_direct = b.and_(direct, b.icmp_signed("==", nr, I64(NR)))
                bias_j = _offset_or_null(b, bias, j, self.T)

                def tile(ir_: ir.Value) -> None:
                    mr = _smin(b, I64(MR), b.sub(mc, ir_))
                    as_ = b.gep(ap, [b.mul(ir_, kc)], source_etype=self.T)
                    ct = b.gep(ccol, [b.mul(ir_, ldc)], source_etype=self.T)
                    with b.if_else(use_direct) as (then, otherwise):
                        with then:
                            self.call_micro(b, in_place, mr, [as_, b.gep(bsrc, [j], source_etype=self.T), ldb, kc, ct, ldc,
                                                              accumulate, mr, nr, bias_j])
                        with otherwise:
                            self.call_micro(b, packed, mr, [as_, bs, I64(NR), kc, ct, ldc, accumulate, mr, nr, bias_j])

                counted_loop(b, I64(0), mc, tile, step=MR, name="ir")

            counted_loop(b, s0, s1, strip, name="jr")

        counted_loop(b, r0, r1, block, step=MC, name="ic")
        b.ret_void()
        return fn

    # ---------------------------------------------------------------- drivers
    def build_serial(self, pack_b: ir.Function, macro: ir.Function) -> ir.Function:
        """``serial(a, b, c, M, N, K, sam, sak, sbk, sbn, ldc, slot, pre, s_off, ns, bias)``: one GEMM on this thread.

        ``pre``: null, or all of B packed by ``*_pack`` (``ns`` strips wide), this GEMM's columns
        starting at strip ``s_off``: then nothing is packed here."""
        fn, b = _internal(self.m, f"{self.name}.serial",
                          [PTR, PTR, PTR, I64, I64, I64, I64, I64, I64, I64, I64, PTR, PTR, I64, I64, PTR])
        a, bm, c, M, N, K, sam, sak, sbk, sbn, ldc, slot, pre, s_off, ns, bias = fn.args
        KC, NC, NR = self.bk.kc, self.bk.nc, self.NR
        prepacked = b.icmp_unsigned("!=", b.ptrtoint(pre, I64), I64(0))
        # Few rows: packing B would cost more than the product (a B element serves only M FMAs),
        # so a row-major B is read in place.
        direct = b.and_(b.and_(b.icmp_signed("==", sbn, I64(1)), b.icmp_signed("<=", M, I64(DIRECT_B_ROWS))),
                        b.not_(prepacked))
        bp = slot
        ap = b.gep(slot, [b.mul(_smin(b, I64(KC), K), b.mul(_ceil_div(b, _smin(b, I64(NC), N), NR), I64(NR)))],
                   source_etype=self.T)

        def column_block(jc: ir.Value) -> None:
            nc = _smin(b, I64(NC), b.sub(N, jc))
            nstrips = _ceil_div(b, nc, NR)

            def depth_block(pc: ir.Value) -> None:
                kc = _smin(b, I64(KC), b.sub(K, pc))
                bsrc = b.gep(bm, [b.add(b.mul(pc, sbk), b.mul(jc, sbn))], source_etype=self.T)
                # With direct B only the last, partial strip is packed (zero padding).
                first_packed = b.select(direct, b.sdiv(nc, I64(NR)), I64(0))
                with b.if_then(b.not_(prepacked)):
                    b.call(pack_b, [bsrc, sbk, sbn, kc, nc, first_packed, nstrips, bp])
                # the prepacked panel of this depth slice (pc * ns strips before it), from this GEMM's strip
                first = b.add(s_off, b.sdiv(jc, I64(NR)))
                panel = b.gep(pre, [b.mul(b.add(b.mul(pc, ns), b.mul(first, kc)), I64(NR))], source_etype=self.T)
                use = b.select(prepacked, panel, bp)
                asrc = b.gep(a, [b.mul(pc, sak)], source_etype=self.T)
                b.call(macro, [asrc, sam, sak, use, kc, nc, I64(0), nstrips, I64(0), M,
                               b.gep(c, [jc], source_etype=self.T), ldc, b.icmp_signed("!=", pc, I64(0)), ap,
                               direct, bsrc, sbk, _offset_or_null(b, bias, jc, self.T)])

            counted_loop(b, I64(0), K, depth_block, step=KC, name="pc")

        counted_loop(b, I64(0), N, column_block, step=NC, name="jc")
        b.ret_void()
        return fn

    def build(self) -> None:
        pack_a = self.build_pack_a()
        pack_b = self.build_pack_b()
        macro = self.build_macro(pack_a)
        serial = self.build_serial(pack_b, macro)
        fn = _declare(self.m, self.name, VOID, [PTR, PTR, PTR] + [I64] * 12 + [PTR, I64, PTR, PTR])
        fn.attributes.add("nounwind")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        A, B, C, batch, M, N, K, sab, sam, sak, sbb, sbk, sbn, scb, ldc, work, slots, pre, bias = fn.args
        bk, MR, NR = self.bk, self.MR, self.NR
        one = b.icmp_signed("==", batch, I64(1))
        pre = b.select(one, pre, ir.Constant(PTR, None))  # one B: one GEMM
        bias = b.select(one, bias, ir.Constant(PTR, None))
        ns = _ceil_div(b, N, NR)
        per = WORKSPACE_ALIGN // self.size
        ncp = b.mul(_ceil_div(b, _smin(b, I64(bk.nc), N), NR), I64(NR))
        slot_elems = b.mul(_ceil_div(b, b.mul(_smin(b, I64(bk.kc), K), b.add(ncp, I64(bk.mc))), per), I64(per))
        thread_num = _declare(self.m, "omp_get_thread_num", I32, [])
        nonempty = b.and_(b.and_(b.icmp_signed(">", batch, I64(0)), b.icmp_signed(">", M, I64(0))),
                          b.icmp_signed(">", N, I64(0)))
        with b.if_then(b.not_(nonempty)):
            b.ret_void()

        def item(idx: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
            """A, B and C of batch item ``idx``."""
            return (b.gep(A, [b.mul(idx, sab)], source_etype=self.T), b.gep(B, [b.mul(idx, sbb)], source_etype=self.T),
                    b.gep(C, [b.mul(idx, scb)], source_etype=self.T))

        with b.if_then(b.icmp_signed("<=", K, I64(0))):  # empty sum: C = 0

            def zero_item(bi: ir.Value) -> None:
                cb = item(bi)[2]
                counted_loop(b, I64(0), M, lambda i: counted_loop(
                    b, I64(0), N, lambda j: self.store(b, self.zero, b.gep(cb, [b.mul(i, ldc)], source_etype=self.T), j),
                    name="j"), name="i")

            counted_loop(b, I64(0), batch, zero_item, name="b")
            b.ret_void()

        nth = b.sext(b.call(_declare(self.m, "omp_get_max_threads", I32, []), []), I64)
        work_item = b.mul(b.mul(M, N), K)
        serial_all = b.or_(b.or_(b.icmp_signed("<=", nth, I64(1)), b.icmp_signed(">", nth, slots)),
                           b.icmp_signed("<", b.mul(work_item, batch), I64(SERIAL_WORK)))
        with b.if_then(serial_all):

            def serial_item(bi: ir.Value) -> None:
                a_, b_, c_ = item(bi)
                b.call(serial, [a_, b_, c_, M, N, K, sam, sak, sbk, sbn, ldc, work, pre, I64(0), ns, bias])

            counted_loop(b, I64(0), batch, serial_item, name="b")
            b.ret_void()

        # Batch split: every thread runs whole GEMMs with its own workspace slot.
        split_batch = b.or_(b.icmp_signed("==", b.srem(batch, nth), I64(0)), b.icmp_signed(">=", batch, b.mul(nth, I64(4))))
        with b.if_then(split_batch):
            captured = [A, B, C, M, N, K, sab, sam, sak, sbb, sbk, sbn, scb, ldc, work, slot_elems]

            def batch_body(ob: ir.IRBuilder, lo: ir.Value, hi: ir.Value, vals: list[ir.Value]) -> None:
                a0, b0, c0, m, n, k, s_ab, s_am, s_ak, s_bb, s_bk, s_bn, s_cb, l_dc, ws, slot_elems = vals
                tid = ob.sext(ob.call(thread_num, []), I64)
                slot = ob.gep(ws, [ob.mul(tid, slot_elems)], source_etype=self.T)

                def one(bi: ir.Value) -> None:
                    ob.call(serial, [ob.gep(a0, [ob.mul(bi, s_ab)], source_etype=self.T),
                                     ob.gep(b0, [ob.mul(bi, s_bb)], source_etype=self.T),
                                     ob.gep(c0, [ob.mul(bi, s_cb)], source_etype=self.T),
                                     m, n, k, s_am, s_ak, s_bk, s_bn, l_dc, slot, ir.Constant(PTR, None), I64(0), I64(0),
                                     ir.Constant(PTR, None)])

                counted_loop(ob, lo, hi, one, name="b")

            parallel_for(b, batch, captured, batch_body, f"{self.name}.par_batch")
            b.ret_void()

        # One GEMM at a time, its output split into a tm x tn grid of sub-GEMMs, one per thread, run
        # in one region without barriers. Each thread packs its own B panels (its columns, all K)
        # and A blocks (its rows), KC*(M/tm + N/tn) elements per depth slice: tm is the divisor of
        # the thread count that minimizes that (on 2 threads: split the longer side).
        mstrips = _ceil_div(b, M, MR)
        nstrips = _ceil_div(b, N, NR)
        best = self.alloca(b, I64, 2)
        b.store(I64(1), best)
        b.store(I64(-1), b.gep(best, [I64(1)], source_etype=I64))

        def candidate(t: ir.Value) -> None:
            with b.if_then(b.icmp_signed("==", b.srem(nth, t), I64(0))):
                cost = b.add(b.sdiv(b.mul(M, nth), t), b.mul(N, t))
                old = b.load(b.gep(best, [I64(1)], source_etype=I64), typ=I64)
                with b.if_then(b.or_(b.icmp_signed("<", old, I64(0)), b.icmp_signed("<", cost, old))):
                    b.store(t, best)
                    b.store(cost, b.gep(best, [I64(1)], source_etype=I64))

        counted_loop(b, I64(1), b.add(nth, I64(1)), candidate, name="tm")
        tm = b.load(best, typ=I64)
        tn = b.sdiv(nth, tm)

        def sub_gemm(ob: ir.IRBuilder, lo: ir.Value, hi: ir.Value, vals: list[ir.Value]) -> None:
            a0, b0, c0, m, n, k, s_am, s_ak, s_bk, s_bn, l_dc, ws, slot_elems, t_m, t_n, m_strips, n_strips, pp, bb = vals
            tid = ob.sext(ob.call(thread_num, []), I64)
            slot = ob.gep(ws, [ob.mul(tid, slot_elems)], source_etype=self.T)

            def unit(u: ir.Value) -> None:
                ti, tj = ob.sdiv(u, t_n), ob.srem(u, t_n)
                r0 = ob.mul(ob.sdiv(ob.mul(ti, m_strips), t_m), I64(MR))
                r1 = _smin(ob, ob.mul(ob.sdiv(ob.mul(ob.add(ti, I64(1)), m_strips), t_m), I64(MR)), m)
                c0_ = ob.mul(ob.sdiv(ob.mul(tj, n_strips), t_n), I64(NR))
                c1_ = _smin(ob, ob.mul(ob.sdiv(ob.mul(ob.add(tj, I64(1)), n_strips), t_n), I64(NR)), n)
                with ob.if_then(ob.and_(ob.icmp_signed("<", r0, r1), ob.icmp_signed("<", c0_, c1_))):
                    a1 = ob.gep(a0, [ob.mul(r0, s_am)], source_etype=self.T)
                    b1 = ob.gep(b0, [ob.mul(c0_, s_bn)], source_etype=self.T)
                    c1 = ob.gep(c0, [ob.add(ob.mul(r0, l_dc), c0_)], source_etype=self.T)
                    ob.call(serial, [a1, b1, c1, ob.sub(r1, r0), ob.sub(c1_, c0_), k, s_am, s_ak, s_bk, s_bn, l_dc, slot,
                                     pp, ob.sdiv(c0_, I64(NR)), n_strips, _offset_or_null(ob, bb, c0_, self.T)])

            counted_loop(ob, lo, hi, unit, name="u")

        def gemm_item(bi: ir.Value) -> None:
            a_, b_, c_ = item(bi)
            parallel_for(b, nth, [a_, b_, c_, M, N, K, sam, sak, sbk, sbn, ldc, work, slot_elems, tm, tn, mstrips, nstrips, pre,
                                  bias],
                         sub_gemm, f"{self.name}.par_grid")

        counted_loop(b, I64(0), batch, gemm_item, name="b")
        b.ret_void()


#: ``gemm_f32`` / ``gemm_f64``: A, B, C, batch, M, N, K, sa_b, sa_m, sa_k, sb_b, sb_k, sb_n, sc_b, ldc, work, slots,
#: pre (null, or B as ``gemm_*_pack`` packed it), bias (null, or N elements added to every row of C); pre and
#: bias are used when batch is 1.
GEMM_ARGTYPES = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 12 + [ctypes.c_void_p, ctypes.c_int64] + [ctypes.c_void_p] * 2
#: ``gemm_f32_pack(B, K, N, sb_k, sb_n, dst)``: all of B packed as the GEMM packs it, for ``pre``.
PACK_ARGTYPES = [ctypes.c_void_p] + [ctypes.c_int64] * 4 + [ctypes.c_void_p]
#: ``gemm_f32_call(block, shape)``: block = i64[11] {A, B, C, A offset, B offset, C offset (bytes), work,
#: slots, data offset, pre, bias}, shape = i64[12] {batch, M, N, K, sa_b, sa_m, sa_k, sb_b, sb_k, sb_n, sc_b, ldc}.
#: With a nonzero data offset, A, B and C are numpy array objects and their data pointer is read at
#: that offset (``PyArrayObject.data``), which saves the 1-2 us of each ``arr.ctypes.data``.
CALL_ARGTYPES = [ctypes.c_void_p, ctypes.c_void_p]


def build_gemm(module: ir.Module, name: str, itemsize: int, lanes: int | None = None, **options: Any) -> None:
    """Emit the GEMM ``name`` (signature ``GEMM_ARGTYPES``) for float32 (``itemsize`` 4) or float64 (8).

    ``lanes`` defaults to the host's vector width (tests pass 16/8 to exercise the AVX-512 tiles).
    """
    ty = ir.FloatType() if itemsize == 4 else ir.DoubleType()
    _GemmBuilder(module, name, ty, blocking(itemsize, lanes), **options).build()


def build_call(module: ir.Module, name: str) -> None:
    """Emit ``name_call(ptr block, ptr shape)`` (``CALL_ARGTYPES``): unpack two blocks, call ``name``.

    A ctypes call costs about 0.3 us per integer argument: :func:`matmul` passes two addresses
    instead of 17 integers, the shape block being cached per layout and the other per thread.
    """
    gemm_fn = _declare(module, name, VOID, [PTR, PTR, PTR] + [I64] * 12 + [PTR, I64, PTR, PTR])  # defined by build_gemm
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, PTR]), name=f"{name}_call")
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    block, shape = fn.args

    def word(base: ir.Value, i: int, ty: ir.Type) -> ir.Value:
        return b.load(b.gep(base, [I64(i)], source_etype=I64), typ=ty, align=8)

    data_offset = word(block, 8, I64)
    operands = []
    for i in range(3):
        p = word(block, i, PTR)
        before = b.block
        with b.if_then(b.icmp_signed("!=", data_offset, I64(0))):
            data = b.load(b.gep(p, [data_offset], source_etype=ir.IntType(8)), typ=PTR, align=8)
            from_object = b.block
        base = b.phi(PTR)
        base.add_incoming(p, before)
        base.add_incoming(data, from_object)
        operands.append(b.gep(base, [word(block, 3 + i, I64)], source_etype=ir.IntType(8)))
    b.call(gemm_fn, operands + [word(shape, i, I64) for i in range(12)] + [word(block, 6, PTR), word(block, 7, I64),
                                                                               word(block, 9, PTR), word(block, 10, PTR)])
    b.ret_void()


def build_pack(module: ir.Module, name: str, itemsize: int, lanes: int | None = None) -> None:
    """Emit ``name_pack(B, K, N, sbk, sbn, dst)`` (``PACK_ARGTYPES``): every KC-deep slice of B packed into
    NR-wide strips, slice ``pc`` at ``dst + pc * ceil(N / NR) * NR``: the panels ``gemm(..., pre=dst)`` reads
    instead of packing them itself (a scan's weights, packed once for all its steps)."""
    ty = ir.FloatType() if itemsize == 4 else ir.DoubleType()
    gb = _GemmBuilder(module, f"{name}.packer", ty, blocking(itemsize, lanes))
    pack_b = gb.build_pack_b()
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I64, I64, I64, I64, PTR]), name=f"{name}_pack")
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    src, K, N, sbk, sbn, dst = fn.args
    KC, NR = gb.bk.kc, gb.NR
    ns = _ceil_div(b, N, NR)

    def depth(pc: ir.Value) -> None:
        kc = _smin(b, I64(KC), b.sub(K, pc))
        b.call(pack_b, [b.gep(src, [b.mul(pc, sbk)], source_etype=ty), sbk, sbn, kc, N, I64(0), ns,
                        b.gep(dst, [b.mul(b.mul(pc, ns), I64(NR))], source_etype=ty)])

    counted_loop(b, I64(0), K, depth, step=KC, name="pc")
    b.ret_void()


library.register("gemm_f32", GEMM_ARGTYPES, lambda m: build_gemm(m, "gemm_f32", 4))
library.register("gemm_f64", GEMM_ARGTYPES, lambda m: build_gemm(m, "gemm_f64", 8))
library.register("gemm_f32_call", CALL_ARGTYPES, lambda m: build_call(m, "gemm_f32"))
library.register("gemm_f64_call", CALL_ARGTYPES, lambda m: build_call(m, "gemm_f64"))
library.register("gemm_f32_pack", PACK_ARGTYPES, lambda m: build_pack(m, "gemm_f32", 4))
library.register("gemm_f64_pack", PACK_ARGTYPES, lambda m: build_pack(m, "gemm_f64", 8))
