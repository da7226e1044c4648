"""Shared hypothesis strategies, tolerances and comparison helpers for tensorc's tests.

Import what you need::

    from strategies import FAST, arrays, broadcastable_shapes, shapes, assert_close

Tolerances are written down once, here, per dtype (``TOLERANCES``), as the
conventions ask. Shapes include size-0 and size-1 dimensions; float arrays are
bounded and finite so every op's numpy reference is well defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorc as tc

# ----------------------------------------------------------------------------- settings

FAST = settings(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""Default for op tests: a few dozen examples, no deadline (the first call traces and compiles)."""

QUICK = settings(deadline=None, max_examples=8, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""For heavier properties (models, scans, many calls per example)."""

# ----------------------------------------------------------------------------- dtypes

FLOAT_DTYPES = ("float32", "float64")
HALF_DTYPES = ("float16", "bfloat16")
INT_DTYPES = ("int32", "int64")
ALL_INT_DTYPES = ("int32", "int64", "uint32")
NUMERIC_DTYPES = FLOAT_DTYPES + INT_DTYPES
ALL_DTYPES = ("bool",) + ALL_INT_DTYPES + HALF_DTYPES + FLOAT_DTYPES

# (rtol, atol) for comparing a tensorc result of this dtype with a float64 numpy oracle.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-10, 1e-12),
    "float32": (2e-5, 1e-6),
    "float16": (4e-3, 1e-3),
    "bfloat16": (3e-2, 1e-2),
    "int32": (0.0, 0.0),
    "int64": (0.0, 0.0),
    "uint32": (0.0, 0.0),
    "bool": (0.0, 0.0),
}


def np_dtype(name: str) -> np.dtype:
    """The numpy dtype of a tensorc dtype name (bfloat16 via ml_dtypes)."""
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def dtype_name(x: Any) -> str:
    """The tensorc name of an array's or a DType's dtype."""
    if isinstance(x, tc.DType):
        return x.name
    if isinstance(x, str):
        return tc.ir.dtypes.dtype(x).name
    d = np.asarray(x).dtype if not isinstance(x, np.dtype) else x
    return "bfloat16" if d == np.dtype(ml_dtypes.bfloat16) else d.name


def dtypes(names: Sequence[str] = FLOAT_DTYPES) -> st.SearchStrategy[str]:
    """One dtype name out of ``names``."""
    return st.sampled_from(tuple(names))


# ----------------------------------------------------------------------------- shapes


def shapes(min_dims: int = 0, max_dims: int = 4, min_side: int = 0, max_side: int = 5) -> st.SearchStrategy[tuple[int, ...]]:
    """Array shapes, including size-0 and size-1 dimensions (by default)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def nonempty_shapes(min_dims: int = 0, max_dims: int = 4, max_side: int = 5) -> st.SearchStrategy[tuple[int, ...]]:
    return shapes(min_dims, max_dims, 1, max_side)


def broadcastable_shapes(num_shapes: int = 2, min_dims: int = 0, max_dims: int = 4, min_side: int = 0,
                         max_side: int = 4) -> st.SearchStrategy[Any]:
    """``BroadcastableShapes(input_shapes, result_shape)`` of ``num_shapes`` mutually broadcastable shapes."""
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims,
                                             min_side=min_side, max_side=max_side)


@st.composite
def axis_for(draw: Any, ndim: int, allow_none: bool = False) -> int | None:
    """A valid axis of a rank-``ndim`` array, negative half of the time."""
    if ndim == 0 or (allow_none and draw(st.booleans())):
        return None
    return draw(st.integers(-ndim, ndim - 1))


@st.composite
def axes_for(draw: Any, ndim: int) -> Any:
    """``None``, one axis (maybe negative) or a tuple of distinct axes (maybe negative)."""
    kind = draw(st.sampled_from(["none", "int", "tuple"]) if ndim else st.just("none"))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    picked = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    return tuple(a - ndim if draw(st.booleans()) else a for a in picked)


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted(a % ndim for a in axis))


# ----------------------------------------------------------------------------- arrays


