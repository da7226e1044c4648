"""``LLVMExecutable``: a schedule whose supported kernels run as native code.

All kernels that :func:`~tensorc.kernel.lower.lower_kernel` accepts are
compiled into one LLVM module (host triple, data layout, CPU and features;
the new pass manager at O3) and called through ctypes, one call per kernel
with a table of buffer addresses. The other kernels run with the reference
semantics (:func:`~tensorc.backends.reference.schedule_runner.run_kernel`),
so every program runs, natively where it can.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...config import config
from ...errors import TensorcError
from ...ir.node import Node
from ...ir.registry import REGISTRY
from ...kernel.lower import LoweredKernel, lower_kernel
from ..reference.interpreter import bind_inputs, evaluate_node
from ..reference.schedule_runner import collect_outputs, run_kernel
from .codegen import build_module
from .kernels.matmul import matmul_bias
from .library import native_impl
from .parallel import load_runtime, one_blas_thread

if TYPE_CHECKING:
    from ...schedule import Schedule
    from ...schedule.kernel import Kernel

_KERNEL_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_initialized = False


def _keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS.

    A training step allocates the same large arrays every call (matmul results, epilogue
    outputs: megabytes each). By default glibc maps each array over 128 KiB to fresh pages and
    unmaps it when freed, so every step page-faults its memory in again: 12 % of a GPT step
    here (490 -> 458 ms). Arrays up to 32 MiB now come from the heap, and the heap is trimmed
    only above 1 GiB free. Skipped when the user sets ``MALLOC_*`` variables or libc has no
    ``mallopt`` (not glibc).
    """
    import os

    if any(k.startswith("MALLOC_") for k in os.environ):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_trim_threshold, 1 << 30)
    mallopt(m_mmap_threshold, 32 << 20)


def _init_llvm() -> Any:
    global _initialized
    import llvmlite.binding as llvm

    if not _initialized:
        _keep_freed_memory()
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        libm = ctypes.util.find_library("m")
        if libm:
            llvm.load_library_permanently(libm)
        _initialized = True
    return llvm


def _target_machine(opt: int) -> Any:
    llvm = _init_llvm()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
                                        opt=opt, codemodel="jitdefault")


def _optimize(tm: Any, ir_text: str, opt: int) -> Any:
    llvm = _init_llvm()
    mod = llvm.parse_assembly(ir_text)
    mod.triple = llvm.get_process_triple()
    mod.data_layout = str(tm.target_data)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=opt)
    pto.slp_vectorization = True
    # Unrolling and interleaving made the compile of some loop nests 20x slower (seconds per
    # kernel, for reductions with masked strided loads) for a few percent at run time; the
    # library kernels (GEMM, attention) unroll by hand where it pays.
    pto.loop_unrolling = False
    pto.loop_interleaving = False
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


_digest: str | None = None


def _codegen_digest() -> str:
    """A hash of the code generator's sources: compiled code is stale when they change."""
    global _digest
    if _digest is None:
        import hashlib
        from pathlib import Path

        here = Path(__file__).parent
        h = hashlib.sha256()
        for f in sorted([*here.glob("*.py"), *here.glob("kernels/*.py"), *(here.parent.parent / "kernel").glob("*.py")]):
            h.update(f.read_bytes())
        _digest = h.hexdigest()
    return _digest


