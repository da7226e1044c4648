"""Parallel loops in generated code, run by OpenMP's runtime (libgomp).

:func:`parallel_for` emits ``for i in range(n)`` whose iterations are split
into contiguous chunks (about four per thread) that the threads of one
``GOMP_parallel`` region claim from a shared atomic counter. The
loop body goes into an outlined function ``void f(ptr data)``; the values it
needs from the enclosing function travel in a stack struct. A region costs
about 1 µs (``shared/research/llvm-cpu-facts.md``: Python thread pools cost
about 60 µs, so they are not used); a loop whose work is below a threshold
calls the outlined function directly on the calling thread, where
``omp_get_num_threads()`` is 1.

Why libgomp: it ships with the system compiler (``libgomp.so.1``), MCJIT
resolves its symbols once the library is loaded, and its workers spin
briefly after a region, so back-to-back kernels do not pay a wake-up. The
thread count is OpenMP's (``OMP_NUM_THREADS``, else every core);
:func:`set_num_threads` changes it for later regions.

>>> import llvmlite.ir as ir
>>> m = ir.Module()
>>> f = ir.Function(m, ir.FunctionType(ir.VoidType(), [ir.IntType(64)]), "f")
>>> b = ir.IRBuilder(f.append_basic_block())
>>> parallel_for(b, f.args[0], [], lambda b, lo, hi, vals: None, "f.par")
>>> _ = b.ret_void()
>>> "GOMP_parallel" in str(m)
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Sequence
from typing import Any

import llvmlite.ir as ir

from ...errors import TensorcError

I32, I64 = ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

_gomp: ctypes.CDLL | None = None

CHUNKS_PER_THREAD = 4  # chunks of a parallel loop per thread (see parallel_for)

#: Body callback: ``body(builder, start, end, values)`` emits the iterations ``start <= i < end``;
#: ``values`` are the captured values, loaded inside the outlined function.
Body = Callable[[ir.IRBuilder, ir.Value, ir.Value, list[ir.Value]], None]


def load_runtime() -> ctypes.CDLL:
    """Load libgomp for this process (once) so that MCJIT can resolve ``GOMP_parallel``."""
    global _gomp
    if _gomp is None:
        import llvmlite.binding as llvm

        name = ctypes.util.find_library("gomp") or "libgomp.so.1"
        try:
            _gomp = ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            raise TensorcError(f"the LLVM backend needs OpenMP's runtime (libgomp.so.1) for parallel kernels: {e}; "
                               "install the system package libgomp1") from None
        llvm.load_library_permanently(name)
    return _gomp


def num_threads() -> int:
    """How many threads a parallel region uses."""
    return int(load_runtime().omp_get_max_threads())


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in later parallel regions (OpenMP's ``omp_set_num_threads``)."""
    if n < 1:
        raise TensorcError(f"set_num_threads: need at least 1 thread, got {n}")
    load_runtime().omp_set_num_threads(int(n))


_blas: list[Any] | None = None


def _blas_controllers() -> list[Any]:
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController

            _blas = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # noqa: BLE001 - no threadpoolctl or an unknown BLAS: nothing to limit
            _blas = []
    return _blas


class one_blas_thread:  # noqa: N801 - used like a function: ``with one_blas_thread():``
    """Run a block with numpy's BLAS on one thread, then restore its thread count.

    OpenBLAS workers and OpenMP workers both spin-wait after their parallel regions; on a
    2-core machine the two pools then take turns on the cores, and a 30 µs kernel took
    8.7 ms next to a numpy matmul (measured). Inside a compiled program OpenMP runs the
    parallel loops, so BLAS (used only by reference fallbacks) gets one thread. Costs about
    1 µs per library: a direct call into the BLAS library through threadpoolctl's handle.
    """

    __slots__ = ("saved",)

    def __enter__(self) -> None:
        libs = _blas_controllers()
        self.saved = [lib.get_num_threads() for lib in libs]
        for lib in libs:
            lib.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        for lib, n in zip(_blas_controllers(), self.saved):
            lib.set_num_threads(n)


def _declare(module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, list(args)), name=name)
        fn.attributes.add("nounwind")
    return fn


