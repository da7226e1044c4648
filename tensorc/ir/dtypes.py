"""dtypes and the one promotion table.

Storage dtypes: bool, int32, int64, uint32 (random bits), float16, bfloat16,
float32, float64. Promotion of two tensors:

- bool < integers < floats: the result takes the higher category's dtype;
- two integers: the wider one; uint32 with a signed integer gives int64;
- two floats: the wider one; float16 with bfloat16 gives float32.

Python scalars are *weak* (as in JAX and PyTorch): they take the tensor's
dtype if it is of the same or a higher category (``f16_tensor * 2.0`` stays
float16); a Python float with a bool/int tensor gives ``default_float``
(float32); a Python int with a bool tensor gives ``default_int`` (int64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from ..errors import DTypeError


@dataclass(frozen=True, eq=True)
class DType:
    """One tensor element type (compare with ``is`` or ``==``)."""

    name: str
    short: str  # the printed form, "f32"
    kind: str  # "b", "i", "u" or "f"
    itemsize: int

    @property
    def np(self) -> np.dtype:
        return _NUMPY[self.name]

    @property
    def is_float(self) -> bool:
        return self.kind == "f"

    @property
    def is_int(self) -> bool:
        return self.kind in ("i", "u")

    @property
    def is_bool(self) -> bool:
        return self.kind == "b"

    @property
    def category(self) -> int:
        return {"b": 0, "i": 1, "u": 1, "f": 2}[self.kind]

    def __repr__(self) -> str:
        return f"tc.{self.name}"

    def __str__(self) -> str:
        return self.name


bool_ = DType("bool", "bool", "b", 1)
int32 = DType("int32", "i32", "i", 4)
int64 = DType("int64", "i64", "i", 8)
uint32 = DType("uint32", "u32", "u", 4)
float16 = DType("float16", "f16", "f", 2)
bfloat16 = DType("bfloat16", "bf16", "f", 2)
float32 = DType("float32", "f32", "f", 4)
float64 = DType("float64", "f64", "f", 8)

ALL_DTYPES = (bool_, int32, int64, uint32, float16, bfloat16, float32, float64)
FLOAT_DTYPES = (float16, bfloat16, float32, float64)
INT_DTYPES = (int32, int64, uint32)

default_float = float32
default_int = int64

_NUMPY = {
    "bool": np.dtype(np.bool_),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint32": np.dtype(np.uint32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}
_BY_NAME = {d.name: d for d in ALL_DTYPES}
_BY_NAME.update({d.short: d for d in ALL_DTYPES})
_BY_NUMPY = {v: _BY_NAME[k] for k, v in _NUMPY.items()}


def dtype(x: Any) -> DType:
    """Turn a DType, a name ("float32", "f32"), a numpy dtype or type into a DType.

    >>> dtype("f32"), dtype(np.int64)
    (tc.float32, tc.int64)
    """
    if isinstance(x, DType):
        return x
    if isinstance(x, str) and x in _BY_NAME:
        return _BY_NAME[x]
    if x is bool:
        return bool_
    if x is int:
        return default_int
    if x is float:
        return default_float
    try:
        npd = np.dtype(x)
    except TypeError:
        raise DTypeError(f"not a dtype: {x!r}") from None
    if npd not in _BY_NUMPY:
        raise DTypeError(f"tensorc has no dtype {npd}; supported: {[d.name for d in ALL_DTYPES]}")
    return _BY_NUMPY[npd]


def promote(a: DType, b: DType) -> DType:
    """The dtype of a binary op on two tensors (see the module docstring).

    >>> promote(int32, float16), promote(float16, bfloat16), promote(uint32, int32)
    (tc.float16, tc.float32, tc.int64)
    """
    if a == b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    if a.is_int:
        if a.kind != b.kind:  # one signed, one unsigned 32-bit
            return int64
        return a if a.itemsize >= b.itemsize else b
    # two different floats
    if {a, b} == {float16, bfloat16}:
        return float32
    return a if a.itemsize >= b.itemsize else b


def weak_scalar_dtype(value: Any, other: DType) -> DType:
    """The dtype a Python scalar takes when combined with a tensor of ``other``."""
    if isinstance(value, (bool, np.bool_)):
        return other
    if isinstance(value, (int, np.integer)):
        return other if other.category >= 1 else default_int
    if isinstance(value, (float, np.floating)):
        return other if other.is_float else default_float
    raise TypeError(f"not a Python scalar: {value!r}")


def scalar_dtype(value: Any) -> DType:
    """The dtype of a Python scalar on its own (bool, int64 or float32)."""
    if isinstance(value, (bool, np.bool_)):
        return bool_
    if isinstance(value, (int, np.integer)):
        return default_int
    if isinstance(value, (float, np.floating)):
        return default_float
    raise TypeError(f"not a Python scalar: {value!r}")


def type_str(shape: tuple[int, ...], dt: DType) -> str:
    """The printed form of a tensor type: ``f32[4,8]`` (``f32[]`` for a scalar)."""
    return f"{dt.short}[{','.join(str(s) for s in shape)}]"