class NativeModule:
    """A compiled module: its own TargetMachine and MCJIT engine, and the address of each entry.

    The object code comes from the disk cache (:mod:`tensorc.runtime.cache`) when an entry
    for this IR, CPU and version exists (``cached`` is then True); otherwise the IR is
    optimized (new pass manager), compiled, and stored there.
    """

    def __init__(self, ir_text: str | Callable[[], str], names: list[str], opt: int = 3, source: str | None = None) -> None:
        """``ir_text``: the IR, or a function building it (called only when the cache misses, if
        ``source`` is given: a text that determines the IR, cheaper to produce, used as the key)."""
        import llvmlite

        from ... import __version__
        from ...runtime import cache

        llvm = _init_llvm()
        load_runtime()  # libgomp's symbols must resolve even when the code comes from the cache
        self._ir, self.opt = ir_text, opt
        self.tm = _target_machine(opt)
        if source is None:
            source = self.ir_text
        k = cache.key(source, "llvm", llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(),
                      __version__, llvmlite.__version__, str(opt), _codegen_digest())
        obj = cache.load(k)
        self.cached = obj is not None
        self._module = None
        if obj is None:
            self._module = _optimize(self.tm, self.ir_text, opt)
            obj = self.tm.emit_object(self._module)
            cache.store(k, obj)
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), self.tm)
        self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self.engine.finalize_object()
        self.functions = {n: _KERNEL_FN(self.engine.get_function_address(n)) for n in names}

    @property
    def ir_text(self) -> str:
        """The LLVM IR (built now if the code came from the cache by its source key)."""
        if callable(self._ir):
            self._ir = self._ir()
        return self._ir

    @property
    def module(self) -> Any:
        """The optimized LLVM module (rebuilt from the IR when the code came from the cache)."""
        if self._module is None:
            self._module = _optimize(self.tm, self.ir_text, self.opt)
        return self._module

    @property
    def optimized_ir(self) -> str:
        """The LLVM IR after the optimization pipeline (what was compiled)."""
        return str(self.module)

    def address(self, name: str) -> int:
        """The address of function ``name`` in the compiled code."""
        addr = self.engine.get_function_address(name)
        if not addr:
            raise KeyError(f"no function {name!r} in the compiled module")
        return addr

    def asm(self) -> str:
        """The host assembly of the optimized module."""
        return str(self.tm.emit_assembly(self.module))


def compile_ir(ir_text: str, name: str = "module") -> NativeModule:
    """Compile LLVM IR text for the host CPU (O3); look functions up with ``.address(name)``."""
    return NativeModule(ir_text, [])


LIBRARY_OPS = ("matmul", "fused_attention", "fused_attention_bwd", "fused_layernorm", "fused_layernorm_bwd",
               "fused_softmax_xent", "fused_softmax_xent_bwd", "scatter_add")


@dataclass
class LibraryStep:
    """A kernel built around one library routine (``node``: a matmul or a fused op).

    The views it reads through are numpy views; ``impl`` computes ``node`` natively; the
    elementwise epilogue (matmul + bias + activation) is the loop nest ``epilogue``, which reads
    the routine's result from memory, or runs with the reference semantics when it has none."""

    kernel: Kernel
    node: Node
    impl: Callable[..., Any]
    epilogue: LoweredKernel | None
    body: LLVMExecutable | None = None  # a scan's body, compiled on its own
    native_scan: Any = None  # its native loop (:class:`~tensorc.backends.llvm.scanloop.NativeScan`), if it has one
    bias: Node | None = None  # matmul + bias: the broadcast bias operand, added by the GEMM itself
    result: Node | None = None  # ... and the sum, the kernel's output


