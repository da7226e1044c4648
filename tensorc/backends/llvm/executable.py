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
from typing import TYPE_CHECKING, Any

import numpy as np

from ...kernel.lower import LoweredKernel, lower_kernel
from ..reference.schedule_runner import run_kernel, run_schedule
from .codegen import build_module

if TYPE_CHECKING:
    from ...schedule import Schedule
    from ...schedule.kernel import Kernel

_KERNEL_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_initialized = False


def _init_llvm() -> Any:
    global _initialized
    import llvmlite.binding as llvm

    if not _initialized:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        libm = ctypes.util.find_library("m")
        if libm:
            llvm.load_library_permanently(libm)
        _initialized = True
    return llvm


class NativeModule:
    """A compiled module: its own TargetMachine and MCJIT engine, and the address of each entry."""

    def __init__(self, ir_text: str, names: list[str], opt: int = 3) -> None:
        llvm = _init_llvm()
        target = llvm.Target.from_default_triple()
        self.tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
                                               opt=opt, codemodel="jitdefault")
        mod = llvm.parse_assembly(ir_text)
        mod.triple = llvm.get_process_triple()
        mod.data_layout = str(self.tm.target_data)
        mod.verify()
        pto = llvm.create_pipeline_tuning_options(speed_level=opt)
        pto.slp_vectorization = True
        # Unrolling and interleaving made the compile of some loop nests 20x slower (seconds per
        # kernel, for reductions with masked strided loads) for a few percent at run time; the
        # library kernels (GEMM, attention) unroll by hand where it pays.
        pto.loop_unrolling = False
        pto.loop_interleaving = False
        pb = llvm.create_pass_builder(self.tm, pto)
        pb.getModulePassManager().run(mod, pb)
        self.module = mod
        self.optimized_ir = str(mod)
        self.engine = llvm.create_mcjit_compiler(mod, self.tm)
        self.engine.finalize_object()
        self.functions = {n: _KERNEL_FN(self.engine.get_function_address(n)) for n in names}

    def address(self, name: str) -> int:
        """The address of function ``name`` in the compiled code."""
        return self.engine.get_function_address(name)

    def asm(self) -> str:
        """The host assembly of the optimized module."""
        return str(self.tm.emit_assembly(self.module))


def compile_ir(ir_text: str, name: str = "module") -> NativeModule:
    """Compile LLVM IR text for the host CPU (O3); look functions up with ``.address(name)``."""
    from .parallel import load_runtime

    load_runtime()
    return NativeModule(ir_text, [])


class LLVMExecutable:
    """A schedule bound to the LLVM CPU backend: call it with numpy arrays.

    ``native`` maps kernel index to its loop nest; ``module`` is None when no kernel is supported.
    """

    target = "llvm"

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.graph = schedule.graph
        self.native: dict[int, LoweredKernel] = {}
        for k in schedule.kernels:
            lowered = lower_kernel(k, f"k{k.index}")
            if lowered is not None:
                self.native[k.index] = lowered
        self.ir_text = ""
        self.module: NativeModule | None = None
        if self.native:
            funcs = [lk.func for lk in self.native.values()]
            self.ir_text = str(build_module(funcs, self.graph.name))
            self.module = NativeModule(self.ir_text, [f.name for f in funcs])

    @property
    def fallback_kernels(self) -> list[Kernel]:
        """Kernels that run with the reference semantics."""
        return [k for k in self.schedule.kernels if k.index not in self.native]

    def _run_kernel(self, schedule: Schedule, kernel: Kernel, stored: dict[int, Any]) -> None:
        lk = self.native.get(kernel.index)
        if lk is None or self.module is None:
            run_kernel(schedule, kernel, stored)
            return
        outs = {id(o): np.empty(o.shape, o.dtype.np) for o in lk.outputs}
        scratch = {id(o): np.empty(o.shape, o.dtype.np) for o in lk.scratch}
        addrs = []
        for node in lk.args:
            arr = outs.get(id(node), scratch.get(id(node)))
            if arr is None:
                arr = stored.get(id(node))
                if arr is None:  # a const buffer
                    arr = node.attrs["value"].array
                if not arr.flags.c_contiguous:
                    arr = stored[id(node)] = np.ascontiguousarray(arr)
            addrs.append(arr.ctypes.data)
        if any(math.prod(o.shape) for o in lk.outputs):
            table = (ctypes.c_void_p * max(len(addrs), 1))(*addrs)
            self.module.functions[lk.func.name](ctypes.addressof(table))
        stored.update(outs)

    def __call__(self, *args: np.ndarray) -> list[np.ndarray]:
        return run_schedule(self.schedule, args, self._run_kernel)
