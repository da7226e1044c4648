"""``scan_run``: the loop of a ``scan`` in native code, running a list of recorded operations per step.

A scan whose body compiles to native calls only (loop nests, GEMMs) does not need Python between
its steps: :mod:`tensorc.backends.llvm.scanloop` binds every value of the body to memory once per
call and writes the body as a *program*, an array of 6-word records ``[kind, w1, w2, w3, w4, w5]``
(int64), which this function runs ``length`` times::

    void scan_run(i64 *program, i64 n_records, i64 length, i64 reverse)

For step ``t`` the time index is ``s = reverse ? length - 1 - t : t``, and each record does:

====== ======= ===============================================================================
kind   name    effect
====== ======= ===============================================================================
0      PATCH   ``*(i64 *)w1 = w2 + s * w3``: point an argument slot at step ``s`` of a stacked array
1      CALL1   ``((void (*)(void *))w1)(w2)``: a loop nest (``w2``: its table of buffer addresses)
2      CALL2   ``((void (*)(void *, void *))w1)(w2, w3)``: ``gemm_*_call(block, shape)``
3      COPY    ``memcpy(w1 + s * w2, w3 + s * w4, w5)``: a carry to its next step, an output to ``ys[s]``
====== ======= ===============================================================================
"""

from __future__ import annotations

import ctypes

import llvmlite.ir as ir

from .. import library
from ..parallel import counted_loop

I1, I8, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

PATCH, CALL1, CALL2, COPY = 0, 1, 2, 3
WORDS = 6  #: int64 words per record
ARGTYPES = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]


def build_scan_run(module: ir.Module, name: str = "scan_run") -> None:
    """Emit ``scan_run`` (see the module docstring) into ``module``."""
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, I64, I64, I64]), name=name)
    fn.attributes.add("nounwind")
    memcpy = module.globals.get("llvm.memcpy.p0.p0.i64")
    if memcpy is None:
        memcpy = ir.Function(module, ir.FunctionType(VOID, [PTR, PTR, I64, I1]), name="llvm.memcpy.p0.p0.i64")
    prog, n, length, reverse = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    call1 = ir.FunctionType(VOID, [PTR]).as_pointer()
    call2 = ir.FunctionType(VOID, [PTR, PTR]).as_pointer()

    def step(t: ir.Value) -> None:
        s = b.select(b.icmp_signed("!=", reverse, I64(0)), b.sub(b.sub(length, I64(1)), t), t)

        def record(i: ir.Value) -> None:
            base = b.mul(i, I64(WORDS))

            def word(k: int) -> ir.Value:
                return b.load(b.gep(prog, [b.add(base, I64(k))], source_etype=I64), typ=I64, align=8)

            kind = word(0)
            done = fn.append_basic_block("rec.done")
            cases = [fn.append_basic_block(f"rec.{what}") for what in ("patch", "call1", "call2", "copy")]
            sw = b.switch(kind, done)
            for k, blk in enumerate(cases):
                sw.add_case(I64(k), blk)
            b.position_at_end(cases[PATCH])
            b.store(b.add(word(2), b.mul(s, word(3))), b.inttoptr(word(1), PTR), align=8)
            b.branch(done)
            b.position_at_end(cases[CALL1])
            b.call(b.inttoptr(word(1), call1), [b.inttoptr(word(2), PTR)])
            b.branch(done)
            b.position_at_end(cases[CALL2])
            b.call(b.inttoptr(word(1), call2), [b.inttoptr(word(2), PTR), b.inttoptr(word(3), PTR)])
            b.branch(done)
            b.position_at_end(cases[COPY])
            dst = b.inttoptr(b.add(word(1), b.mul(s, word(2))), PTR)
            src = b.inttoptr(b.add(word(3), b.mul(s, word(4))), PTR)
            b.call(memcpy, [dst, src, word(5), I1(0)])
            b.branch(done)
            b.position_at_end(done)

        counted_loop(b, I64(0), n, record, name="rec")

    counted_loop(b, I64(0), length, step, name="t")
    b.ret_void()


library.register("scan_run", ARGTYPES, build_scan_run)