class LLVMExecutable:
    """A schedule bound to the LLVM CPU backend: call it with numpy arrays.

    ``native`` maps kernel index to its loop nest, ``library`` to its library step (a matmul or
    fused op run by a hand-scheduled routine of :mod:`tensorc.backends.llvm.library`, or a scan);
    ``module`` is None when no kernel has a loop nest.

    Running: the buffers that loop-nest kernels write live in an arena allocated once from the
    buffer plan (one block per slot, reused across calls), so each such kernel's table of
    buffer addresses is built once; only the addresses of the call's inputs and of fresh output
    arrays are written per call. Graph outputs are new arrays on every call (a caller may keep
    them). Consequently one executable must not run in two threads at once.
    """

    target = "llvm"

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.graph = schedule.graph
        self.native: dict[int, LoweredKernel] = {}
        self.library: dict[int, LibraryStep] = {}
        for k in schedule.kernels:
            lowered = lower_kernel(k, f"k{k.index}")
            if lowered is not None:
                self.native[k.index] = lowered
                continue
            step = _library_step(k)
            if step is not None:
                self.library[k.index] = step
        funcs = [lk.func for lk in self.native.values()]
        funcs += [st.epilogue.func for st in self.library.values() if st.epilogue is not None]
        self.module: NativeModule | None = None
        if funcs:
            # Keyed by the loop nests' text, so a cached program skips building its LLVM IR.
            name = self.graph.name
            self.module = NativeModule(lambda: str(build_module(funcs, name)), [f.name for f in funcs],
                                       source="\n".join(str(f) for f in funcs))
        self._prepare()

    @property
    def ir_text(self) -> str:
        """The LLVM IR of the loop-nest kernels ("" when there are none)."""
        return self.module.ir_text if self.module is not None else ""

    @property
    def fallback_kernels(self) -> list[Kernel]:
        """Kernels that run with the reference semantics."""
        return [k for k in self.schedule.kernels if k.index not in self.native and k.index not in self.library]

    # ------------------------------------------------------------------ the plan, made once

    def _prepare(self) -> None:
        sched = self.schedule
        n = len(sched.kernels)
        self._dying: list[list[int]] = [[] for _ in range(n)]
        for b in sched.buffers:
            if b.producer is not None and b.last_use < n:
                self._dying[b.last_use].append(id(b.node))
        self._resident: dict[int, np.ndarray] = {id(b.node): b.node.attrs["value"].array
                                                 for b in sched.buffers if b.node.op == "const"}
        returned = {id(sched.output_source(o)[0]) for o in self.graph.outputs}
        # Arena views for what loop nests write (not returned values: the caller keeps those).
        arena_nodes = [o for lk in self.native.values() for o in lk.outputs if id(o) not in returned]
        slots: dict[int, np.ndarray] = {}
        for node in arena_nodes:
            buf = sched.buffer_of.get(id(node))
            if buf is None or buf.slot is None:
                continue
            if buf.slot not in slots:
                slots[buf.slot] = _aligned(sched.plan.slot_bytes[buf.slot])
            self._resident[id(node)] = slots[buf.slot][:buf.nbytes].view(node.dtype.np).reshape(node.shape)
        self.arena_bytes = sum(a.nbytes for a in slots.values())
        self._seconds: list[list[float]] = [[] for _ in range(n)]  # per-kernel times at debug >= 2
        self._steps: list[Callable[[dict[int, Any]], None]] = []
        for k in sched.kernels:
            if k.index in self.native:
                self._steps.append(self._native_step(self.native[k.index]))
            elif k.index in self.library:
                step = self.library[k.index]
                epi = self._native_step(step.epilogue) if step.epilogue is not None else None
                if step.bias is not None:
                    self._steps.append(lambda stored, step=step, epi=epi: self._run_bias(step, epi, stored))
                else:
                    self._steps.append(lambda stored, step=step, epi=epi: self._run_library(step, epi, stored))
            else:
                self._steps.append(lambda stored, k=k: run_kernel(sched, k, stored))

    def _native_step(self, lk: LoweredKernel) -> Callable[[dict[int, Any]], None]:
        """A closure running loop nest ``lk``: its address table is filled once, but for per-call buffers."""
        assert self.module is not None
        fn = self.module.functions[lk.func.name]
        table = (ctypes.c_void_p * max(len(lk.args), 1))()
        keep: list[np.ndarray] = []  # arrays whose addresses the table holds
        dynamic: list[tuple[int, int]] = []  # (table slot, node id) read from the call's values
        fresh: list[tuple[int, int, tuple[int, ...], Any]] = []  # outputs allocated per call
        scratch = {id(o) for o in lk.scratch}
        outputs = {id(o) for o in lk.outputs}
        for i, node in enumerate(lk.args):
            arr = self._resident.get(id(node))
            if arr is None and id(node) in scratch:
                arr = np.empty(node.shape, node.dtype.np)
            if arr is not None:
                if not arr.flags.c_contiguous:
                    arr = np.ascontiguousarray(arr)
                keep.append(arr)
                table[i] = arr.ctypes.data
            elif id(node) in outputs:
                fresh.append((i, id(node), tuple(node.shape), node.dtype.np))
            else:
                dynamic.append((i, id(node)))
        runs = any(math.prod(o.shape) for o in lk.outputs)
        addr = ctypes.addressof(table)
        resident = self._resident

        def step(stored: dict[int, Any]) -> None:
            for i, key in dynamic:
                arr = stored[key]
                if not arr.flags.c_contiguous:
                    arr = stored[key] = np.ascontiguousarray(arr)
                table[i] = arr.ctypes.data
            for i, key, shape, dt in fresh:
                arr = stored[key] = np.empty(shape, dt)
                table[i] = arr.ctypes.data
            if runs:
                fn(addr)
            for o in lk.outputs:
                if id(o) in resident:
                    stored[id(o)] = resident[id(o)]

        step.keep = keep  # type: ignore[attr-defined]
        return step

    # ------------------------------------------------------------------ profile

    def how(self, kernel: Kernel) -> str:
        """How a kernel runs: ``loop`` (a loop nest), ``library``, ``library+loop`` (with an epilogue), ``scan`` or ``reference``."""
        if kernel.index in self.native:
            return "loop"
        step = self.library.get(kernel.index)
        if step is None:
            return "reference"
        if step.body is not None:
            return "scan (native)" if step.native_scan is not None else "scan"
        if step.bias is not None:
            return "library"  # the GEMM adds the bias
        return "library+loop" if step.epilogue is not None else "library"

    def profile_report(self, top: int | None = None) -> str:
        """Per-kernel time of the calls made with ``TENSORC_DEBUG >= 2`` (median per call), slowest first."""
        rows = []
        for k, times in zip(self.schedule.kernels, self._seconds):
            if times:
                med = float(np.median(times))
                rows.append((med, k))
        if not rows:
            return "no profile: run calls with TENSORC_DEBUG=2 (or tc.config(debug=2))"
        total = sum(r[0] for r in rows)
        calls = max(len(t) for t in self._seconds)
        lines = [f"per-kernel profile of {self.graph.name} ({calls} calls, median; {1e3 * total:.2f} ms per call in kernels)",
                 f"{'kernel':>6}  {'pattern':<28} {'how':<13} {'ms':>8} {'%':>6} {'GFLOP/s':>8} {'GB/s':>7}"]
        for med, k in sorted(rows, key=lambda r: -r[0])[:top]:
            gf = k.flops / med / 1e9 if med else 0.0
            gb = k.bytes / med / 1e9 if med else 0.0
            lines.append(f"{k.index:>6}  {k.pattern[:28]:<28} {self.how(k):<13} {1e3 * med:8.3f} {100 * med / total:6.1f} "
                         f"{gf:8.1f} {gb:7.1f}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ running

    def _run_library(self, step: LibraryStep, epilogue: Callable[[dict[int, Any]], None] | None,
                     stored: dict[int, Any]) -> None:
        kernel, local, schedule = step.kernel, {}, self.schedule
        for node in kernel.exec_nodes:
            operands = [_operand(schedule, kernel, inp, local, stored) for inp in node.inputs]
            local[id(node)] = evaluate_node(node, operands, step.impl if node is step.node else None)
            if node is step.node:
                break
        if epilogue is not None:
            stored[id(step.node)] = local[id(step.node)]
            epilogue(stored)
            if step.node not in kernel.outputs:
                del stored[id(step.node)]
            return
        for node in kernel.exec_nodes:
            if id(node) not in local:
                operands = [_operand(schedule, kernel, inp, local, stored) for inp in node.inputs]
                local[id(node)] = evaluate_node(node, operands)
        for out in kernel.outputs:
            stored[id(out)] = local[id(out)]

    def _run_bias(self, step: LibraryStep, epilogue: Callable[[dict[int, Any]], None] | None, stored: dict[int, Any]) -> None:
        """A matmul + bias kernel: one GEMM that adds the bias row as it stores (the generic path if it declines)."""
        kernel, local, schedule = step.kernel, {}, self.schedule
        for node in kernel.exec_nodes:  # the views of the operands and of the broadcast bias
            if node is step.node:
                break
            local[id(node)] = evaluate_node(node, [_operand(schedule, kernel, i, local, stored) for i in node.inputs])
        a, b = (_operand(schedule, kernel, i, local, stored) for i in step.node.inputs)
        bias = bias_row(_bias_value(schedule, kernel, step.bias, local, stored))  # type: ignore[arg-type]
        out = matmul_bias(a, b, bias) if bias is not None else None
        if out is None:
            self._run_library(step, epilogue, stored)
            return
        stored[id(step.result)] = out.reshape(step.result.shape)  # type: ignore[union-attr]

    def __call__(self, *args: np.ndarray) -> list[np.ndarray]:
        sched = self.schedule
        stored = bind_inputs(self.graph, args)
        stored.update(self._resident)
        timed = config.get("debug") >= 2
        with one_blas_thread():
            for step, dying, times in zip(self._steps, self._dying, self._seconds):
                if timed:
                    t0 = time.perf_counter()
                    step(stored)
                    times.append(time.perf_counter() - t0)
                else:
                    step(stored)
                for key in dying:
                    stored.pop(key, None)
        return collect_outputs(sched, stored)


def _aligned(nbytes: int, align: int = 64) -> np.ndarray:
    """``nbytes`` bytes starting at a multiple of ``align``."""
    raw = np.empty(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


def _operand(schedule: Schedule, kernel: Kernel, inp: Node, local: dict[int, Any], stored: dict[int, Any]) -> Any:
    if id(inp) in local:
        return local[id(inp)]
    if id(inp) in stored:
        return stored[id(inp)]
    if inp.op == "const":
        return inp.attrs["value"].array
    raise TensorcError(f"kernel {kernel.index} ({kernel.pattern}) reads {schedule.name(inp)}, which no earlier "
                       "kernel stored (scheduler bug)")


def _scan_step(kernel: Kernel) -> LibraryStep | None:
    """A scan kernel: its body schedule compiled once, run by the scan's loop once per step."""
    scans = [n for n in kernel.nodes if n.op == "scan"]
    if len(scans) != 1 or kernel.body is None:
        return None
    from .scanloop import NativeScan

    body = LLVMExecutable(kernel.body)
    native = NativeScan.build(scans[0], body)
    ref = REGISTRY["scan"].ref

    class _Ctx:
        __slots__ = ("node",)

        def __init__(self, node: Node) -> None:
            self.node = node

        def run(self, graph: Any, args: list[np.ndarray]) -> list[np.ndarray]:
            return body(*args)

    def run_scan(ctx: Any, *args: np.ndarray) -> Any:
        if native is not None:
            out = native(args)
            if out is not None:
                return out
        return ref(_Ctx(ctx.node), *args)

    return LibraryStep(kernel, scans[0], run_scan, None, body, native)


def _bias_value(schedule: Schedule, kernel: Kernel, node: Node, local: dict[int, Any], stored: dict[int, Any]) -> np.ndarray:
    """The value of a bias operand, through the views of ``kernel`` between it and what is stored."""
    if id(node) in local or id(node) in stored or node.op == "const":
        return _operand(schedule, kernel, node, local, stored)
    value = evaluate_node(node, [_bias_value(schedule, kernel, node.inputs[0], local, stored)])
    local[id(node)] = value
    return value


def bias_row(value: np.ndarray) -> np.ndarray | None:
    """The row a broadcast bias repeats (its last axis), when every other axis has stride 0; else None."""
    if value.ndim == 0 or any(s for s in value.strides[:-1]):
        return None
    return np.ascontiguousarray(value[(0,) * (value.ndim - 1)])


def _bias_of(kernel: Kernel, node: Node) -> tuple[Node, Node] | None:
    """``(bias operand, sum)`` when ``kernel`` is ``node`` (a matmul) plus a bias broadcast along its rows and
    returns only the sum (its views aside), else None."""
    from ...schedule.views import MOVEMENT_OPS

    rest = [n for n in kernel.nodes if n is not node and n.op != "tuple_get" and n.op not in MOVEMENT_OPS]
    if node.op != "matmul" or len(rest) != 1 or rest[0].op != "add" or list(kernel.outputs) != [rest[0]]:
        return None
    add, exec_ids = rest[0], {id(n) for n in kernel.exec_nodes}

    def source(n: Node, ops: tuple[str, ...]) -> Node:
        while n.op in ops and id(n) in exec_ids:
            n = n.inputs[0]
        return n

    # the product, maybe reshaped (a batch folded into one GEMM's rows), plus a broadcast row
    sides = [source(i, ("reshape",)) is node for i in add.inputs]
    if sides.count(True) != 1 or add.shape[-1] != node.shape[-1]:
        return None
    other = add.inputs[sides.index(False)]
    src = source(other, ("reshape", "expand"))
    if math.prod(src.shape) != node.shape[-1] or src.dtype != node.dtype:
        return None
    # the kernel's other views must not read the product or the sum (they run before the GEMM)
    after = {id(node), id(add)}
    for n in kernel.exec_nodes:
        if any(id(i) in after for i in n.inputs):
            after.add(id(n))
    if any(id(n) in after and n is not add and n is not node and n.op != "reshape" for n in kernel.exec_nodes):
        return None
    return other, add


def _library_step(kernel: Kernel) -> LibraryStep | None:
    """The library step of ``kernel`` when it is built around a matmul or fused op with a native routine."""
    if kernel.body is not None:
        return _scan_step(kernel)
    nodes = [n for n in kernel.nodes if n.op in LIBRARY_OPS]
    if len(nodes) != 1:
        return None
    node = nodes[0]
    impl = native_impl(node.op)
    if impl is None:
        return None
    rest = [n for n in kernel.nodes if n is not node and n.op != "tuple_get"]
    epilogue = None
    if rest and not node.is_tuple:
        epilogue = lower_kernel(kernel, f"k{kernel.index}_epilogue", frozenset({id(node)}))
    bias = _bias_of(kernel, node)
    if bias is not None and node.dtype.np in (np.float32, np.float64):
        return LibraryStep(kernel, node, impl, epilogue, bias=bias[0], result=bias[1])
    return LibraryStep(kernel, node, impl, epilogue)
