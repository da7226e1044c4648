"""The graph op ``matmul`` on the native GEMM of :mod:`.gemm`, and the calls other routines make on it.

:func:`matmul` is the native ``matmul`` of the graph op registry (``np.matmul`` with equal batch
dims, float32/float64): it merges batch dims whose strides allow it, folds a batch-broadcast
right operand into M (one big GEMM), loops over the remaining batch dims in Python, and caches
the per-layout arguments (a :class:`_Plan`) so a call costs a few microseconds of Python. It
keeps one workspace per Python thread, so calls cost no allocation or page fault.

:func:`matmul_bias` is ``x @ W + b`` in one GEMM; :func:`prepack` and :func:`bound_calls` serve
the native loop of a scan (:mod:`tensorc.backends.llvm.scanloop`), which packs its weights once
and makes its GEMM calls from native code.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import library
from ..parallel import num_threads
from .gemm import CALL_ARGTYPES, WORKSPACE_ALIGN, blocking

__all__ = ["CALL_ARGTYPES", "DATA_OFFSET", "bound_calls", "matmul", "matmul_bias", "prepack", "workspace"]

_NAMES = {np.dtype(np.float32): "gemm_f32", np.dtype(np.float64): "gemm_f64"}
_MAX_PLANS = 4096


def _find_data_offset() -> int:
    """Where ``PyArrayObject.data`` sits in an ndarray object (after the object header), or 0 if unsure."""
    offset = object.__basicsize__
    probes = [np.arange(5.0)[1:], np.zeros((3, 4), np.float32).T[1:], np.broadcast_to(np.ones(2), (4, 2))]
    for x in probes:
        if ctypes.c_void_p.from_address(id(x) + offset).value != x.ctypes.data:
            return 0
    return offset


DATA_OFFSET = _find_data_offset()


class _ThreadState(threading.local):
    """Per Python thread: the workspace and the argument block of ``gemm_*_call``."""

    def __init__(self) -> None:
        self.nbytes = 0
        self.buffer: np.ndarray | None = None
        self.block = (ctypes.c_int64 * 11)()
        self.block[8] = DATA_OFFSET
        self.block_addr = ctypes.addressof(self.block)

    def grow(self, nbytes: int) -> None:
        self.buffer = np.empty(nbytes + WORKSPACE_ALIGN, np.uint8)
        addr = self.buffer.ctypes.data
        self.block[6] = addr + (-addr % WORKSPACE_ALIGN)
        self.nbytes = nbytes


_state = _ThreadState()


def workspace(nbytes: int) -> int:
    """The address of a 64-byte aligned buffer of at least ``nbytes``, owned by the calling Python thread."""
    if _state.nbytes < nbytes:
        _state.grow(nbytes)
    return _state.block[6]


@dataclass
class _Plan:
    """One (dtype, shapes, strides) layout: everything about a call but the buffer addresses."""

    out_shape: tuple[int, ...]
    fill: str | None = None  # "empty" (an empty output) or "zeros" (K == 0): no native call
    call: Any = None
    offsets: list[tuple[int, int, int]] | None = None  # byte offsets of A, B, C for each native call
    shape: Any = None  # the i64[12] shape block, kept alive with its address
    shape_addr: int = 0
    slot_bytes: int = 0
    slots: int = 0


_plans: dict[tuple[Any, ...], _Plan] = {}


def _merge_batch(sizes: list[int], sa: list[int], sb: list[int], sc: list[int]) -> list[tuple[int, int, int, int]]:
    """Batch dims (size > 1) as (size, sa, sb, sc), merging neighbours whose strides allow it."""
    dims: list[tuple[int, int, int, int]] = []
    for d in zip(sizes, sa, sb, sc):
        if d[0] == 1:
            continue
        if dims:
            n0, a0, b0, c0 = dims[-1]
            n, sa_, sb_, sc_ = d
            if a0 == n * sa_ and b0 == n * sb_ and c0 == n * sc_:
                dims[-1] = (n0 * n, sa_, sb_, sc_)
                continue
        dims.append(d)
    return dims


def _plan(a: np.ndarray, b: np.ndarray) -> _Plan:
    dt = a.dtype
    size = dt.itemsize
    *batch_shape, M, K = a.shape
    N = b.shape[-1]
    out_shape = (*batch_shape, M, N)
    if math.prod(out_shape) == 0:
        return _Plan(out_shape, fill="empty")
    if K == 0:
        return _Plan(out_shape, fill="zeros")
    sa = [s // size for s in a.strides]
    sb = [s // size for s in b.strides]
    sc = [math.prod(out_shape[i + 1:]) for i in range(len(out_shape))]
    nb = len(batch_shape)
    dims = _merge_batch(list(batch_shape), sa[:nb], sb[:nb], sc[:nb])
    sam, sak, sbk, sbn = sa[-2], sa[-1], sb[-2], sb[-1]
    # A right operand broadcast over the batch whose left operand's rows run on through the batch:
    # one GEMM of batch * M rows (as matmul_ref does for a weight expanded over the batch).
    if len(dims) == 1 and dims[0][2] == 0 and dims[0][1] == M * sam:
        M, dims = M * dims[0][0], []
    inner = dims[-1] if dims else (1, 0, 0, 0)
    outer = dims[:-1]
    offsets = [tuple(sum(i * d[j] for i, d in zip(idx, outer)) * size for j in (1, 2, 3))
               for idx in itertools.product(*(range(d[0]) for d in outer))]
    shape = (ctypes.c_int64 * 12)(inner[0], M, N, K, inner[1], sam, sak, inner[2], sbk, sbn, inner[3], N)
    return _Plan(out_shape, call=library.function(_NAMES[dt] + "_call"), offsets=offsets, shape=shape,  # type: ignore[arg-type]
                 shape_addr=ctypes.addressof(shape), slot_bytes=blocking(size).slot_elems(N, K) * size,
                 slots=max(os.cpu_count() or 1, num_threads()))


@library.implement("matmul")
def matmul(ctx: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """``a @ b`` (equal batch dims, rank >= 2) with the native GEMM; ``None`` for dtypes other than f32/f64.

    Operands may be any strided views (transposes, slices, stride-0 broadcasts); no copy is made
    unless a stride is not a multiple of the element size.
    """
    dt = a.dtype
    if dt not in _NAMES or b.dtype != dt or a.ndim < 2 or a.ndim != b.ndim:
        return None
    if any(s % dt.itemsize for s in a.strides + b.strides):
        return matmul(ctx, np.ascontiguousarray(a), np.ascontiguousarray(b))
    plan = _plan_for(a, b)
    if plan.fill is not None:
        return np.zeros(plan.out_shape, dt) if plan.fill == "zeros" else np.empty(plan.out_shape, dt)
    out = np.empty(plan.out_shape, dt)
    _launch(plan, a, b, out)
    return out


def _plan_for(a: np.ndarray, b: np.ndarray) -> _Plan:
    """The cached plan of this (dtype, shapes, strides) layout."""
    key = (a.dtype.char, a.shape, a.strides, b.shape, b.strides)
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) >= _MAX_PLANS:
            _plans.clear()
        plan = _plans[key] = _plan(a, b)
    return plan


def _launch(plan: _Plan, a: np.ndarray, b: np.ndarray, out: np.ndarray, bias: np.ndarray | None = None) -> None:
    """Run ``plan``'s native calls on these arrays, with this thread's workspace and argument block."""
    state = _state
    need = plan.slot_bytes * plan.slots
    if state.nbytes < need:
        state.grow(need)
    block = state.block
    block[7] = state.nbytes // plan.slot_bytes
    if DATA_OFFSET:
        block[0], block[1], block[2] = id(a), id(b), id(out)
    else:
        block[0], block[1], block[2] = a.ctypes.data, b.ctypes.data, out.ctypes.data
    block[10] = bias.ctypes.data if bias is not None else 0
    call, shape_addr, block_addr = plan.call, plan.shape_addr, state.block_addr
    try:
        for oa, ob, oc in plan.offsets:  # type: ignore[union-attr]
            block[3], block[4], block[5] = oa, ob, oc
            call(block_addr, shape_addr)
    finally:
        block[10] = 0


def bound_calls(a: np.ndarray, b: np.ndarray, out: np.ndarray, prepacked: np.ndarray | None = None,
                bias: np.ndarray | None = None) -> list[tuple[int, Any, Any]] | None:
    """The native calls that compute ``out = a @ b`` for these very arrays, to be made later (by the
    native loop of a scan, :mod:`tensorc.backends.llvm.scanloop`): one ``(address of gemm_*_call,
    block, shape)`` per outer batch item, the blocks holding raw data addresses (words 0-2, which
    the caller may re-point) and this thread's workspace. ``prepacked``: ``b`` as :func:`prepack`
    packed it, read instead of packing ``b`` at every call (for one GEMM, not a batch); ``bias``: a
    contiguous row of N elements added to every row of the product (one GEMM only). None where
    :func:`matmul` would not make a native call (other dtypes, empty or K = 0 products,
    misaligned strides, an ``out`` that is not the C-contiguous result)."""
    dt = a.dtype
    if dt not in _NAMES or b.dtype != dt or a.ndim < 2 or a.ndim != b.ndim or out.dtype != dt:
        return None
    if any(s % dt.itemsize for s in a.strides + b.strides) or not out.flags.c_contiguous:
        return None
    plan = _plan_for(a, b)
    if plan.fill is not None or out.shape != plan.out_shape:
        return None
    work = workspace(plan.slot_bytes * plan.slots)
    slots = _state.nbytes // plan.slot_bytes
    fn = ctypes.cast(plan.call, ctypes.c_void_p).value
    assert fn is not None
    single = len(plan.offsets) == 1 and plan.shape[0] == 1  # type: ignore[arg-type, index]
    pre = prepacked.ctypes.data if prepacked is not None and single else 0
    if bias is not None and not (single and _bias_ok(bias, out)):
        return None
    row = bias.ctypes.data if bias is not None else 0
    return [(fn, (ctypes.c_int64 * 11)(a.ctypes.data, b.ctypes.data, out.ctypes.data, oa, ob, oc, work, slots, 0, pre, row),
             plan.shape) for oa, ob, oc in plan.offsets]  # type: ignore[union-attr]


def _bias_ok(bias: np.ndarray, out: np.ndarray) -> bool:
    return bias.ndim == 1 and bias.shape[0] == out.shape[-1] and bias.dtype == out.dtype and bias.strides[0] == bias.itemsize


def matmul_bias(a: np.ndarray, b: np.ndarray, bias: np.ndarray) -> np.ndarray | None:
    """``a @ b + bias`` (``bias``: a contiguous row of N elements) in one pass: the GEMM adds the bias as it
    stores its first depth slice, instead of a loop nest re-reading the product. None where the
    layout is not one GEMM (a batch whose operands do not fold into one) or :func:`matmul` declines."""
    dt = a.dtype
    if dt not in _NAMES or b.dtype != dt or a.ndim < 2 or a.ndim != b.ndim or a.shape[-1] == 0:
        return None
    if any(s % dt.itemsize for s in a.strides + b.strides):
        return None
    plan = _plan_for(a, b)
    if plan.fill is not None or len(plan.offsets) != 1 or plan.shape[0] != 1:  # type: ignore[arg-type, index]
        return None
    out = np.empty(plan.out_shape, dt)
    if not _bias_ok(bias, out):
        return None
    _launch(plan, a, b, out, bias)
    return out


def prepack(b: np.ndarray) -> np.ndarray | None:
    """``b`` (K x N, float32/float64, any element strides) packed for ``pre`` (:func:`bound_calls`), or None
    for other dtypes or layouts. The buffer is 64-byte aligned and ``K * ceil(N / NR) * NR`` elements."""
    dt = b.dtype
    if dt not in _NAMES or b.ndim != 2 or any(s % dt.itemsize for s in b.strides) or 0 in b.shape:
        return None
    k, n = b.shape
    nr = blocking(dt.itemsize).nr
    raw = np.empty(k * -(-n // nr) * nr * dt.itemsize + WORKSPACE_ALIGN, np.uint8)
    start = -raw.ctypes.data % WORKSPACE_ALIGN
    packed = raw[start:start + k * -(-n // nr) * nr * dt.itemsize].view(dt)
    library.function(_NAMES[dt] + "_pack")(b.ctypes.data, k, n, b.strides[0] // dt.itemsize,
                                            b.strides[1] // dt.itemsize, packed.ctypes.data)
    return packed
