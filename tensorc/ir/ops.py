"""The primitive ops: type rule, numpy reference semantics and cost of each.

Elementwise primitives take operands of one shape and one dtype: the frontend
makes broadcasting (``reshape`` + ``expand``) and promotion (``cast``) explicit
nodes, so every later stage sees them as views and casts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import DTypeError, TensorcError
from . import dtypes
from .dtypes import DType
from .node import Attrs
from .registry import OpDef, check, check_dtype, register

Type = tuple[Any, Any]

# ----------------------------------------------------------------------------- helpers


def _same_operands(types: list[Type]) -> None:
    shapes = {s for s, _ in types}
    check(len(shapes) == 1, "elementwise operands must have one shape (broadcast first)")
    kinds = {d for _, d in types}
    check_dtype(len(kinds) == 1, "elementwise operands must have one dtype (cast first)")


def _float_only(name: str, dt: DType) -> None:
    check_dtype(dt.is_float, f"{name} needs a floating-point operand, got {dt.name}")


def _numeric(name: str, dt: DType) -> None:
    check_dtype(not dt.is_bool, f"{name} is not defined on bool")


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _unary(name: str, fn: Any, *, domain: str = "float", differentiable: bool = True, flops: int = 1) -> None:
    def infer(types: list[Type], attrs: Attrs) -> Type:
        (shape, dt), = types
        if domain == "float":
            _float_only(name, dt)
        elif domain == "numeric":
            _numeric(name, dt)
        elif domain == "bool":
            check_dtype(dt.is_bool, f"{name} needs a bool operand, got {dt.name}")
        return shape, dt

    register(OpDef(name, "elementwise", infer, lambda ctx, x: fn(x), differentiable=differentiable, flops_per_element=flops))


def _binary(name: str, fn: Any, *, domain: str = "numeric", result: str = "same", differentiable: bool = True, symbol: str = ",") -> None:
    def infer(types: list[Type], attrs: Attrs) -> Type:
        check(len(types) == 2, f"{name} takes 2 operands")
        _same_operands(types)
        shape, dt = types[0]
        if domain == "float":
            _float_only(name, dt)
        elif domain == "numeric":
            _numeric(name, dt)
        elif domain == "bool":
            check_dtype(dt.is_bool, f"{name} needs bool operands, got {dt.name}")
        return shape, (dtypes.bool_ if result == "bool" else dt)

    register(OpDef(name, "elementwise", infer, lambda ctx, a, b: fn(a, b), differentiable=differentiable, symbol=symbol))


def _int_floordiv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu" and np.any(b == 0):
        raise ZeroDivisionError("integer division by zero")
    return np.floor_divide(a, b)


def _int_mod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu" and np.any(b == 0):
        raise ZeroDivisionError("integer modulo by zero")
    return np.mod(a, b)


def _int_pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu" and np.any(b < 0):
        raise ZeroDivisionError("integers to negative integer powers are not allowed")
    return np.power(a, b)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Stable for large |x|: exp is only taken of non-positive numbers.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


# ----------------------------------------------------------------------------- elementwise


_unary("neg", np.negative, domain="numeric")
_unary("exp", np.exp, flops=8)
_unary("log", np.log, flops=8)
_unary("sqrt", np.sqrt, flops=4)
_unary("rsqrt", lambda x: 1 / np.sqrt(x), flops=4)
_unary("reciprocal", lambda x: 1 / x, flops=4)
_unary("tanh", np.tanh, flops=8)
_unary("sigmoid", _sigmoid, flops=8)
_unary("sin", np.sin, flops=8)
_unary("cos", np.cos, flops=8)
_unary("erf", _erf, flops=12)
_unary("abs", np.abs, domain="numeric")
_unary("sign", np.sign, domain="numeric", differentiable=False)
_unary("floor", np.floor, differentiable=False)
_unary("logical_not", np.logical_not, domain="bool", differentiable=False)

_binary("add", np.add, symbol="+")
_binary("sub", np.subtract, symbol="-")
_binary("mul", np.multiply, symbol="*")
_binary("div", np.divide, domain="float", symbol="/")
_binary("pow", _int_pow, symbol="**")
_binary("maximum", np.maximum)
_binary("minimum", np.minimum)
_binary("floordiv", _int_floordiv, differentiable=False, symbol="//")
_binary("mod", _int_mod, symbol="%")
for _name, _fn, _sym in [
    ("eq", np.equal, "=="), ("ne", np.not_equal, "!="), ("lt", np.less, "<"),
    ("le", np.less_equal, "<="), ("gt", np.greater, ">"), ("ge", np.greater_equal, ">="),
]:
    _binary(_name, _fn, domain="any", result="bool", differentiable=False, symbol=_sym)
_binary("logical_and", np.logical_and, domain="bool", differentiable=False, symbol="&")
_binary("logical_or", np.logical_or, domain="bool", differentiable=False, symbol="|")


def _where_infer(types: list[Type], attrs: Attrs) -> Type:
    check(len(types) == 3, "where takes (cond, a, b)")
    (cs, cd), (as_, ad), (bs, bd) = types
    check(cs == as_ == bs, "where operands must have one shape (broadcast first)")
    check_dtype(cd.is_bool, f"where's condition must be bool, got {cd.name}")
    check_dtype(ad == bd, "where's branches must have one dtype (cast first)")
    return as_, ad


register(OpDef("where", "elementwise", _where_infer, lambda ctx, c, a, b: np.where(c, a, b)))


def _cast_infer(types: list[Type], attrs: Attrs) -> Type:
    (shape, _), = types
    return shape, attrs["dtype"]


def _cast_ref(ctx: Any, x: np.ndarray) -> np.ndarray:
    to: DType = ctx.node.attrs["dtype"]
    if to.is_int and x.dtype.kind == "f":
        x = np.trunc(x)  # C semantics: truncate toward zero
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(to.np)


register(OpDef("cast", "elementwise", _cast_infer, _cast_ref))

# ----------------------------------------------------------------------------- reductions


def _reduce_infer(name: str) -> Any:
    def infer(types: list[Type], attrs: Attrs) -> Type:
        (shape, dt), = types
        axes = attrs["axes"]
        check(all(0 <= a < len(shape) for a in axes) and len(set(axes)) == len(axes) and list(axes) == sorted(axes),
              f"{name}: axes {axes} must be sorted, unique and within rank {len(shape)}")
        _numeric(name, dt)
        if name == "max":
            check(all(shape[a] > 0 for a in axes), f"max over an empty axis (shape {shape}, axes {axes}) has no identity")
        return tuple(s for i, s in enumerate(shape) if i not in axes), dt

    return infer


register(OpDef("sum", "reduce", _reduce_infer("sum"), lambda ctx, x: np.sum(x, axis=ctx.node.attrs["axes"], dtype=x.dtype)))
register(OpDef("max", "reduce", _reduce_infer("max"), lambda ctx, x: np.max(x, axis=ctx.node.attrs["axes"])))

# ----------------------------------------------------------------------------- movement


def _reshape_infer(types: list[Type], attrs: Attrs) -> Type:
    (shape, dt), = types
    new = attrs["shape"]
    check(all(s >= 0 for s in new), f"reshape to negative size {new}")
    check(math.prod(new) == math.prod(shape), f"cannot reshape {math.prod(shape)} elements {tuple(shape)} to {new}")
    return tuple(new), dt


def _permute_infer(types: list[Type], attrs: Attrs) -> Type:
    (shape, dt), = types
    dims = attrs["dims"]
    check(sorted(dims) == list(range(len(shape))), f"permute dims {dims} are not a permutation of rank {len(shape)}")
    return tuple(shape[d] for d in dims), dt


def _expand_infer(types: list[Type], attrs: Attrs) -> Type:
    (shape, dt), = types
    new = attrs["shape"]
    check(len(new) == len(shape), f"expand {shape} to {new}: ranks differ (reshape first)")
    check(all(s == n or s == 1 for s, n in zip(shape, new)), f"cannot expand {shape} to {new}")
    return tuple(new), dt


def _slice_infer(types: list[Type], attrs: Attrs) -> Type:
    (shape, dt), = types
    starts, stops, steps = attrs["starts"], attrs["stops"], attrs["steps"]
    check(len(starts) == len(stops) == len(steps) == len(shape), f"slice needs one (start, stop, step) per axis of {shape}")
    out = []
    for n, a, b, s in zip(shape, starts, stops, steps):
        check(s >= 1 and 0 <= a <= n and a <= b <= n, f"slice [{a}:{b}:{s}] out of range for size {n}")
        out.append(len(range(a, b, s)))
    return tuple(out), dt


def _slice_ref(ctx: Any, x: np.ndarray) -> np.ndarray:
    a = ctx.node.attrs
    return x[tuple(slice(i, j, k) for i, j, k in zip(a["starts"], a["stops"], a["steps"]))]


def _pad_infer(types: list[Type], attrs: Attrs) -> Type:
    (shape, dt), = types
    lo, hi = attrs["low"], attrs["high"]
    check(len(lo) == len(hi) == len(shape) and min(lo + hi, default=0) >= 0, f"pad needs non-negative low/high per axis of {shape}")
    return tuple(n + a + b for n, a, b in zip(shape, lo, hi)), dt


def _pad_ref(ctx: Any, x: np.ndarray) -> np.ndarray:
    a = ctx.node.attrs
    return np.pad(x, list(zip(a["low"], a["high"])), constant_values=np.array(a["value"]).astype(x.dtype))


def _concat_infer(types: list[Type], attrs: Attrs) -> Type:
    axis = attrs["axis"]
    check(len(types) >= 1, "concat needs at least one operand")
    s0, d0 = types[0]
    check(0 <= axis < len(s0), f"concat axis {axis} out of range for rank {len(s0)}")
    for s, d in types:
        check(len(s) == len(s0) and all(a == b for i, (a, b) in enumerate(zip(s, s0)) if i != axis),
              f"concat along axis {axis}: shapes differ off that axis")
        check_dtype(d == d0, "concat operands must have one dtype (cast first)")
    return tuple(sum(s[axis] for s, _ in types) if i == axis else n for i, n in enumerate(s0)), d0


register(OpDef("reshape", "movement", _reshape_infer, lambda ctx, x: np.reshape(x, ctx.node.attrs["shape"])))
register(OpDef("permute", "movement", _permute_infer, lambda ctx, x: np.transpose(x, ctx.node.attrs["dims"])))
register(OpDef("expand", "movement", _expand_infer, lambda ctx, x: np.broadcast_to(x, ctx.node.attrs["shape"])))
register(OpDef("slice", "movement", _slice_infer, _slice_ref))
register(OpDef("pad", "movement", _pad_infer, _pad_ref))
register(OpDef("concat", "movement", _concat_infer, lambda ctx, *xs: np.concatenate(xs, axis=ctx.node.attrs["axis"])))

# ----------------------------------------------------------------------------- matmul


def _matmul_infer(types: list[Type], attrs: Attrs) -> Type:
    (sa, da), (sb, db) = types
    check(len(sa) >= 2 and len(sb) >= 2, "matmul operands need rank >= 2 (the frontend reshapes vectors)")
    check(sa[-1] == sb[-2], f"inner dims {sa[-1]} != {sb[-2]}")
    check(sa[:-2] == sb[:-2], f"batch dims {sa[:-2]} != {sb[:-2]} (broadcast first)")
    check_dtype(da == db, f"operand dtypes differ: {da.name} vs {db.name} (cast first)")
    _numeric("matmul", da)
    return tuple(sa[:-1]) + (sb[-1],), da


def _broadcast_batch(x: np.ndarray) -> bool:
    # An empty array has all-zero strides without being broadcast (and reshape(-1, 0) is ambiguous).
    return x.ndim > 2 and x.size > 0 and all(s == 0 for s in x.strides[:-2])


def matmul_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.matmul, fed so that it reaches BLAS: numpy takes a slow loop for
    stride-0 (expanded) or oddly strided operands, and a weight broadcast over
    the batch is one big GEMM, not one per batch element."""
    if _broadcast_batch(b) and not _broadcast_batch(a):
        rows = np.ascontiguousarray(a).reshape(-1, a.shape[-1])
        out = rows @ np.ascontiguousarray(b[(0,) * (b.ndim - 2)])
        return out.reshape(a.shape[:-1] + (b.shape[-1],))
    return np.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))


