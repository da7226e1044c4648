"""Library kernels: hand-scheduled native functions for matmul and the fused ops.

Elementwise and reduction kernels are generated from the loop-nest IR
(:mod:`tensorc.kernel`). The kernels whose speed comes from a schedule the
loop-nest IR does not express yet (register-tiled GEMM with packing,
flash-style attention with an online softmax, two-pass row kernels with
float32 statistics) are written once, per dtype, as LLVM IR generators in
``tensorc/backends/llvm/kernels/``, with shapes and strides as run-time
arguments. They are compiled once per process into one module (object code
cached on disk, see :mod:`tensorc.runtime.cache`) and called through ctypes.

A generator registers itself with :func:`register`:

- ``name``: the symbol, e.g. ``"gemm_f32"``;
- ``argtypes``: the ctypes argument types of the C signature ``void name(...)``;
- ``build(module)``: emits the function ``name`` (external linkage) into
  ``module`` (it may add internal helpers; prefix their names with ``name``).

and an implementation of a graph op with :func:`implement`: ``impl(ctx, *arrays)``
has the signature of the op's numpy reference (``ctx.node`` is the node) and
returns its result, or ``None`` when it does not handle that case (a dtype,
an attribute), in which case the reference runs instead.

>>> from tensorc.backends.llvm import library
>>> library.load_kernels()
>>> sorted(library.IMPLS)
['fused_attention', 'fused_attention_bwd', 'fused_layernorm', 'fused_layernorm_bwd', 'fused_softmax_xent', 'fused_softmax_xent_bwd', 'matmul', 'scatter_add']
"""

from __future__ import annotations

import ctypes
import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import llvmlite.ir as ir


@dataclass(frozen=True)
class LibFunc:
    """One library function: its symbol, C argument types and IR generator."""

    name: str
    argtypes: tuple[Any, ...]
    build: Callable[[ir.Module], None]


LIBRARY: dict[str, LibFunc] = {}
IMPLS: dict[str, Callable[..., Any]] = {}
_KERNEL_MODULES = ("gemm", "matmul", "attention", "norms", "scatter", "scanloop")
_lock = threading.Lock()
_compiled: dict[str, Any] = {}
_engine: Any = None


def register(name: str, argtypes: list[Any] | tuple[Any, ...], build: Callable[[ir.Module], None]) -> None:
    """Add a library function (see the module docstring)."""
    LIBRARY[name] = LibFunc(name, tuple(argtypes), build)


def implement(op: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``impl(ctx, *arrays)`` runs graph op ``op`` natively (``None`` = not handled)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        IMPLS[op] = fn
        return fn

    return deco


def host_vector_bits() -> int:
    """The widest float vector the host CPU has: 512 with AVX-512F, else 256 (AVX2), else 128."""
    import llvmlite.binding as llvm

    feats = llvm.get_host_cpu_features()
    if feats.get("avx512f"):
        return 512
    if feats.get("avx2") or feats.get("avx"):
        return 256
    return 128


def lanes(itemsize: int) -> int:
    """Elements per host vector register for an element of ``itemsize`` bytes (8 for f32 under AVX2)."""
    return host_vector_bits() // (8 * itemsize)


def load_kernels() -> None:
    """Import every kernel module, so that their functions and implementations are registered."""
    for mod in _KERNEL_MODULES:
        try:
            importlib.import_module(f"{__package__}.kernels.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.kernels.{mod}":
                raise


def build_library_module() -> ir.Module:
    """One LLVM module holding every registered library function."""
    load_kernels()
    module = ir.Module(name="tensorc_library")
    for name in sorted(LIBRARY):
        LIBRARY[name].build(module)
    return module


def library_ir() -> str:
    """The LLVM IR text of every registered library function (one module)."""
    return str(build_library_module())


def function(name: str) -> Callable[..., None]:
    """The compiled library function ``name`` as a ctypes callable (the library compiles on first use)."""
    hit = _compiled.get(name)
    if hit is not None:
        return hit
    with _lock:
        if not _compiled:
            _compile_all()
        if name not in _compiled:
            raise KeyError(f"no library function {name!r}; registered: {', '.join(sorted(LIBRARY))}")
        return _compiled[name]


def _compile_all() -> None:
    global _engine
    from .executable import NativeModule, _codegen_digest

    load_kernels()
    # Keyed by the generators' sources and the registered names: a cached library skips building its IR.
    _engine = NativeModule(library_ir, [], source="library\n" + "\n".join(sorted(LIBRARY)) + "\n" + _codegen_digest())
    for name, lf in LIBRARY.items():
        addr = _engine.address(name)
        _compiled[name] = ctypes.CFUNCTYPE(None, *lf.argtypes)(addr)


def native_impl(op: str) -> Callable[..., Any] | None:
    """The native implementation of graph op ``op``, if a kernel module provides one."""
    load_kernels()
    return IMPLS.get(op)
