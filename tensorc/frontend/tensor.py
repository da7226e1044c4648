"""``tensorc.Tensor``: a concrete numpy value (eager) or a node of a trace.

Methods follow PyTorch's names and argument order; reductions accept numpy's
``axis=``/``keepdims=`` as well as PyTorch's ``dim=``/``keepdim=``.

>>> import tensorc as tc
>>> x = tc.tensor([[1.0, 2.0], [3.0, 4.0]])
>>> (x @ x).sum(axis=0)
Tensor([22., 32.], dtype=float32)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.dtypes import DType, type_str
from ..ir.node import Node, SourceLoc
from .tracing import Trace, concrete_value


class Tensor:
    """An n-dimensional array in tensorc's DSL."""

    __slots__ = ("_node", "_value", "_trace", "_loc", "shape", "dtype", "__weakref__")
    __array_priority__ = 1000  # numpy defers `ndarray op Tensor` to us

    def __init__(self, data: Any, dtype: Any = None) -> None:
        from . import ops

        t = ops.tensor(data, dtype)
        self._node, self._value, self._trace, self._loc = t._node, t._value, t._trace, t._loc
        self.shape, self.dtype = t.shape, t.dtype

    @classmethod
    def _concrete(cls, value: np.ndarray, loc: SourceLoc | None = None) -> Tensor:
        from ..ir.dtypes import dtype as to_dtype

        t = object.__new__(cls)
        arr = np.asarray(value)
        arr.setflags(write=False) if arr.flags.owndata else None
        t._node, t._value, t._trace, t._loc = None, arr, None, loc
        t.shape, t.dtype = tuple(arr.shape), to_dtype(arr.dtype)
        return t

    @classmethod
    def _traced(cls, node: Node, trace: Trace) -> Tensor:
        t = object.__new__(cls)
        t._node, t._value, t._trace, t._loc = node, None, trace, node.loc
        t.shape, t.dtype = tuple(node.shape), node.dtype
        return t

    # ------------------------------------------------------------------ basic properties
    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def size(self, dim: int | None = None) -> Any:
        """The shape (PyTorch's ``x.size()``), or one dimension of it."""
        if dim is None:
            return self.shape
        from .ops import _axis

        return self.shape[_axis(dim, self.ndim, "size")]

    def dim(self) -> int:
        return self.ndim

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    @property
    def is_traced(self) -> bool:
        return self._trace is not None

    def numpy(self) -> np.ndarray:
        """The value as a numpy array (eager tensors only)."""
        return concrete_value(self, "Tensor.numpy()")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        v = concrete_value(self, "np.asarray(tensor)")
        return v.astype(dtype) if dtype is not None else np.array(v)

    def item(self) -> Any:
        return concrete_value(self, "Tensor.item()").item()

    def tolist(self) -> Any:
        return concrete_value(self, "Tensor.tolist()").tolist()

    def __bool__(self) -> bool:
        return bool(concrete_value(self, "bool(tensor)"))

    def __float__(self) -> float:
        return float(concrete_value(self, "float(tensor)"))

    def __int__(self) -> int:
        return int(concrete_value(self, "int(tensor)"))

    def __index__(self) -> int:
        v = concrete_value(self, "using a tensor as an index")
        if v.dtype.kind not in "iu" or v.ndim:
            raise TypeError("only integer scalar tensors can be used as a Python index")
        return int(v)

    def __repr__(self) -> str:
        if self._trace is not None:
            return f"Tensor<traced {type_str(self.shape, self.dtype)} {self._node.op}>"
        body = np.array2string(np.asarray(self._value), separator=", ", prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype.name})"

    def __hash__(self) -> int:
        return id(self)

    def __iter__(self) -> Any:
        if not self.shape:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __setitem__(self, key: Any, value: Any) -> None:
        raise TypeError("tensors are immutable; build a new one (tc.where, tc.concat, F.pad) instead of assigning")

    # ------------------------------------------------------------------ operators
    def __add__(self, o: Any) -> Tensor: return _ops().add(self, o)
    def __radd__(self, o: Any) -> Tensor: return _ops().add(o, self)
    def __sub__(self, o: Any) -> Tensor: return _ops().sub(self, o)
    def __rsub__(self, o: Any) -> Tensor: return _ops().sub(o, self)
    def __mul__(self, o: Any) -> Tensor: return _ops().mul(self, o)
    def __rmul__(self, o: Any) -> Tensor: return _ops().mul(o, self)
    def __truediv__(self, o: Any) -> Tensor: return _ops().div(self, o)
    def __rtruediv__(self, o: Any) -> Tensor: return _ops().div(o, self)
    def __floordiv__(self, o: Any) -> Tensor: return _ops().floordiv(self, o)
    def __rfloordiv__(self, o: Any) -> Tensor: return _ops().floordiv(o, self)
    def __mod__(self, o: Any) -> Tensor: return _ops().mod(self, o)
    def __rmod__(self, o: Any) -> Tensor: return _ops().mod(o, self)
    def __pow__(self, o: Any) -> Tensor: return _ops().pow(self, o)
    def __rpow__(self, o: Any) -> Tensor: return _ops().pow(o, self)
    def __matmul__(self, o: Any) -> Tensor: return _ops().matmul(self, o)
    def __rmatmul__(self, o: Any) -> Tensor: return _ops().matmul(o, self)
    def __neg__(self) -> Tensor: return _ops().neg(self)
    def __pos__(self) -> Tensor: return self
    def __abs__(self) -> Tensor: return _ops().abs(self)
    def __invert__(self) -> Tensor: return _ops().logical_not(self)
    def __and__(self, o: Any) -> Tensor: return _ops().logical_and(self, o)
    def __rand__(self, o: Any) -> Tensor: return _ops().logical_and(o, self)
    def __or__(self, o: Any) -> Tensor: return _ops().logical_or(self, o)
    def __ror__(self, o: Any) -> Tensor: return _ops().logical_or(o, self)
    def __eq__(self, o: Any) -> Tensor: return _ops().eq(self, o)  # type: ignore[override]
    def __ne__(self, o: Any) -> Tensor: return _ops().ne(self, o)  # type: ignore[override]
    def __lt__(self, o: Any) -> Tensor: return _ops().lt(self, o)
    def __le__(self, o: Any) -> Tensor: return _ops().le(self, o)
    def __gt__(self, o: Any) -> Tensor: return _ops().gt(self, o)
    def __ge__(self, o: Any) -> Tensor: return _ops().ge(self, o)
    def __getitem__(self, key: Any) -> Tensor: return _ops().getitem(self, key)

    # ------------------------------------------------------------------ methods
    def sum(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None, dtype: Any = None) -> Tensor:
        return _ops().sum(self, axis, keepdims, dim=dim, keepdim=keepdim, dtype=dtype)

    def mean(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None) -> Tensor:
        return _ops().mean(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def var(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None, correction: int = 0) -> Tensor:
        return _ops().var(self, axis, keepdims, dim=dim, keepdim=keepdim, correction=correction)

    def max(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None) -> Tensor:
        return _ops().max(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def min(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None) -> Tensor:
        return _ops().min(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def argmax(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None) -> Tensor:
        return _ops().argmax(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def argmin(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None) -> Tensor:
        return _ops().argmin(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def reshape(self, *shape: Any) -> Tensor: return _ops().reshape(self, *shape)
    def view(self, *shape: Any) -> Tensor: return _ops().reshape(self, *shape)
    def permute(self, *dims: Any) -> Tensor: return _ops().permute(self, *dims)
    def transpose(self, dim0: int = -2, dim1: int = -1) -> Tensor: return _ops().transpose(self, dim0, dim1)
    def expand(self, *shape: Any) -> Tensor: return _ops().expand(self, *shape)
    def broadcast_to(self, shape: Any) -> Tensor: return _ops().broadcast_to(self, shape)
    def squeeze(self, dim: Any = None) -> Tensor: return _ops().squeeze(self, dim)
    def unsqueeze(self, dim: int) -> Tensor: return _ops().unsqueeze(self, dim)
    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor: return _ops().flatten(self, start_dim, end_dim)
    def flip(self, dims: Any) -> Tensor: return _ops().flip(self, dims)
    def astype(self, dtype: Any) -> Tensor: return _ops().cast(self, dtype)
    def to(self, dtype: Any) -> Tensor: return _ops().cast(self, dtype)
    def float(self) -> Tensor: return _ops().cast(self, "float32")
    def double(self) -> Tensor: return _ops().cast(self, "float64")
    def long(self) -> Tensor: return _ops().cast(self, "int64")
    def int(self) -> Tensor: return _ops().cast(self, "int32")
    def exp(self) -> Tensor: return _ops().exp(self)
    def log(self) -> Tensor: return _ops().log(self)
    def sqrt(self) -> Tensor: return _ops().sqrt(self)
    def rsqrt(self) -> Tensor: return _ops().rsqrt(self)
    def tanh(self) -> Tensor: return _ops().tanh(self)
    def sigmoid(self) -> Tensor: return _ops().sigmoid(self)
    def sin(self) -> Tensor: return _ops().sin(self)
    def cos(self) -> Tensor: return _ops().cos(self)
    def abs(self) -> Tensor: return _ops().abs(self)
    def square(self) -> Tensor: return _ops().mul(self, self)
    def relu(self) -> Tensor: return _ops().relu(self)
    def clip(self, min: Any = None, max: Any = None) -> Tensor: return _ops().clip(self, min, max)
    clamp = clip
    def softmax(self, dim: int = -1) -> Tensor: return _ops().softmax(self, dim)
    def log_softmax(self, dim: int = -1) -> Tensor: return _ops().log_softmax(self, dim)
    def pow(self, e: Any) -> Tensor: return _ops().pow(self, e)

    @property
    def T(self) -> Tensor:
        return _ops().permute(self, *reversed(range(self.ndim)))

    @property
    def mT(self) -> Tensor:
        return _ops().transpose(self, -2, -1)


def _ops() -> Any:
    from . import ops

    return ops


def _dtype_arg(d: Any) -> DType:
    from ..ir.dtypes import dtype

    return dtype(d)