def elements(dtype: str, min_value: float = -10.0, max_value: float = 10.0) -> st.SearchStrategy[Any]:
    """Scalars of ``dtype``: bounded and finite for floats, bounded for integers."""
    if dtype == "bool":
        return st.booleans()
    if dtype in ALL_INT_DTYPES:
        lo = max(int(np.ceil(min_value)), 0 if dtype == "uint32" else -(2**31))
        return st.integers(lo, int(np.floor(max_value)))
    width = {"float16": 16, "float32": 32, "float64": 64, "bfloat16": 32}[dtype]
    if width < 64:  # hypothesis wants bounds representable at `width`: round them inward
        ft = np.float16 if width == 16 else np.float32
        lo, hi = ft(min_value), ft(max_value)
        min_value = float(lo if lo >= min_value else np.nextafter(lo, ft(np.inf)))
        max_value = float(hi if hi <= max_value else np.nextafter(hi, ft(-np.inf)))
    return st.floats(min_value, max_value, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=width)


def arrays(dtype: str, shape: Any, *, min_value: float = -10.0, max_value: float = 10.0,
           elements_strategy: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[np.ndarray]:
    """Numpy arrays of a tensorc dtype (bfloat16 included) with bounded, finite values."""
    elems = elements_strategy if elements_strategy is not None else elements(dtype, min_value, max_value)
    if dtype == "bfloat16":
        return hnp.arrays(np.float32, shape, elements=elems).map(lambda a: a.astype(ml_dtypes.bfloat16))
    return hnp.arrays(np_dtype(dtype), shape, elements=elems)


def full_range_ints(dtype: str) -> st.SearchStrategy[int]:
    """Any value of an integer dtype, extremes included (hypothesis favours them)."""
    info = np.iinfo(np_dtype(dtype))
    return st.integers(int(info.min), int(info.max))


@st.composite
def array_and_axis(draw: Any, dtype: str = "float32", min_dims: int = 1, max_dims: int = 4, min_side: int = 0,
                   **kw: Any) -> tuple[np.ndarray, int]:
    """An array and one valid axis of it (maybe negative)."""
    shape = draw(shapes(min_dims, max_dims, min_side))
    x = draw(arrays(dtype, shape, **kw))
    return x, draw(axis_for(len(shape)))


# ----------------------------------------------------------------------------- comparison


def tolerance(dtype: Any) -> tuple[float, float]:
    return TOLERANCES[dtype_name(dtype)]


def assert_close(actual: Any, expected: Any, dtype: Any = None, *, scale: float = 1.0, check_dtype: bool = True,
                 err_msg: str = "") -> None:
    """``actual`` (a tensorc result) equals ``expected`` within ``dtype``'s tolerance.

    ``expected`` may be computed in higher precision; it is compared in float64.
    ``scale`` widens the tolerance (e.g. for sums, by the number of terms).
    With ``check_dtype`` the dtype of ``actual`` must be ``dtype`` exactly.
    """
    if isinstance(actual, tc.Tensor):
        actual = actual.numpy()
    actual = np.asarray(actual)
    name = dtype_name(dtype if dtype is not None else actual)
    if check_dtype:
        assert dtype_name(actual) == name, f"dtype {dtype_name(actual)} != {name}. {err_msg}"
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}. {err_msg}"
    rtol, atol = TOLERANCES[name]
    if rtol == 0 and atol == 0:
        np.testing.assert_array_equal(actual, expected.astype(actual.dtype) if expected.dtype != actual.dtype else expected,
                                      err_msg=err_msg)
        return
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=rtol * scale, atol=atol * scale,
                               err_msg=err_msg)


def assert_same(a: Any, b: Any, err_msg: str = "") -> None:
    """Two tensorc results of one computation (say eager and jit) agree: same dtype and shape,
    integers and bools exactly, floats within their dtype's tolerance (passes may reassociate)."""
    a = a.numpy() if isinstance(a, tc.Tensor) else np.asarray(a)
    b = b.numpy() if isinstance(b, tc.Tensor) else np.asarray(b)
    assert a.dtype == b.dtype, f"dtypes differ: {a.dtype} vs {b.dtype}. {err_msg}"
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}. {err_msg}"
    assert_close(a, b.astype(np.float64) if dtype_name(b) in ("float16", "bfloat16", "float32", "float64") else b,
                 dtype_name(a), err_msg=err_msg)


def op_names(graph: tc.Graph) -> list[str]:
    """The ops of every node in ``graph``, in topological order (scan bodies not included)."""
    return [n.op for n in graph.nodes]
