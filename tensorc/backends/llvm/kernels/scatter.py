"""``scatter_add`` along axis 0 as a native loop: ``out[idx[i], :] += upd[i, :]``.

The embedding gradient of every language model is one such scatter (``N``
token positions into a ``V x D`` table). numpy's ``np.add.at``, which the
reference uses, goes element by element through a generic loop; this routine
walks the update rows in order and adds each into its table row with a loop
LLVM vectorizes. Rows with the same index are added in order on one thread,
so there is no race and the result does not depend on the thread count.

Indices are checked in numpy first: any index out of range returns None, and the
reference then raises its error naming the op and the bad index.
"""

from __future__ import annotations

import ctypes
from typing import Any

import llvmlite.ir as ir
import numpy as np

from .. import library
from ..parallel import counted_loop

I64 = ir.IntType(64)
PTR = ir.PointerType()
_TYPES = {"f32": ir.FloatType(), "f64": ir.DoubleType()}


def _build(name: str, ft: ir.Type) -> Any:
    def build(module: ir.Module) -> None:
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR, I64, I64]), name=name)
        fn.attributes.add("nounwind")
        out, idx, upd, n, d = fn.args
        for a in (out, idx, upd):
            a.add_attribute("noalias")
        b = ir.IRBuilder(fn.append_basic_block("entry"))

        def row(i: ir.Value) -> None:
            r = b.load(b.gep(idx, [i], source_etype=I64), typ=I64)
            dst = b.gep(out, [b.mul(r, d)], source_etype=ft)
            src = b.gep(upd, [b.mul(i, d)], source_etype=ft)

            def col(j: ir.Value) -> None:
                p = b.gep(dst, [j], source_etype=ft)
                b.store(b.fadd(b.load(p, typ=ft), b.load(b.gep(src, [j], source_etype=ft), typ=ft)), p)

            counted_loop(b, I64(0), d, col, name="j")

        counted_loop(b, I64(0), n, row, name="i")
        b.ret_void()

    return build


for _sfx, _ft in _TYPES.items():
    library.register(f"scatter_add_rows_{_sfx}", [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2,
                     _build(f"scatter_add_rows_{_sfx}", _ft))


@library.implement("scatter_add")
def scatter_add(ctx: Any, x: np.ndarray, idx: np.ndarray, upd: np.ndarray) -> np.ndarray | None:
    """``scatter_add`` along axis 0 of a float32/float64 table; None (the reference runs) otherwise."""
    if ctx.node.attrs["axis"] != 0 or x.dtype not in (np.float32, np.float64) or upd.dtype != x.dtype or x.ndim < 1:
        return None
    flat = np.ascontiguousarray(idx.reshape(-1), dtype=np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= x.shape[0]):
        return None  # the reference raises, naming the op and the index
    out = np.array(x, copy=True, order="C")
    d = int(np.prod(x.shape[1:], dtype=np.int64))
    if flat.size == 0 or d == 0:
        return out
    rows = np.ascontiguousarray(upd.reshape(flat.size, d))
    fn = library.function(f"scatter_add_rows_{'f32' if x.dtype == np.float32 else 'f64'}")
    fn(out.ctypes.data, flat.ctypes.data, rows.ctypes.data, flat.size, d)
    return out