register(OpDef("matmul", "matmul", _matmul_infer, lambda ctx, a, b: matmul_ref(a, b), symbol="@"))

# ----------------------------------------------------------------------------- gather / scatter


def _check_indices(ctx: Any, idx: np.ndarray, size: int) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        bad = idx[(idx < 0) | (idx >= size)].flat[0]
        loc = f" at {ctx.node.loc}" if ctx.node.loc else ""
        raise IndexError(f"{ctx.node.op}{loc}: index {int(bad)} out of range for axis {ctx.node.attrs['axis']} of size {size}")


def _gather_infer(types: list[Type], attrs: Attrs) -> Type:
    (sx, dx), (si, di) = types
    axis = attrs["axis"]
    check(0 <= axis < len(sx), f"gather axis {axis} out of range for rank {len(sx)}")
    check_dtype(di.is_int, f"gather indices must be integers, got {di.name}")
    return tuple(sx[:axis]) + tuple(si) + tuple(sx[axis + 1:]), dx


def _gather_ref(ctx: Any, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    axis = ctx.node.attrs["axis"]
    _check_indices(ctx, idx, x.shape[axis])
    return np.take(x, idx, axis=axis)


def _scatter_add_infer(types: list[Type], attrs: Attrs) -> Type:
    (sx, dx), (si, di), (su, du) = types
    axis = attrs["axis"]
    check(0 <= axis < len(sx), f"scatter_add axis {axis} out of range for rank {len(sx)}")
    check_dtype(di.is_int, f"scatter_add indices must be integers, got {di.name}")
    want = tuple(sx[:axis]) + tuple(si) + tuple(sx[axis + 1:])
    check(tuple(su) == want, f"updates shape {tuple(su)} must be {want}")
    check_dtype(du == dx, "scatter_add updates must have the target's dtype")
    return tuple(sx), dx


def _scatter_add_ref(ctx: Any, x: np.ndarray, idx: np.ndarray, upd: np.ndarray) -> np.ndarray:
    axis = ctx.node.attrs["axis"]
    _check_indices(ctx, idx, x.shape[axis])
    out = np.array(x, copy=True)
    # Move the indexed axis first so np.add.at accumulates repeated indices.
    moved = np.moveaxis(out, axis, 0)
    upd_moved = np.moveaxis(upd.reshape(x.shape[:axis] + (idx.size,) + x.shape[axis + 1:]), axis, 0)
    np.add.at(moved, idx.reshape(-1), upd_moved)
    return out


register(OpDef("gather", "index", _gather_infer, _gather_ref))
register(OpDef("scatter_add", "index", _scatter_add_infer, _scatter_add_ref))

# ----------------------------------------------------------------------------- sources


def _source_infer(types: list[Type], attrs: Attrs) -> Type:
    return tuple(attrs["shape"]), attrs["dtype"]


def _param_ref(ctx: Any) -> np.ndarray:
    raise TensorcError("a param node is bound by the caller, not evaluated")


def _const_infer(types: list[Type], attrs: Attrs) -> Type:
    arr = attrs["value"].array
    return tuple(arr.shape), dtypes.dtype(arr.dtype)


def _iota_infer(types: list[Type], attrs: Attrs) -> Type:
    shape, axis, dt = tuple(attrs["shape"]), attrs["axis"], attrs["dtype"]
    check(0 <= axis < len(shape), f"iota axis {axis} out of range for {shape}")
    return shape, dt


def _iota_ref(ctx: Any) -> np.ndarray:
    a = ctx.node.attrs
    shape, axis = tuple(a["shape"]), a["axis"]
    line = np.arange(shape[axis]).reshape([-1 if i == axis else 1 for i in range(len(shape))])
    return np.broadcast_to(line, shape).astype(a["dtype"].np)


register(OpDef("param", "source", _source_infer, _param_ref, differentiable=False))
register(OpDef("const", "source", _const_infer, lambda ctx: ctx.node.attrs["value"].array, differentiable=False))
register(OpDef("iota", "source", _iota_infer, _iota_ref, differentiable=False))

# ----------------------------------------------------------------------------- random bits (Threefry-2x32)

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(key: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Threefry-2x32 with 20 rounds (Salmon et al., 2011) on uint32 arrays."""
    u32 = np.uint32
    k0, k1 = u32(key[0]), u32(key[1])
    ks = (k0, k1, u32(k0 ^ k1 ^ u32(0x1BD11BDA)))
    x0 = (x0 + ks[0]).astype(u32)
    x1 = (x1 + ks[1]).astype(u32)
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x0 = (x0 + x1).astype(u32)
            x1 = ((x1 << u32(r)) | (x1 >> u32(32 - r))).astype(u32)
            x1 = x1 ^ x0
        x0 = (x0 + ks[(block + 1) % 3]).astype(u32)
        x1 = (x1 + ks[(block + 2) % 3] + u32(block + 1)).astype(u32)
    return x0, x1


def _random_bits_infer(types: list[Type], attrs: Attrs) -> Type:
    (sk, dk), = types
    check(tuple(sk) == (2,), f"a random key is u32[2], got shape {tuple(sk)}")
    check_dtype(dk == dtypes.uint32, f"a random key is u32[2], got {dk.name}")
    return tuple(attrs["shape"]), dtypes.uint32


def _random_bits_ref(ctx: Any, key: np.ndarray) -> np.ndarray:
    shape = tuple(ctx.node.attrs["shape"])
    n = math.prod(shape)
    half = (n + 1) // 2
    counter = np.arange(half, dtype=np.uint32)
    with np.errstate(over="ignore"):
        y0, y1 = threefry2x32(key, counter, counter + np.uint32(half))
    return np.concatenate([y0, y1])[:n].reshape(shape)


register(OpDef("random_bits", "source", _random_bits_infer, _random_bits_ref, differentiable=False))

# ----------------------------------------------------------------------------- control flow


def _scan_infer(types: list[Type], attrs: Attrs) -> Type:
    body, n_consts, n_carry, length = attrs["body"], attrs["n_consts"], attrs["n_carry"], attrs["length"]
    n_xs = len(types) - n_consts - n_carry
    check(len(body.inputs) == len(types), f"scan body takes {len(body.inputs)} inputs, given {len(types)}")
    for i, ((s, d), p) in enumerate(zip(types, body.inputs)):
        want = (tuple(s[1:]), d) if i >= n_consts + n_carry else (tuple(s), d)
        if i >= n_consts + n_carry:
            check(len(s) >= 1 and s[0] == length, f"scanned input {i - n_consts - n_carry} has leading dim {s[:1]}, not length {length}")
        check((tuple(p.shape), p.dtype) == want, f"scan body input {i} type mismatch")
    carry_out = body.outputs[:n_carry]
    for c_in, c_out in zip(types[n_consts:n_consts + n_carry], carry_out):
        check((tuple(c_in[0]), c_in[1]) == (tuple(c_out.shape), c_out.dtype),
              "scan carry must keep its type: body returns a different shape/dtype")
    del n_xs
    ys = body.outputs[n_carry:]
    shapes = tuple(tuple(c.shape) for c in carry_out) + tuple((length,) + tuple(y.shape) for y in ys)
    dts = tuple(c.dtype for c in carry_out) + tuple(y.dtype for y in ys)
    return shapes, dts


def _scan_ref(ctx: Any, *args: np.ndarray) -> tuple[np.ndarray, ...]:
    a = ctx.node.attrs
    body, n_consts, n_carry, length, reverse = a["body"], a["n_consts"], a["n_carry"], a["length"], a["reverse"]
    consts, carry, xs = list(args[:n_consts]), list(args[n_consts:n_consts + n_carry]), args[n_consts + n_carry:]
    ys_steps: list[list[np.ndarray]] = [[] for _ in body.outputs[n_carry:]]
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for t in steps:
        out = ctx.run(body, consts + carry + [x[t] for x in xs])
        carry = out[:n_carry]
        for acc, y in zip(ys_steps, out[n_carry:]):
            acc.append(y)
    ys = []
    for acc, y in zip(ys_steps, body.outputs[n_carry:]):
        if reverse:
            acc.reverse()
        ys.append(np.stack(acc) if acc else np.zeros((0,) + tuple(y.shape), y.dtype.np))
    return tuple(carry) + tuple(ys)


def _tuple_get_infer(types: list[Type], attrs: Attrs) -> Type:
    (shapes, dts), = types
    check(isinstance(dts, tuple), "tuple_get of a non-tuple value")
    i = attrs["index"]
    return tuple(shapes[i]), dts[i]


register(OpDef("scan", "control", _scan_infer, _scan_ref))
register(OpDef("tuple_get", "control", _tuple_get_infer, lambda ctx, t: t[ctx.node.attrs["index"]]))


__all__ = ["threefry2x32", "DTypeError"]
