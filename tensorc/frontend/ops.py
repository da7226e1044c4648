"""The DSL's functions, written over the primitive ops of the registry.

Broadcasting and promotion happen here and become explicit ``reshape`` /
``expand`` / ``cast`` nodes, so every primitive sees operands of one shape
and dtype.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DTypeError, ShapeError, TensorcError
from ..ir import dtypes
from ..ir.dtypes import DType
from .tensor import Tensor
from .tracing import apply, op_error

_py_max, _py_min, _py_sum, _py_abs = builtins.max, builtins.min, builtins.sum, builtins.abs

# ----------------------------------------------------------------------------- construction


def tensor(data: Any, dtype: Any = None) -> Tensor:
    """A tensor from a numpy array, nested lists or a scalar.

    Python floats become float32 and ints int64 unless ``dtype`` says otherwise;
    numpy arrays keep their dtype (float64 stays float64).

    >>> tensor([1, 2]).dtype, tensor(np.zeros(2)).dtype, tensor([1.5], "f16").dtype
    (tc.int64, tc.float64, tc.float16)
    """
    if isinstance(data, Tensor):
        return data if dtype is None else cast(data, dtype)
    if dtype is not None:
        with np.errstate(over="ignore"):  # out-of-range floats become inf, as numpy casts them
            arr = np.asarray(data, dtype=dtypes.dtype(dtype).np)
    elif isinstance(data, np.ndarray) or isinstance(data, np.generic):
        arr = np.asarray(data)
    else:
        arr = np.asarray(data)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        elif arr.dtype.kind in "iu" and arr.dtype != np.uint32:
            arr = arr.astype(np.int64)
    if arr.dtype.kind == "O" or arr.dtype.kind in "US":
        raise DTypeError(f"cannot make a tensor from {type(data).__name__} of {arr.dtype}")
    try:
        dtypes.dtype(arr.dtype)
    except TypeError as e:
        raise DTypeError(str(e)) from None
    return Tensor._concrete(np.array(arr, copy=True))


def as_tensor(x: Any, like: DType | None = None) -> Tensor:
    """``x`` as a Tensor; a Python scalar takes its weak dtype next to ``like``."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
        dt = dtypes.weak_scalar_dtype(x, like) if like is not None else dtypes.scalar_dtype(x)
        if dt.is_int and not isinstance(x, bool):
            info = np.iinfo(dt.np)
            if not info.min <= x <= info.max:
                raise DTypeError(f"Python integer {x} does not fit {dt.name} (range {info.min}..{info.max}); "
                                 "cast the tensor to a wider dtype first")
        with np.errstate(over="ignore"):
            return Tensor._concrete(np.asarray(x, dtype=dt.np))
    return tensor(x)


def full(shape: Any, fill_value: Any, dtype: Any = None) -> Tensor:
    """A tensor of ``shape`` filled with ``fill_value``; a broadcast view of one scalar."""
    shape = _shape_arg(shape)
    dt = dtypes.dtype(dtype) if dtype is not None else dtypes.scalar_dtype(fill_value)
    scalar = Tensor._concrete(np.asarray(fill_value, dtype=dt.np))
    return broadcast_to(scalar, shape)


def zeros(*shape: Any, dtype: Any = "float32") -> Tensor:
    """A float32 (or ``dtype``) tensor of zeros: ``zeros(2, 3)`` or ``zeros((2, 3))``."""
    return full(_shape_varargs(shape), 0, dtype)


def ones(*shape: Any, dtype: Any = "float32") -> Tensor:
    """A float32 (or ``dtype``) tensor of ones: ``ones(2, 3)`` or ``ones((2, 3))``."""
    return full(_shape_varargs(shape), 1, dtype)


def zeros_like(x: Tensor, dtype: Any = None) -> Tensor:
    """Zeros with ``x``'s shape (and dtype unless ``dtype`` is given)."""
    x = as_tensor(x)
    return full(x.shape, 0, dtype or x.dtype)


def ones_like(x: Tensor, dtype: Any = None) -> Tensor:
    """Ones with ``x``'s shape (and dtype unless ``dtype`` is given)."""
    x = as_tensor(x)
    return full(x.shape, 1, dtype or x.dtype)


def full_like(x: Tensor, fill_value: Any, dtype: Any = None) -> Tensor:
    """``fill_value`` everywhere, with ``x``'s shape (and dtype unless ``dtype`` is given)."""
    x = as_tensor(x)
    return full(x.shape, fill_value, dtype or x.dtype)