def parallel_for(b: ir.IRBuilder, n: ir.Value, captured: Sequence[ir.Value], body: Body, name: str,
                 serial_below: ir.Value | None = None, grain: int = 1) -> None:
    """Emit ``for i in range(n)`` at ``b``, chunked over OpenMP threads.

    ``captured``: values of the current function the body reads (any first-class type).
    ``serial_below``: an ``i1``; when true at run time the loop runs on the calling thread
    without opening a region (for small work). ``grain``: chunk starts are rounded to a
    multiple of it (so each thread gets whole vector or cache blocks).
    """
    module = b.module
    load_runtime()
    tys = [v.type for v in captured]
    struct = ir.LiteralStructType([I64, I64, *tys])  # total, next chunk (claimed atomically), captured...
    outlined = ir.Function(module, ir.FunctionType(VOID, [PTR]), name=name)
    outlined.linkage = "internal"
    outlined.attributes.add("nounwind")
    ob = ir.IRBuilder(outlined.append_basic_block("entry"))
    data = outlined.args[0]

    def field(i: int) -> ir.Value:
        return ob.gep(data, [I32(0), I32(i)], source_etype=struct, inbounds=True)

    total = ob.load(field(0), typ=I64)
    vals = [ob.load(field(i + 2), typ=t) for i, t in enumerate(tys)]
    nth = ob.sext(ob.call(_declare(module, "omp_get_num_threads", I32, []), []), I64)
    # About CHUNKS_PER_THREAD chunks per thread, each a whole number of grains, claimed from a shared
    # counter: a thread the OS delays (the machine is shared) leaves its chunks to the others.
    g = I64(grain)
    blocks = ob.udiv(ob.add(total, I64(grain - 1)), g)
    want = ob.mul(nth, I64(CHUNKS_PER_THREAD))
    per = ob.udiv(ob.add(blocks, ob.sub(want, I64(1))), want)
    per = ob.select(ob.icmp_unsigned("<", per, I64(1)), I64(1), per)
    chunk = ob.mul(per, g)
    head = outlined.append_basic_block("chunk.head")
    work = outlined.append_basic_block("chunk.work")
    done = outlined.append_basic_block("chunk.done")
    ob.branch(head)
    ob.position_at_end(head)
    claimed = ob.atomic_rmw("add", field(1), I64(1), "monotonic")
    start = ob.mul(claimed, chunk)
    ob.cbranch(ob.icmp_unsigned("<", start, total), work, done)
    ob.position_at_end(work)
    stop = ob.add(start, chunk)
    stop = ob.select(ob.icmp_unsigned("<", stop, total), stop, total)
    body(ob, start, stop, vals)
    ob.branch(head)
    ob.position_at_end(done)
    ob.ret_void()

    slot = b.alloca(struct)
    slot.type = PTR
    for i, v in enumerate([n, I64(0), *captured]):
        b.store(v, b.gep(slot, [I32(0), I32(i)], source_etype=struct, inbounds=True))
    gomp = _declare(module, "GOMP_parallel", VOID, [PTR, PTR, I32, I32])
    if serial_below is None:
        b.call(gomp, [outlined, slot, I32(0), I32(0)])
        return
    with b.if_else(serial_below) as (serial, parallel):
        with serial:
            b.call(outlined, [slot])
        with parallel:
            b.call(gomp, [outlined, slot, I32(0), I32(0)])


def counted_loop(b: ir.IRBuilder, start: ir.Value, stop: ir.Value, body: Callable[[ir.Value], None],
                 step: int | ir.Value = 1, name: str = "i") -> None:
    """Emit ``for i in range(start, stop, step)`` at ``b`` (``step`` > 0, a constant or a run-time
    value); ``body(i)`` emits one iteration."""
    fn = b.function
    pre = b.block
    head = fn.append_basic_block(f"{name}.head")
    loop = fn.append_basic_block(f"{name}.body")
    done = fn.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name=name)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, stop), loop, done)
    b.position_at_end(loop)
    body(i)
    nxt = b.add(i, I64(step) if isinstance(step, int) else step, flags=("nsw",))
    i.add_incoming(nxt, b.block)
    b.branch(head)
    b.position_at_end(done)