def iota(shape: Any, axis: int = 0, dtype: Any = "int64") -> Tensor:
    """Each element's index along ``axis`` (the primitive behind arange and masks)."""
    shape = _shape_arg(shape)
    return apply("iota", [], {"shape": shape, "axis": _axis(axis, len(shape), "iota"), "dtype": dtypes.dtype(dtype)})


def arange(start: Any, stop: Any = None, step: Any = 1, dtype: Any = None) -> Tensor:
    """``start, start+step, ...`` below ``stop`` (like ``np.arange``); ints give int64."""
    if stop is None:
        start, stop = 0, start
    is_int = all(isinstance(v, (int, np.integer)) for v in (start, stop, step))
    dt = dtypes.dtype(dtype) if dtype is not None else (dtypes.default_int if is_int else dtypes.default_float)
    if step == 0:
        raise TensorcError("arange: step must not be zero")
    n = _py_max(0, math.ceil((stop - start) / step))
    idx = iota((n,), 0, dt if dt.is_int else "int64")
    if start == 0 and step == 1 and dt.is_int:
        return idx
    return add(mul(cast(idx, dt), step), start) if not dt.is_int else add(mul(idx, step), start)


def eye(n: int, m: int | None = None, dtype: Any = "float32") -> Tensor:
    """The ``n x m`` identity matrix (``m`` defaults to ``n``)."""
    m = n if m is None else m
    return cast(eq(iota((n, m), 0), iota((n, m), 1)), dtype)


def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    """Keep the lower triangle (last two axes), zero the rest."""
    x = as_tensor(x)
    r, c = x.shape[-2:]
    keep = le(iota((r, c), 1), add(iota((r, c), 0), diagonal))
    return where(keep, x, full((), 0, x.dtype))  # a zero of x's dtype: a weak 0 would make bool x int64


def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    """Keep the upper triangle (last two axes), zero the rest."""
    x = as_tensor(x)
    r, c = x.shape[-2:]
    keep = ge(iota((r, c), 1), add(iota((r, c), 0), diagonal))
    return where(keep, x, full((), 0, x.dtype))  # a zero of x's dtype: a weak 0 would make bool x int64


# ----------------------------------------------------------------------------- argument helpers


def _shape_varargs(shape: tuple[Any, ...]) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return _shape_arg(shape[0])
    return _shape_arg(shape)


def _shape_arg(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise ShapeError(f"a shape must be a sequence of ints, got {shape!r}") from None
    if any(s < 0 for s in out):
        raise ShapeError(f"negative dimension in shape {out}")
    return out


def _axis(axis: int, ndim: int, op: str, types: Sequence[Any] = ()) -> int:
    """``axis`` normalized to ``[0, ndim)``; ``types`` are the operands an error names."""
    if not isinstance(axis, (int, np.integer)):
        raise TensorcError(f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < _py_max(ndim, 1) or (ndim == 0 and axis not in (0, -1)):
        raise op_error(ShapeError, op, types, f"axis {axis} is out of range for a tensor of rank {ndim}")
    return int(axis) % _py_max(ndim, 1)


def _axes(axis: Any, ndim: int, op: str, types: Sequence[Any] = ()) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    out = sorted(_axis(a, ndim, op, types) for a in axis)
    if len(set(out)) != len(out):
        raise op_error(ShapeError, op, types, f"repeated axis in {tuple(axis)}")
    return tuple(out)


# ----------------------------------------------------------------------------- broadcasting & promotion


def broadcast_shapes(*shapes: tuple[int, ...], op: str = "broadcast", types: Sequence[Any] = ()) -> tuple[int, ...]:
    """The numpy broadcast of ``shapes`` (ShapeError naming ``op`` if none)."""
    ndim = _py_max((len(s) for s in shapes), default=0)
    out = []
    for i in range(ndim):
        dims = {s[len(s) - ndim + i] for s in shapes if len(s) - ndim + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise op_error(ShapeError, op, types, f"shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def broadcast_to(x: Any, shape: Any) -> Tensor:
    """``x`` viewed with ``shape`` by numpy's broadcasting rules (no copy)."""
    x = as_tensor(x)
    shape = _shape_arg(shape)
    if x.shape == shape:
        return x
    if len(x.shape) > len(shape) or any(a not in (1, b) for a, b in zip(x.shape[::-1], shape[::-1])):
        raise op_error(ShapeError, "broadcast_to", [(x.shape, x.dtype)], f"cannot broadcast {x.shape} to {shape}")
    lifted = (1,) * (len(shape) - len(x.shape)) + x.shape
    if lifted != x.shape:
        x = apply("reshape", [x], {"shape": lifted})
    if lifted == shape:
        return x
    return apply("expand", [x], {"shape": shape})


def _operands(op: str, *xs: Any) -> list[Tensor]:
    """Promote and broadcast operands of an elementwise op."""
    tensors = [x for x in xs if isinstance(x, Tensor)]
    if not tensors:
        tensors = [as_tensor(x) for x in xs]
    strong = [t.dtype for t in tensors]
    dt = strong[0]
    for d in strong[1:]:
        dt = dtypes.promote(dt, d)
    # Weak scalars may lift the category (int tensor * 0.5 -> float32).
    for x in xs:
        if not isinstance(x, Tensor):
            if isinstance(x, np.ndarray) or isinstance(x, np.generic):
                dt = dtypes.promote(dt, dtypes.dtype(x.dtype))
            elif isinstance(x, (bool, int, float)):
                dt = dtypes.weak_scalar_dtype(x, dt)
            else:
                raise op_error(DTypeError, op, [(t.shape, t.dtype) for t in tensors], f"unsupported operand {type(x).__name__}")
    ts = [as_tensor(x, dt) for x in xs]
    shape = broadcast_shapes(*[t.shape for t in ts], op=op, types=[(t.shape, t.dtype) for t in ts])
    return [broadcast_to(cast(t, dt), shape) for t in ts]


def cast(x: Any, dtype: Any) -> Tensor:
    """``x`` converted to ``dtype`` (float->int truncates toward zero)."""
    x = as_tensor(x)
    dt = dtypes.dtype(dtype)
    if x.dtype == dt:
        return x
    return apply("cast", [x], {"dtype": dt})


astype = cast


def _float_unary(op: str) -> Any:
    def fn(x: Any) -> Tensor:
        x = as_tensor(x)
        if not x.dtype.is_float:
            x = cast(x, dtypes.default_float)
        return apply(op, [x])

    fn.__name__ = op
    fn.__doc__ = f"Elementwise ``{op}`` (integers are converted to float32 first)."
    return fn


exp = _float_unary("exp")
log = _float_unary("log")
sqrt = _float_unary("sqrt")
rsqrt = _float_unary("rsqrt")
reciprocal = _float_unary("reciprocal")
tanh = _float_unary("tanh")
sigmoid = _float_unary("sigmoid")
sin = _float_unary("sin")
cos = _float_unary("cos")
erf = _float_unary("erf")
floor = _float_unary("floor")


def neg(x: Any) -> Tensor:
    """``-x`` (not defined on bool: use ``~x``)."""
    x = as_tensor(x)
    if x.dtype.is_bool:
        raise op_error(DTypeError, "neg", [(x.shape, x.dtype)], "negation of a bool tensor; use ~x")
    return apply("neg", [x])


def abs(x: Any) -> Tensor:
    """Elementwise absolute value (gradient 0 at 0)."""
    return apply("abs", [as_tensor(x)])


def sign(x: Any) -> Tensor:
    """-1, 0 or 1 elementwise (no gradient)."""
    return apply("sign", [as_tensor(x)])


def logical_not(x: Any) -> Tensor:
    """``~x`` for a bool tensor."""
    x = as_tensor(x)
    if not x.dtype.is_bool:
        raise op_error(DTypeError, "logical_not", [(x.shape, x.dtype)], "~ needs a bool tensor")
    return apply("logical_not", [x])


def _binary_fn(op: str) -> Any:
    def fn(a: Any, b: Any) -> Tensor:
        x, y = _operands(op, a, b)
        return apply(op, [x, y])

    fn.__name__ = op
    fn.__doc__ = f"Elementwise ``{op}`` with numpy broadcasting and tensorc's promotion."
    return fn


add = _binary_fn("add")
sub = _binary_fn("sub")
mul = _binary_fn("mul")
maximum = _binary_fn("maximum")
minimum = _binary_fn("minimum")
mod = _binary_fn("mod")
eq = _binary_fn("eq")
ne = _binary_fn("ne")
lt = _binary_fn("lt")
le = _binary_fn("le")
gt = _binary_fn("gt")
ge = _binary_fn("ge")
floordiv = _binary_fn("floordiv")


def div(a: Any, b: Any) -> Tensor:
    """True division; integer operands give float32 (as in PyTorch and numpy)."""
    x, y = _operands("div", a, b)
    if not x.dtype.is_float:
        x, y = cast(x, dtypes.default_float), cast(y, dtypes.default_float)
    return apply("div", [x, y])


def pow(a: Any, b: Any) -> Tensor:
    """``a ** b``; ``x ** 2`` becomes ``x * x`` so gradients need no log."""
    if isinstance(b, (int, float)) and not isinstance(b, bool) and isinstance(a, Tensor):
        if b == 1:
            return a
        if b == 2:
            return mul(a, a)
        if b == 0.5 and a.dtype.is_float:
            return sqrt(a)
        if b == -1 and a.dtype.is_float:
            return reciprocal(a)
    x, y = _operands("pow", a, b)
    return apply("pow", [x, y])


def _bool_binary(op: str) -> Any:
    def fn(a: Any, b: Any) -> Tensor:
        x, y = _operands(op, a, b)
        if not x.dtype.is_bool:
            raise op_error(DTypeError, op, [(x.shape, x.dtype), (y.shape, y.dtype)], "needs bool tensors")
        return apply(op, [x, y])

    fn.__name__ = op
    return fn


logical_and = _bool_binary("logical_and")
logical_or = _bool_binary("logical_or")


def where(cond: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``cond`` is true, else ``b`` (broadcast together).

    >>> where(tensor([True, False]), 1.0, tensor([5.0, 6.0]))
    Tensor([1., 6.], dtype=float32)
    """
    c = as_tensor(cond)
    if not c.dtype.is_bool:
        raise op_error(DTypeError, "where", [(c.shape, c.dtype)], "condition must be a bool tensor")
    x, y = _operands("where", a, b)
    shape = broadcast_shapes(c.shape, x.shape, op="where", types=[(c.shape, c.dtype), (x.shape, x.dtype)])
    return apply("where", [broadcast_to(c, shape), broadcast_to(x, shape), broadcast_to(y, shape)])


def relu(x: Any) -> Tensor:
    """``max(x, 0)`` as ``where(x > 0, x, 0)``: gradient 0 at 0."""
    x = as_tensor(x)
    return where(gt(x, 0), x, 0)


def clip(x: Any, min: Any = None, max: Any = None) -> Tensor:
    """Limit ``x`` to ``[min, max]`` (either bound may be None); ``clamp`` is the same."""
    x = as_tensor(x)
    if min is not None:
        x = maximum(x, min)
    if max is not None:
        x = minimum(x, max)
    return x


clamp = clip

# ----------------------------------------------------------------------------- reductions


def _reduce_args(x: Any, axis: Any, keepdims: bool, dim: Any, keepdim: bool | None, op: str) -> tuple[Tensor, tuple[int, ...], bool]:
    x = as_tensor(x)
    if dim is not None:
        if axis is not None:
            raise TensorcError(f"{op}: give axis= or dim=, not both")
        axis = dim
    if keepdim is not None:
        keepdims = keepdim
    return x, _axes(axis, x.ndim, op, [(x.shape, x.dtype)]), keepdims


def _keep(y: Tensor, x_shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> Tensor:
    if not keepdims:
        return y
    return reshape(y, tuple(1 if i in axes else s for i, s in enumerate(x_shape)))


def sum(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None, dtype: Any = None) -> Tensor:
    """Sum over ``axis`` (all axes if None); bools and int32 sum as int64."""
    x, axes, keepdims = _reduce_args(x, axis, keepdims, dim, keepdim, "sum")
    if dtype is not None:
        x = cast(x, dtype)
    elif x.dtype.is_bool or x.dtype in (dtypes.int32, dtypes.uint32):
        x = cast(x, dtypes.int64)
    if not axes:
        return x
    return _keep(apply("sum", [x], {"axes": axes}), x.shape, axes, keepdims)


def mean(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None) -> Tensor:
    """Mean over ``axis`` (all axes if None); integers average as float32."""
    x, axes, keepdims = _reduce_args(x, axis, keepdims, dim, keepdim, "mean")
    if not x.dtype.is_float:
        x = cast(x, dtypes.default_float)
    count = math.prod(x.shape[a] for a in axes)
    return div(sum(x, axes, keepdims), float(count)) if count else div(sum(x, axes, keepdims), float("nan"))


def var(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None, correction: int = 0) -> Tensor:
    """Variance (``correction=1`` for the unbiased estimate)."""
    x, axes, keepdims = _reduce_args(x, axis, keepdims, dim, keepdim, "var")
    if not x.dtype.is_float:
        x = cast(x, dtypes.default_float)
    centered = sub(x, mean(x, axes, keepdims=True))
    count = math.prod(x.shape[a] for a in axes)
    return div(sum(mul(centered, centered), axes, keepdims), float(_py_max(count - correction, 0)))


def max(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None) -> Tensor:
    """Largest element over ``axis``. Gradient at ties: split evenly among them."""
    x, axes, keepdims = _reduce_args(x, axis, keepdims, dim, keepdim, "max")
    if x.dtype.is_bool:
        return cast(max(cast(x, "int32"), axes, keepdims), "bool")
    if not axes:
        return x
    return _keep(apply("max", [x], {"axes": axes}), x.shape, axes, keepdims)


def min(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None) -> Tensor:
    """Smallest element over ``axis`` (computed as a max, so ties split the gradient evenly)."""
    x, axes, keepdims = _reduce_args(x, axis, keepdims, dim, keepdim, "min")
    if x.dtype.is_bool:
        return cast(min(cast(x, "int32"), axes, keepdims), "bool")
    if x.dtype == dtypes.uint32:
        return cast(min(cast(x, "int64"), axes, keepdims), "uint32")
    if x.dtype.is_int:  # -1 - x is bitwise not: unlike -x it cannot overflow at the most negative integer
        return sub(-1, max(sub(-1, x), axes, keepdims))
    return neg(max(neg(x), axes, keepdims))


def _arg_extreme(x: Any, axis: Any, keepdims: bool, dim: Any, keepdim: bool | None, op: str, largest: bool) -> Tensor:
    x0 = as_tensor(x)
    if dim is not None:
        axis = dim
    if keepdim is not None:
        keepdims = keepdim
    if axis is None:
        flat = reshape(x0, (-1,))
        return _arg_extreme(flat, 0, False, None, None, op, largest) if not keepdims else reshape(
            _arg_extreme(flat, 0, False, None, None, op, largest), (1,) * x0.ndim)
    ax = _axis(axis, x0.ndim, op, [(x0.shape, x0.dtype)])
    n = x0.shape[ax]
    if n == 0:
        raise op_error(ShapeError, op, [(x0.shape, x0.dtype)], f"{op} over an empty axis")
    best = (max if largest else min)(x0, ax, keepdims=True)
    idx = iota(x0.shape, ax, "int64")
    candidates = where(eq(x0, best), idx, n)  # first index among ties
    return min(candidates, ax, keepdims)


def argmax(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None) -> Tensor:
    """Index of the first largest element along ``axis`` (int64)."""
    return _arg_extreme(x, axis, keepdims, dim, keepdim, "argmax", True)


def argmin(x: Any, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None) -> Tensor:
    """Index of the first smallest element along ``axis`` (int64)."""
    return _arg_extreme(x, axis, keepdims, dim, keepdim, "argmin", False)


def logsumexp(x: Any, axis: Any = -1, keepdims: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` computed stably (the max is subtracted first)."""
    x = as_tensor(x)
    axes = _axes(axis, x.ndim, "logsumexp", [(x.shape, x.dtype)])
    m = max(x, axes, keepdims=True)
    m = where(eq(m, float("-inf")), 0.0, m)  # all -inf rows stay -inf, not NaN
    out = add(log(sum(exp(sub(x, m)), axes, keepdims=True)), m)
    return out if keepdims else reshape(out, tuple(s for i, s in enumerate(x.shape) if i not in axes))


def softmax(x: Any, dim: int = -1) -> Tensor:
    """``exp(x - max) / sum(exp(x - max))`` along ``dim``."""
    x = as_tensor(x)
    if not x.dtype.is_float:
        x = cast(x, dtypes.default_float)
    e = exp(sub(x, max(x, dim, keepdims=True)))
    return div(e, sum(e, dim, keepdims=True))


def log_softmax(x: Any, dim: int = -1) -> Tensor:
    """``x - max - log(sum(exp(x - max)))`` along ``dim``."""
    x = as_tensor(x)
    if not x.dtype.is_float:
        x = cast(x, dtypes.default_float)
    shifted = sub(x, max(x, dim, keepdims=True))
    return sub(shifted, log(sum(exp(shifted), dim, keepdims=True)))

# ----------------------------------------------------------------------------- movement


def reshape(x: Any, *shape: Any) -> Tensor:
    """A view with a new shape; one dimension may be -1 (inferred)."""
    x = as_tensor(x)
    shape = tuple(int(s) for s in (shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape))
    if shape.count(-1) > 1:
        raise op_error(ShapeError, "reshape", [(x.shape, x.dtype)], f"only one -1 allowed in {shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or x.numel() % known:
            raise op_error(ShapeError, "reshape", [(x.shape, x.dtype)], f"cannot reshape {x.numel()} elements to {shape}")
        shape = tuple(x.numel() // known if s == -1 else s for s in shape)
    if shape == x.shape:
        return x
    return apply("reshape", [x], {"shape": shape})


def permute(x: Any, *dims: Any) -> Tensor:
    """Reorder axes: ``x.permute(0, 2, 1)``."""
    x = as_tensor(x)
    dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    if len(dims) != x.ndim:
        raise op_error(ShapeError, "permute", [(x.shape, x.dtype)], f"dims {dims} do not match rank {x.ndim}")
    norm = tuple(_axis(d, x.ndim, "permute", [(x.shape, x.dtype)]) for d in dims)
    if norm == tuple(range(x.ndim)):
        return x
    return apply("permute", [x], {"dims": norm})


def transpose(x: Any, dim0: int = -2, dim1: int = -1) -> Tensor:
    """Swap two axes (PyTorch's ``transpose(dim0, dim1)``)."""
    x = as_tensor(x)
    a, b = _axis(dim0, x.ndim, "transpose", [(x.shape, x.dtype)]), _axis(dim1, x.ndim, "transpose", [(x.shape, x.dtype)])
    dims = list(range(x.ndim))
    dims[a], dims[b] = dims[b], dims[a]
    return permute(x, *dims)


def expand(x: Any, *shape: Any) -> Tensor:
    """Broadcast to ``shape``; -1 keeps a dimension (PyTorch's ``expand``)."""
    x = as_tensor(x)
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    off = len(shape) - x.ndim
    shape = tuple(x.shape[i - off] if s == -1 and i >= off else s for i, s in enumerate(shape))
    return broadcast_to(x, shape)


def squeeze(x: Any, dim: Any = None) -> Tensor:
    """Drop size-1 axes (all of them, or those in ``dim``)."""
    x = as_tensor(x)
    axes = _axes(dim, x.ndim, "squeeze", [(x.shape, x.dtype)]) if dim is not None else tuple(i for i, s in enumerate(x.shape) if s == 1)
    axes = tuple(a for a in axes if x.shape[a] == 1)
    return reshape(x, tuple(s for i, s in enumerate(x.shape) if i not in axes))


def unsqueeze(x: Any, dim: int) -> Tensor:
    """Insert a size-1 axis at ``dim``."""
    x = as_tensor(x)
    d = _axis(dim, x.ndim + 1, "unsqueeze", [(x.shape, x.dtype)])
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:])


def flatten(x: Any, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge axes ``start_dim..end_dim`` into one (a reshape)."""
    x = as_tensor(x)
    if x.ndim == 0:
        return reshape(x, (1,))
    a, b = _axis(start_dim, x.ndim, "flatten", [(x.shape, x.dtype)]), _axis(end_dim, x.ndim, "flatten", [(x.shape, x.dtype)])
    return reshape(x, x.shape[:a] + (math.prod(x.shape[a:b + 1]),) + x.shape[b + 1:])


def concat(xs: Sequence[Any], axis: int = 0, *, dim: int | None = None) -> Tensor:
    """Join tensors along an existing axis (``cat`` is the same)."""
    if dim is not None:
        axis = dim
    ts = [as_tensor(x) for x in xs]
    if not ts:
        raise TensorcError("concat needs at least one tensor")
    dt = ts[0].dtype
    for t in ts[1:]:
        dt = dtypes.promote(dt, t.dtype)
    ts = [cast(t, dt) for t in ts]
    ax = _axis(axis, ts[0].ndim, "concat", [(t.shape, t.dtype) for t in ts])
    if len(ts) == 1:
        return ts[0]
    return apply("concat", ts, {"axis": ax})


cat = concat


def stack(xs: Sequence[Any], axis: int = 0, *, dim: int | None = None) -> Tensor:
    """Join tensors along a new axis."""
    if dim is not None:
        axis = dim
    ts = [as_tensor(x) for x in xs]
    if not ts:
        raise TensorcError("stack needs at least one tensor")
    shapes = {t.shape for t in ts}
    if len(shapes) != 1:
        raise op_error(ShapeError, "stack", [(t.shape, t.dtype) for t in ts], "all tensors must have one shape")
    ax = _axis(axis, ts[0].ndim + 1, "stack", [(t.shape, t.dtype) for t in ts])
    return concat([unsqueeze(t, ax) for t in ts], ax)


def pad(x: Any, pad_width: Sequence[tuple[int, int]], value: float = 0.0) -> Tensor:
    """Pad with a constant: ``pad_width`` is one ``(before, after)`` per axis
    (numpy's layout); negative widths crop."""
    x = as_tensor(x)
    pw = [tuple(int(v) for v in p) for p in pad_width]
    if len(pw) != x.ndim:
        raise op_error(ShapeError, "pad", [(x.shape, x.dtype)], f"needs one (before, after) per axis, got {len(pw)}")
    if any(a < 0 or b < 0 for a, b in pw):
        starts = [_py_max(0, -a) for a, _ in pw]
        stops = [n - _py_max(0, -b) for n, (_, b) in zip(x.shape, pw)]
        x = _slice(x, starts, stops, [1] * x.ndim)
        pw = [(_py_max(0, a), _py_max(0, b)) for a, b in pw]
    if all(a == 0 and b == 0 for a, b in pw):
        return x
    return apply("pad", [x], {"low": tuple(a for a, _ in pw), "high": tuple(b for _, b in pw), "value": float(value)})


def _slice(x: Tensor, starts: Sequence[int], stops: Sequence[int], steps: Sequence[int]) -> Tensor:
    if tuple(starts) == (0,) * x.ndim and tuple(stops) == x.shape and all(s == 1 for s in steps):
        return x
    return apply("slice", [x], {"starts": tuple(starts), "stops": tuple(stops), "steps": tuple(steps)})


def flip(x: Any, dims: Any) -> Tensor:
    """Reverse the order of elements along ``dims``."""
    x = as_tensor(x)
    for d in _axes(dims, x.ndim, "flip", [(x.shape, x.dtype)]):
        n = x.shape[d]
        rev = add(mul(iota((n,), 0), -1), n - 1)
        x = gather(x, rev, d)
    return x


def split(x: Any, split_size_or_sections: Any, dim: int = 0) -> list[Tensor]:
    """Split into chunks of ``split_size`` (an int) or of the listed sizes."""
    x = as_tensor(x)
    d = _axis(dim, x.ndim, "split", [(x.shape, x.dtype)])
    n = x.shape[d]
    if isinstance(split_size_or_sections, int):
        if split_size_or_sections <= 0:
            raise op_error(ShapeError, "split", [(x.shape, x.dtype)], f"split size must be positive, got {split_size_or_sections}")
        sizes = [split_size_or_sections] * (n // split_size_or_sections)
        if n % split_size_or_sections or not sizes:  # an empty axis gives one empty piece (as torch.split)
            sizes.append(n % split_size_or_sections)
    else:
        sizes = list(split_size_or_sections)
        if _py_sum(sizes) != n:
            raise op_error(ShapeError, "split", [(x.shape, x.dtype)], f"sizes {sizes} do not add up to {n}")
    out, start = [], 0
    for s in sizes:
        starts = [0] * x.ndim
        stops = list(x.shape)
        starts[d], stops[d] = start, start + s
        out.append(_slice(x, starts, stops, [1] * x.ndim))
        start += s
    return out


def chunk(x: Any, chunks: int, dim: int = 0) -> list[Tensor]:
    """Split into ``chunks`` pieces of equal size along ``dim`` (the last may be smaller)."""
    x = as_tensor(x)
    n = x.shape[_axis(dim, x.ndim, "chunk", [(x.shape, x.dtype)])]
    return split(x, _py_max(1, -(-n // chunks)), dim)


# ----------------------------------------------------------------------------- matmul, gather


def matmul(a: Any, b: Any) -> Tensor:
    """Matrix product with numpy's rules: vectors, batch broadcasting.

    >>> matmul(ones(2, 3), ones(3)).shape
    (2,)
    """
    x, y = as_tensor(a), as_tensor(b)
    types = [(x.shape, x.dtype), (y.shape, y.dtype)]
    if x.ndim == 0 or y.ndim == 0:
        raise op_error(ShapeError, "matmul", types, "operands must not be scalars (use *)")
    dt = dtypes.promote(x.dtype, y.dtype)
    if dt.is_bool:
        raise op_error(DTypeError, "matmul", types, "bool operands")
    x, y = cast(x, dt), cast(y, dt)
    x2 = reshape(x, (1,) + x.shape) if x.ndim == 1 else x
    y2 = reshape(y, y.shape + (1,)) if y.ndim == 1 else y
    if x2.shape[-1] != y2.shape[-2]:
        raise op_error(ShapeError, "matmul", types, f"inner dims {x2.shape[-1]} != {y2.shape[-2]}")
    batch = broadcast_shapes(x2.shape[:-2], y2.shape[:-2], op="matmul", types=types)
    if y2.ndim == 2 and x2.ndim > 2:  # a shared weight: one GEMM over all rows, so its gradient is one GEMM too
        rows = apply("matmul", [reshape(x2, (math.prod(x2.shape[:-1]), x2.shape[-1])), y2])
        out = reshape(rows, x2.shape[:-1] + y2.shape[-1:])
        return reshape(out, out.shape[:-1]) if y.ndim == 1 else out
    x2 = broadcast_to(x2, batch + x2.shape[-2:])
    y2 = broadcast_to(y2, batch + y2.shape[-2:])
    out = apply("matmul", [x2, y2])
    if x.ndim == 1:
        out = reshape(out, out.shape[:-2] + out.shape[-1:])
    if y.ndim == 1:
        out = reshape(out, out.shape[:-1])
    return out


def gather(x: Any, index: Any, axis: int = 0) -> Tensor:
    """``np.take(x, index, axis)``: pick slices of ``x`` by integer ``index``.
    Indices are bounds-checked when the program runs."""
    x, idx = as_tensor(x), as_tensor(index)
    return apply("gather", [x, idx], {"axis": _axis(axis, x.ndim, "gather", [(x.shape, x.dtype), (idx.shape, idx.dtype)])})


take = gather


def scatter_add(x: Any, index: Any, updates: Any, axis: int = 0) -> Tensor:
    """``x`` plus ``updates`` added at ``index`` along ``axis``; repeated indices accumulate."""
    x, idx, upd = as_tensor(x), as_tensor(index), as_tensor(updates)
    return apply("scatter_add", [x, idx, cast(upd, x.dtype)], {"axis": _axis(axis, x.ndim, "scatter_add", [(x.shape, x.dtype)])})


def one_hot(index: Any, num_classes: int, dtype: Any = "float32") -> Tensor:
    """``index`` as one-hot vectors of ``num_classes`` along a new last axis."""
    idx = as_tensor(index)
    classes = iota(idx.shape + (num_classes,), idx.ndim, idx.dtype)
    return cast(eq(unsqueeze(idx, -1), classes), dtype)


# ----------------------------------------------------------------------------- indexing


def getitem(x: Tensor, key: Any) -> Tensor:
    """Basic indexing (ints, slices with any step, None, ...) and one integer-tensor index."""
    if not isinstance(key, tuple):
        key = (key,)
    if _py_sum(1 for k in key if k is Ellipsis) > 1:
        raise TensorcError("an index can only have one ellipsis (...)")
    n_real = _py_sum(1 for k in key if k is not None and k is not Ellipsis)
    if n_real > x.ndim:
        raise op_error(ShapeError, "getitem", [(x.shape, x.dtype)], f"too many indices ({n_real}) for rank {x.ndim}")
    expanded: list[Any] = []
    for k in key:
        expanded.extend([slice(None)] * (x.ndim - n_real) if k is Ellipsis else [k])
    expanded.extend([slice(None)] * (x.ndim - _py_sum(1 for k in expanded if k is not None)))
    starts, stops, steps = [], [], []
    target: list[Any] = []  # per output axis: None (new axis of 1) or the source axis
    flips: list[int] = []
    tensor_index: tuple[int, Tensor] | None = None
    axis = 0
    for k in expanded:
        if k is None:
            target.append(None)
            continue
        n = x.shape[axis]
        if isinstance(k, (bool, np.bool_)):
            raise TensorcError("boolean indexing is not supported (shapes must be static); use tc.where")
        if isinstance(k, (int, np.integer)):
            i = int(k)
            if not -n <= i < n:
                raise op_error(ShapeError, "getitem", [(x.shape, x.dtype)], f"index {i} is out of range for axis {axis} of size {n}")
            i %= n
            starts.append(i), stops.append(i + 1), steps.append(1)
        elif isinstance(k, slice):
            a, b, s = k.indices(n)
            count = len(range(a, b, s))
            if s < 0:  # slice the positive-step equivalent, then flip this axis
                first = a + (count - 1) * s if count else 0
                starts.append(first), stops.append(a + 1 if count else 0), steps.append(-s)
                flips.append(len(target))
            else:
                starts.append(a), stops.append(a + (count - 1) * s + 1 if count else a), steps.append(s)
            target.append(axis)
        elif isinstance(k, (Tensor, np.ndarray, list)):
            if tensor_index is not None:
                raise TensorcError("only one tensor index per indexing expression is supported")
            idx = as_tensor(k)
            if idx.dtype.is_bool:
                raise TensorcError("boolean-mask indexing is not supported (shapes must be static); use tc.where")
            if not idx.dtype.is_int:
                raise op_error(DTypeError, "getitem", [(idx.shape, idx.dtype)], "tensor indices must be integers")
            tensor_index = (len(target), idx)
            starts.append(0), stops.append(n), steps.append(1)
            target.append(axis)
        else:
            raise TensorcError(f"unsupported index {k!r}")
        axis += 1
    y = _slice(x, starts, stops, steps)
    y = reshape(y, tuple(1 if a is None else y.shape[a] for a in target))
    for pos in flips:
        y = flip(y, pos)
    if tensor_index is not None:
        pos, idx = tensor_index
        y = gather(y, idx, pos)
    return y
