"""Every primitive op, and the DSL functions built on them, forward against numpy.

Each case runs twice: eagerly on ``tc.tensor`` values and through ``tc.jit`` on
numpy arrays; both must match an independent numpy computation and each
other. ``test_every_registered_op_has_a_forward_case`` fails when an op is
added to the registry without a case here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from strategies import (
    ALL_DTYPES,
    ALL_INT_DTYPES,
    FAST,
    FLOAT_DTYPES,
    HALF_DTYPES,
    INT_DTYPES,
    NUMERIC_DTYPES,
    QUICK,
    array_and_axis,
    arrays,
    assert_close,
    assert_same,
    axes_for,
    axis_for,
    broadcastable_shapes,
    dtypes,
    elements,
    full_range_ints,
    nonempty_shapes,
    normalize_axes,
    np_dtype,
    op_names,
    shapes,
)

import tensorc as tc
from tensorc.ir.registry import REGISTRY

# ----------------------------------------------------------------------------- harness

COVERED: set[str] = set()


def covers(*ops: str) -> Callable[[Any], Any]:
    """Mark a test as the forward case of primitive ``ops``."""
    COVERED.update(ops)
    return lambda fn: fn


def run_both(fn: Callable[..., Any], *arrays_: np.ndarray, op: str | None = None) -> Any:
    """``fn`` eagerly on tensors and jitted on arrays; check they agree; return the eager result as numpy.

    With ``op``, the traced graph must contain a node of that primitive, so the
    case really exercises it.
    """
    eager = fn(*[tc.tensor(a) for a in arrays_])
    jitted = tc.jit(fn)
    if op is not None:
        ops_in_graph = op_names(jitted.lower(*arrays_).graph)
        assert op in ops_in_graph, f"{op} not in traced graph: {ops_in_graph}"
    out = jitted(*arrays_)
    e_leaves, e_tree = tc.tree_flatten(eager)
    j_leaves, j_tree = tc.tree_flatten(out)
    assert e_tree == j_tree, f"eager returns {e_tree}, jit returns {j_tree}"
    for e, j in zip(e_leaves, j_leaves):
        assert isinstance(e, tc.Tensor) and not e.is_traced
        assert isinstance(j, np.ndarray), f"jit returned {type(j).__name__}, not a numpy array"
        assert_same(e, j, err_msg="eager and jit disagree")
    return tc.tree_unflatten(e_tree, [e.numpy() for e in e_leaves])


def f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


def test_every_registered_op_has_a_forward_case() -> None:
    missing = sorted(set(REGISTRY) - COVERED)
    assert not missing, f"primitive ops without a forward test case in {__file__}: {missing}"


def test_run_both_catches_a_disagreement() -> None:
    # The harness itself must be able to fail: a function whose jit and eager results differ.
    calls = []

    def fn(a: tc.Tensor) -> tc.Tensor:
        calls.append(a.is_traced)
        return a + (1.0 if a.is_traced else 0.0)

    with pytest.raises(AssertionError, match="disagree"):
        run_both(fn, np.ones(3, np.float32))
    with pytest.raises(AssertionError, match="not in traced graph"):
        run_both(lambda a: a + 1, np.ones(3, np.float32), op="mul")


# ----------------------------------------------------------------------------- unary elementwise


def _nonzero(dtype: str, lo: float = 0.1, hi: float = 10.0) -> st.SearchStrategy[Any]:
    return st.one_of(elements(dtype, lo, hi), elements(dtype, -hi, -lo))


_sigmoid64 = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
_erf64 = np.vectorize(math.erf, otypes=[np.float64])
FLOATY = FLOAT_DTYPES + HALF_DTYPES
NUMERIC_ALL = NUMERIC_DTYPES + HALF_DTYPES + ("uint32",)

# op: (tensorc function, float64 numpy oracle, input dtypes, element strategy per dtype)
UNARY: dict[str, tuple[Callable[..., Any], Callable[..., Any], tuple[str, ...], Callable[[str], Any]]] = {
    "neg": (tc.neg, np.negative, FLOATY + INT_DTYPES, lambda d: elements(d, -100, 100)),
    "exp": (tc.exp, np.exp, FLOATY + INT_DTYPES, lambda d: elements(d, -10, 10)),
    "log": (tc.log, np.log, FLOATY + INT_DTYPES, lambda d: elements(d, 0.01, 100) if d in FLOATY else elements(d, 1, 100)),
    "sqrt": (tc.sqrt, np.sqrt, FLOATY + INT_DTYPES, lambda d: elements(d, 0, 100)),
    "rsqrt": (tc.rsqrt, lambda x: 1 / np.sqrt(x), FLOATY + INT_DTYPES,
              lambda d: elements(d, 0.01, 100) if d in FLOATY else elements(d, 1, 100)),
    "reciprocal": (tc.reciprocal, lambda x: 1 / x, FLOATY + INT_DTYPES, lambda d: _nonzero(d) if d in FLOATY else _nonzero(d, 1, 10)),
    "tanh": (tc.tanh, np.tanh, FLOATY + INT_DTYPES, lambda d: elements(d, -10, 10)),
    "sigmoid": (tc.sigmoid, _sigmoid64, FLOATY + INT_DTYPES, lambda d: elements(d, -30, 30)),
    "sin": (tc.sin, np.sin, FLOATY + INT_DTYPES, lambda d: elements(d, -10, 10)),
    "cos": (tc.cos, np.cos, FLOATY + INT_DTYPES, lambda d: elements(d, -10, 10)),
    "erf": (tc.erf, _erf64, FLOATY + INT_DTYPES, lambda d: elements(d, -4, 4)),
    "abs": (tc.abs, np.abs, FLOATY + INT_DTYPES, lambda d: elements(d, -100, 100)),
    "sign": (tc.sign, np.sign, FLOATY + INT_DTYPES, lambda d: elements(d, -5, 5)),
    "floor": (tc.floor, np.floor, FLOATY + INT_DTYPES, lambda d: elements(d, -20, 20)),
    "logical_not": (tc.logical_not, np.logical_not, ("bool",), lambda d: elements(d)),
}
covers(*UNARY)


def _unary_result_dtype(op: str, dt: str) -> str:
    if dt == "bool" or op in ("neg", "abs", "sign"):
        return dt
    return dt if dt in FLOATY else "float32"  # documented: integers are converted to float32 first


@pytest.mark.parametrize("op", sorted(UNARY))
@FAST
@given(data=st.data())
def test_unary(op: str, data: Any) -> None:
    tc_fn, np_fn, allowed, elems = UNARY[op]
    dt = data.draw(dtypes(allowed), label="dtype")
    x = data.draw(arrays(dt, data.draw(shapes(), label="shape"), elements_strategy=elems(dt)), label="x")
    out_dt = _unary_result_dtype(op, dt)
    got = run_both(tc_fn, x, op=op)
    if dt in HALF_DTYPES:
        # Storage-only halves: computed in float32, rounded once to the storage dtype.
        expected = np_fn(f64(x).astype(np.float32).astype(np.float64))
    else:
        expected = np_fn(x if dt == "bool" else f64(x))
    assert_close(got, np.asarray(expected).astype(np_dtype(out_dt)) if out_dt in ALL_INT_DTYPES + ("bool",) else expected, out_dt)


def test_unary_dtype_rules() -> None:
    with pytest.raises(tc.DTypeError, match="neg"):
        tc.neg(tc.tensor([True]))
    with pytest.raises(tc.DTypeError, match="logical_not"):
        tc.logical_not(tc.tensor([1.0]))
    assert tc.exp(tc.tensor([1, 2])).dtype == tc.float32
    assert tc.abs(tc.tensor(np.array([-3], np.int32))).dtype == tc.int32
    assert (~tc.tensor([True, False])).tolist() == [False, True]


# ----------------------------------------------------------------------------- binary elementwise

ARITH = NUMERIC_DTYPES + HALF_DTYPES


def _pos(d: str) -> Any:
    return elements(d, 0.5, 4) if d not in ALL_INT_DTYPES else elements(d, 1, 5)


# op: (tensorc function, numpy function, dtypes, strategy for a, strategy for b, compute in the promoted dtype?)
BINARY: dict[str, tuple[Any, Any, tuple[str, ...], Any, Any, bool]] = {
    "add": (tc.add, np.add, ARITH, lambda d: elements(d, -100, 100), lambda d: elements(d, -100, 100), False),
    "sub": (tc.sub, np.subtract, ARITH, lambda d: elements(d, -100, 100), lambda d: elements(d, -100, 100), False),
    "mul": (tc.mul, np.multiply, ARITH, lambda d: elements(d, -30, 30), lambda d: elements(d, -30, 30), False),
    "div": (tc.div, np.divide, ARITH, lambda d: elements(d, -100, 100), lambda d: _nonzero(d, 1 if d in ALL_INT_DTYPES else 0.1), False),
    "pow": (tc.pow, np.power, ARITH, _pos,
            lambda d: elements(d, 0, 4) if d in ALL_INT_DTYPES else elements(d, -3, 3), False),
    "maximum": (tc.maximum, np.maximum, ARITH + ("uint32",), elements, elements, False),
    "minimum": (tc.minimum, np.minimum, ARITH + ("uint32",), elements, elements, False),
    "floordiv": (tc.floordiv, np.floor_divide, ARITH, lambda d: elements(d, -100, 100),
                 lambda d: _nonzero(d, 1 if d in ALL_INT_DTYPES else 0.5, 10), True),
    "mod": (tc.mod, np.mod, ARITH, lambda d: elements(d, -100, 100),
            lambda d: _nonzero(d, 1 if d in ALL_INT_DTYPES else 0.5, 10), True),
    "eq": (tc.eq, np.equal, ALL_DTYPES, lambda d: elements(d, -2, 2), lambda d: elements(d, -2, 2), True),
    "ne": (tc.ne, np.not_equal, ALL_DTYPES, lambda d: elements(d, -2, 2), lambda d: elements(d, -2, 2), True),
    "lt": (tc.lt, np.less, ALL_DTYPES, lambda d: elements(d, -2, 2), lambda d: elements(d, -2, 2), True),
    "le": (tc.le, np.less_equal, ALL_DTYPES, lambda d: elements(d, -2, 2), lambda d: elements(d, -2, 2), True),
    "gt": (tc.gt, np.greater, ALL_DTYPES, lambda d: elements(d, -2, 2), lambda d: elements(d, -2, 2), True),
    "ge": (tc.ge, np.greater_equal, ALL_DTYPES, lambda d: elements(d, -2, 2), lambda d: elements(d, -2, 2), True),
    "logical_and": (tc.logical_and, np.logical_and, ("bool",), elements, elements, True),
    "logical_or": (tc.logical_or, np.logical_or, ("bool",), elements, elements, True),
}
covers(*BINARY)


@pytest.mark.parametrize("op", sorted(BINARY))
@FAST
@given(data=st.data())
def test_binary(op: str, data: Any) -> None:
    tc_fn, np_fn, allowed, a_elems, b_elems, exact = BINARY[op]
    da = data.draw(dtypes(allowed), label="dtype_a")
    # Same dtype half of the time; otherwise a mixed pair, which exercises promotion.
    db = data.draw(st.one_of(st.just(da), dtypes(allowed)), label="dtype_b")
    if op == "pow" and (da in ALL_INT_DTYPES) != (db in ALL_INT_DTYPES):
        db = da  # int ** float: keep both in one category so the oracle's domain is clear
    (sa, sb), out_shape = data.draw(broadcastable_shapes(2), label="shapes")
    a = data.draw(arrays(da, sa, elements_strategy=a_elems(da)), label="a")
    b = data.draw(arrays(db, sb, elements_strategy=b_elems(db)), label="b")
    dt = tc.promote(tc.ir.dtypes.dtype(da), tc.ir.dtypes.dtype(db)).name
    if op == "div" and dt not in FLOATY:
        dt = "float32"
    out_dt = "bool" if op in ("eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or") else dt
    got = run_both(tc_fn, a, b, op=op)
    assert got.shape == out_shape
    a_p, b_p = a.astype(np_dtype(dt)), b.astype(np_dtype(dt))
    if dt in HALF_DTYPES:
        a_p, b_p = a_p.astype(np.float32), b_p.astype(np.float32)
    elif dt in FLOAT_DTYPES and not exact:
        a_p, b_p = a_p.astype(np.float64), b_p.astype(np.float64)
    with np.errstate(all="ignore"):
        expected = np_fn(a_p, b_p)
    if out_dt in ALL_INT_DTYPES + ("bool",):
        expected = expected.astype(np_dtype(out_dt))
    assert_close(got, expected, out_dt, scale=10 if op == "pow" else 1)


def test_operators_map_to_ops() -> None:
    a, b = tc.tensor([6.0, -7.0]), tc.tensor([4.0, 2.0])
    assert (a + b).tolist() == [10.0, -5.0]
    assert (a - b).tolist() == [2.0, -9.0]
    assert (a * b).tolist() == [24.0, -14.0]
    assert (a / b).tolist() == [1.5, -3.5]
    assert (a // b).tolist() == [1.0, -4.0]
    assert (a % b).tolist() == [2.0, 1.0]
    assert (2.0 - a).tolist() == [-4.0, 9.0]
    assert (1.0 / b).tolist() == [0.25, 0.5]
    assert (a ** 2).tolist() == [36.0, 49.0]
    assert (b ** 0.5).numpy() == pytest.approx([2.0, math.sqrt(2)])
    assert (b ** -1).tolist() == [0.25, 0.5]
    assert (b ** 3).tolist() == [64.0, 8.0]
    assert (2 ** b).tolist() == [16.0, 4.0]
    assert (a > b).tolist() == [True, False]
    assert ((a > 0) & (b > 1)).tolist() == [True, False]
    assert ((a > 0) | (b > 1)).tolist() == [True, True]
    i = tc.tensor([7, -7])
    assert (i // 2).tolist() == [3, -4] and (i % 3).tolist() == [1, 2]
    assert (i // 2).dtype == tc.int64
    assert (np.ones(2, np.float64) + a).dtype == tc.float64  # numpy arrays are strong operands


def test_integer_division_by_zero_is_an_error() -> None:
    with pytest.raises(tc.TensorcError, match="floordiv"):
        tc.tensor([1, 2]) // tc.tensor([1, 0])
    with pytest.raises(tc.TensorcError, match="mod"):
        tc.tensor([1, 2]) % 0
    with pytest.raises(tc.TensorcError, match="floordiv"):
        tc.jit(lambda a, b: a // b)(np.array([1, 2], np.int32), np.array([0, 1], np.int32))


@covers("where")
@FAST
@given(data=st.data())
def test_where(data: Any) -> None:
    (sc, sa, sb), out_shape = data.draw(broadcastable_shapes(3), label="shapes")
    dt = data.draw(dtypes(ALL_DTYPES), label="dtype")
    c = data.draw(arrays("bool", sc), label="cond")
    a = data.draw(arrays(dt, sa), label="a")
    b = data.draw(arrays(dt, sb), label="b")
    got = run_both(tc.where, c, a, b, op="where")
    np.testing.assert_array_equal(got, np.where(c, a, b))
    assert got.dtype == np_dtype(dt) and got.shape == out_shape


def test_where_with_scalars_and_promotion() -> None:
    c = np.array([True, False, True])
    got = run_both(lambda c, x: tc.where(c, x, 0), c, np.array([1.5, 2.5, 3.5], np.float16))
    assert got.dtype == np.float16 and got.tolist() == [1.5, 0.0, 3.5]
    got = run_both(lambda c, x: tc.where(c, 0.5, x), c, np.array([1, 2, 3], np.int32))
    assert got.dtype == np.float32 and got.tolist() == [0.5, 2.0, 0.5]


@FAST
@given(data=st.data())
def test_clip(data: Any) -> None:
    dt = data.draw(dtypes(NUMERIC_DTYPES), label="dtype")
    x = data.draw(arrays(dt, data.draw(shapes())), label="x")
    lo = data.draw(st.one_of(st.none(), st.integers(-10, 10)), label="lo")
    hi = data.draw(st.one_of(st.none(), st.integers(-10, 10)), label="hi")
    got = run_both(lambda t: tc.clip(t, lo, hi), x)
    expected = x if lo is None and hi is None else np.clip(x, lo, hi)
    assert_close(got, expected, dt)
    if lo is not None and hi is not None:
        assert_close(tc.tensor(x).clamp(lo, hi), expected, dt)


# ----------------------------------------------------------------------------- cast


def _cast_values(src: str, dst: str) -> Any:
    if src == "bool":
        return elements("bool")
    lo = 0 if dst == "uint32" else -100
    if src in ALL_INT_DTYPES:
        return elements(src, lo, 100)
    return elements(src, lo, 100.0)


@covers("cast")
@FAST
@given(data=st.data())
def test_cast(data: Any) -> None:
    src = data.draw(dtypes(ALL_DTYPES), label="src")
    dst = data.draw(dtypes(ALL_DTYPES), label="dst")
    x = data.draw(arrays(src, data.draw(shapes()), elements_strategy=_cast_values(src, dst)), label="x")
    got = run_both(lambda t: tc.cast(t, dst), x, op="cast" if src != dst else None)
    assert got.dtype == np_dtype(dst)
    if dst == "bool":
        expected = f64(x) != 0
    elif dst in ALL_INT_DTYPES:
        expected = np.trunc(f64(x)).astype(np_dtype(dst))  # C semantics: toward zero
    else:
        expected = x.astype(np_dtype(dst))  # one rounding, as numpy's astype
    np.testing.assert_array_equal(got, expected)


def test_cast_truncates_toward_zero() -> None:
    x = np.array([-2.9, -2.5, -0.5, 0.5, 2.5, 2.9, 7.0], np.float32)
    for dst in ("int32", "int64"):
        assert tc.tensor(x).astype(dst).tolist() == [-2, -2, 0, 0, 2, 2, 7]
        assert tc.jit(lambda t, d=dst: t.astype(d))(x).tolist() == [-2, -2, 0, 0, 2, 2, 7]
    assert tc.tensor(x).long().dtype == tc.int64 and tc.tensor(x).int().dtype == tc.int32
    assert tc.tensor([1, 2]).float().dtype == tc.float32 and tc.tensor([1, 2]).double().dtype == tc.float64
    assert tc.tensor([0.0, -0.0, 0.3]).to(tc.bool).tolist() == [False, False, True]


# ----------------------------------------------------------------------------- half-precision storage


@pytest.mark.parametrize("half", HALF_DTYPES)
@FAST
@given(data=st.data())
def test_half_storage_rounds_after_every_op(half: str, data: Any) -> None:
    shape = data.draw(shapes(max_dims=2))
    x, y, z = (data.draw(arrays(half, shape, min_value=-4, max_value=4)) for _ in range(3))
    got = run_both(lambda a, b, c: tc.exp(a * b + c), x, y, z)
    assert got.dtype == np_dtype(half)
    h = np_dtype(half)
    # Each op: widen to float32, compute, round back to the storage dtype.
    step1 = (x.astype(np.float32) * y.astype(np.float32)).astype(h)
    step2 = (step1.astype(np.float32) + z.astype(np.float32)).astype(h)
    step3 = np.exp(step2.astype(np.float32)).astype(h)
    np.testing.assert_array_equal(got.astype(np.float32), step3.astype(np.float32))


def test_half_tensors_keep_their_dtype() -> None:
    for half, npd in (("float16", np.float16), ("bfloat16", ml_dtypes.bfloat16)):
        t = tc.tensor([1.0, 2.5, -3.0], half)
        assert t.dtype.name == half and t.numpy().dtype == np.dtype(npd)
        assert (t * 2.0).dtype.name == half  # a weak Python float keeps the half dtype
        assert t.sum().dtype.name == half
        assert float(t.sum()) == 0.5
        assert tc.jit(lambda a: a * a)(t.numpy()).dtype == np.dtype(npd)
    # bfloat16 keeps float32's range: 1e20 is finite there, infinite in float16.
    assert np.isfinite(float(tc.tensor([1e20], "bfloat16").sum()))
    assert np.isinf(tc.tensor([1e5], "float16").numpy()).all()


# ----------------------------------------------------------------------------- reductions


@covers("sum")
@FAST
@given(data=st.data())
def test_sum(data: Any) -> None:
    dt = data.draw(dtypes(ALL_DTYPES), label="dtype")
    x = data.draw(arrays(dt, data.draw(shapes())), label="x")
    axis = data.draw(axes_for(x.ndim), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    got = run_both(lambda t: tc.sum(t, axis, keepdims), x, op="sum" if x.ndim and axis != () else None)
    expected = np.sum(f64(x), axis=axis, keepdims=keepdims)
    # Documented: bool, int32 and uint32 sum as int64.
    out_dt = "int64" if dt in ("bool", "int32", "uint32", "int64") else dt
    n_terms = max(1, x.size // max(1, math.prod(np.shape(expected))))
    assert_close(got, expected.astype(np_dtype(out_dt)) if out_dt == "int64" else expected, out_dt,
                 scale=n_terms if dt in FLOATY else 1)


@covers("max")
@FAST
@given(data=st.data())
def test_max(data: Any) -> None:
    dt = data.draw(dtypes(ALL_DTYPES), label="dtype")
    elems = full_range_ints(dt) if dt in ALL_INT_DTYPES else elements(dt)
    x = data.draw(arrays(dt, data.draw(nonempty_shapes()), elements_strategy=elems), label="x")
    axis = data.draw(axes_for(x.ndim), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    got = run_both(lambda t: tc.max(t, axis, keepdims), x, op="max" if x.ndim and axis != () and dt != "bool" else None)
    np.testing.assert_array_equal(got, np.max(x, axis=axis, keepdims=keepdims))
    assert got.dtype == x.dtype


@FAST
@given(data=st.data())
def test_min(data: Any) -> None:
    dt = data.draw(dtypes(ALL_DTYPES), label="dtype")
    elems = full_range_ints(dt) if dt in ALL_INT_DTYPES else elements(dt)
    x = data.draw(arrays(dt, data.draw(nonempty_shapes()), elements_strategy=elems), label="x")
    axis = data.draw(axes_for(x.ndim), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    got = run_both(lambda t: tc.min(t, axis, keepdims), x)
    np.testing.assert_array_equal(got, np.min(x, axis=axis, keepdims=keepdims))
    assert got.dtype == x.dtype


@pytest.mark.parametrize("dt", ["int32", "int64"])
def test_min_of_the_most_negative_integer(dt: str) -> None:
    lo = np.iinfo(dt).min
    x = np.array([5, lo, 7], dt)
    assert int(tc.tensor(x).min()) == lo
    assert int(tc.jit(lambda t: t.min())(x)) == lo
    assert int(tc.tensor(x).argmin()) == 1


def test_reductions_over_empty_axes() -> None:
    x = np.zeros((3, 0), np.float32)
    assert tc.tensor(x).sum(axis=1).tolist() == [0.0, 0.0, 0.0]
    assert tc.tensor(x).sum(axis=0).shape == (0,)
    assert tc.jit(lambda t: t.sum())(x) == 0.0
    with pytest.raises(tc.ShapeError, match="max"):
        tc.tensor(x).max(axis=1)
    with pytest.raises(tc.ShapeError, match="argmax"):
        tc.tensor(x).argmax(axis=1)
    assert np.isnan(tc.tensor(x).mean().item())


@FAST
@given(data=st.data())
def test_reduction_aliases_and_methods(data: Any) -> None:
    x = data.draw(arrays("float64", data.draw(nonempty_shapes(min_dims=1))), label="x")
    ax = data.draw(axis_for(x.ndim), label="axis")
    keep = data.draw(st.booleans(), label="keepdim")
    t = tc.tensor(x)
    for name, npf in (("sum", np.sum), ("mean", np.mean), ("max", np.max), ("min", np.min), ("var", np.var)):
        by_axis = getattr(t, name)(axis=ax, keepdims=keep)
        by_dim = getattr(t, name)(dim=ax, keepdim=keep)
        by_fn = getattr(tc, name)(t, dim=ax, keepdim=keep)
        expected = npf(x, axis=ax, keepdims=keep)
        for got in (by_axis, by_dim, by_fn):
            assert_close(got, expected, "float64", scale=10)
    with pytest.raises(tc.TensorcError, match="not both"):
        t.sum(axis=0, dim=0)


@FAST
@given(data=st.data())
def test_mean_and_var(data: Any) -> None:
    dt = data.draw(dtypes(FLOAT_DTYPES + INT_DTYPES), label="dtype")
    x = data.draw(arrays(dt, data.draw(nonempty_shapes())), label="x")
    axis = data.draw(axes_for(x.ndim), label="axis")
    keepdims = data.draw(st.booleans())
    correction = data.draw(st.sampled_from([0, 1]))
    n = math.prod(x.shape[a] for a in normalize_axes(axis, x.ndim))
    assume(n > correction)
    out_dt = dt if dt in FLOAT_DTYPES else "float32"
    mean = run_both(lambda t: tc.mean(t, axis, keepdims), x)
    assert_close(mean, np.mean(f64(x), axis=axis, keepdims=keepdims), out_dt, scale=10)
    var = run_both(lambda t: tc.var(t, axis, keepdims, correction=correction), x)
    assert_close(var, np.var(f64(x), axis=axis, keepdims=keepdims, ddof=correction), out_dt, scale=100)


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@FAST
@given(data=st.data())
def test_argmax_argmin(name: str, data: Any) -> None:
    dt = data.draw(dtypes(NUMERIC_DTYPES + ("bool",)), label="dtype")
    # Few distinct values, so ties are common: the first index must win, as in numpy.
    x = data.draw(arrays(dt, data.draw(nonempty_shapes()), min_value=-2, max_value=2,
                         elements_strategy=st.sampled_from([-1.0, 0.0, 2.5]) if dt in FLOAT_DTYPES else None), label="x")
    axis = data.draw(axis_for(x.ndim, allow_none=True), label="axis")
    keepdims = data.draw(st.booleans())
    got = run_both(lambda t: getattr(tc, name)(t, axis, keepdims), x)
    expected = getattr(np, name)(x, axis=axis, keepdims=keepdims)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    if axis is not None:
        np.testing.assert_array_equal(getattr(tc.tensor(x), name)(dim=axis, keepdim=keepdims).numpy(), expected)


def _softmax64(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@FAST
@given(data=st.data())
def test_softmax_log_softmax_logsumexp(data: Any) -> None:
    dt = data.draw(dtypes(FLOAT_DTYPES), label="dtype")
    x, axis = data.draw(array_and_axis(dt, min_side=1, min_value=-50, max_value=50), label="x,axis")
    x64 = f64(x)
    assert_close(run_both(lambda t: tc.softmax(t, axis), x), _softmax64(x64, axis), dt)
    assert_close(run_both(lambda t: t.softmax(dim=axis), x), _softmax64(x64, axis), dt)
    m = x64.max(axis=axis, keepdims=True)
    lse = np.log(np.exp(x64 - m).sum(axis=axis, keepdims=True)) + m
    assert_close(run_both(lambda t: tc.log_softmax(t, axis), x), x64 - lse, dt, scale=10)
    keep = data.draw(st.booleans())
    assert_close(run_both(lambda t: tc.logsumexp(t, axis, keep), x), lse if keep else np.squeeze(lse, axis), dt, scale=10)


def test_softmax_is_stable_and_handles_minus_infinity() -> None:
    x = np.array([[1000.0, 1000.0, -1000.0], [-np.inf, 0.0, -np.inf]], np.float32)
    np.testing.assert_allclose(tc.softmax(tc.tensor(x)).numpy(), [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(tc.logsumexp(tc.tensor(x), -1).numpy(), [1000 + np.log(2), 0.0], rtol=1e-6)
    # A row of only -inf has logsumexp -inf, not NaN.
    assert tc.logsumexp(tc.tensor(np.full((1, 3), -np.inf, np.float32)), -1).tolist() == [-np.inf]
    assert tc.softmax(tc.tensor([1, 2, 3])).dtype == tc.float32


# ----------------------------------------------------------------------------- movement


@covers("reshape")
@FAST
@given(data=st.data())
def test_reshape(data: Any) -> None:
    dt = data.draw(dtypes(ALL_DTYPES), label="dtype")
    x = data.draw(arrays(dt, data.draw(shapes())), label="x")
    n = x.size
    k = data.draw(st.integers(0, x.ndim))
    lead = math.prod(x.shape[:k])
    targets = [(-1,), (1, -1), (-1, 1), x.shape[::-1], (n,), (n, 1, 1)]
    if lead:
        targets.append((lead, -1))
    target = data.draw(st.sampled_from(targets), label="target")
    got = run_both(lambda t: t.reshape(target), x, op="reshape" if np.reshape(x, target).shape != x.shape else None)
    np.testing.assert_array_equal(got, np.reshape(x, target))
    np.testing.assert_array_equal(tc.tensor(x).reshape(*target).numpy(), np.reshape(x, target))
    np.testing.assert_array_equal(tc.reshape(tc.tensor(x), target).numpy(), np.reshape(x, target))
    np.testing.assert_array_equal(tc.tensor(x).view(target).numpy(), np.reshape(x, target))


@covers("permute")
@FAST
@given(data=st.data())
def test_permute_and_transpose(data: Any) -> None:
    x = data.draw(arrays("float32", data.draw(shapes(min_dims=1))), label="x")
    perm = data.draw(st.permutations(range(x.ndim)), label="perm")
    signed = tuple(p - x.ndim if data.draw(st.booleans()) else p for p in perm)
    got = run_both(lambda t: t.permute(*signed), x, op="permute" if list(perm) != sorted(perm) else None)
    np.testing.assert_array_equal(got, np.transpose(x, perm))
    np.testing.assert_array_equal(tc.permute(tc.tensor(x), signed).numpy(), np.transpose(x, perm))
    a, b = data.draw(axis_for(x.ndim)), data.draw(axis_for(x.ndim))
    np.testing.assert_array_equal(run_both(lambda t: tc.transpose(t, a, b), x), np.swapaxes(x, a, b))
    np.testing.assert_array_equal(tc.tensor(x).T.numpy(), x.T)
    if x.ndim >= 2:
        np.testing.assert_array_equal(tc.tensor(x).mT.numpy(), np.swapaxes(x, -1, -2))
        np.testing.assert_array_equal(tc.tensor(x).transpose().numpy(), np.swapaxes(x, -1, -2))


@covers("expand")
@FAST
@given(data=st.data())
def test_expand_and_broadcast_to(data: Any) -> None:
    target = data.draw(shapes(max_dims=4), label="target")
    drop = data.draw(st.integers(0, len(target)))
    src = tuple(1 if data.draw(st.booleans()) else s for s in target[drop:])
    x = data.draw(arrays("int64", src), label="x")
    expected = np.broadcast_to(x, target)
    lifted = (1,) * drop + src  # a rank change alone is a reshape; expand only where a 1 grows
    np.testing.assert_array_equal(run_both(lambda t: tc.broadcast_to(t, target), x, op="expand" if lifted != target else None), expected)
    np.testing.assert_array_equal(run_both(lambda t: t.expand(*target), x), expected)
    # -1 keeps that dimension (PyTorch's expand).
    keep = tuple(-1 if i >= drop and src[i - drop] == s and data.draw(st.booleans()) else s for i, s in enumerate(target))
    np.testing.assert_array_equal(run_both(lambda t: t.expand(keep), x), expected)


@FAST
@given(data=st.data())
def test_squeeze_unsqueeze_flatten(data: Any) -> None:
    x = data.draw(arrays("float32", data.draw(shapes(max_side=2))), label="x")
    np.testing.assert_array_equal(run_both(lambda t: t.squeeze(), x), np.squeeze(x))
    if x.ndim:
        d = data.draw(axis_for(x.ndim))
        # PyTorch semantics: squeezing a dimension that is not 1 leaves it.
        expected = np.squeeze(x, d) if x.shape[d] == 1 else x
        np.testing.assert_array_equal(run_both(lambda t: tc.squeeze(t, d), x), expected)
    u = data.draw(st.integers(-x.ndim - 1, x.ndim))
    np.testing.assert_array_equal(run_both(lambda t: t.unsqueeze(u), x), np.expand_dims(x, u))
    np.testing.assert_array_equal(run_both(lambda t: t.flatten(), x), x.reshape(-1))
    if x.ndim:
        a = data.draw(st.integers(0, x.ndim - 1))
        b = data.draw(st.integers(a, x.ndim - 1))
        sa, sb = a - x.ndim if data.draw(st.booleans()) else a, b - x.ndim if data.draw(st.booleans()) else b
        expected = x.reshape(x.shape[:a] + (math.prod(x.shape[a:b + 1]),) + x.shape[b + 1:])
        np.testing.assert_array_equal(run_both(lambda t: tc.flatten(t, sa, sb), x), expected)


@covers("concat")
@FAST
@given(data=st.data())
def test_concat_and_stack(data: Any) -> None:
    base = data.draw(shapes(min_dims=1, max_dims=3), label="base")
    axis = data.draw(axis_for(len(base)), label="axis")
    n = data.draw(st.integers(1, 4), label="n")
    dts = [data.draw(dtypes(NUMERIC_DTYPES)) for _ in range(n)]
    xs = []
    for dt in dts:
        s = list(base)
        s[axis] = data.draw(st.integers(0, 3))
        xs.append(data.draw(arrays(dt, tuple(s))))
    out_dt = dts[0]
    for d in dts[1:]:
        out_dt = tc.promote(tc.ir.dtypes.dtype(out_dt), tc.ir.dtypes.dtype(d)).name
    got = run_both(lambda *ts: tc.concat(list(ts), axis), *xs, op="concat" if n > 1 else None)
    expected = np.concatenate([x.astype(np_dtype(out_dt)) for x in xs], axis=axis)
    assert got.dtype == np_dtype(out_dt)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(tc.cat([tc.tensor(x) for x in xs], dim=axis).numpy(), expected)
    same = [data.draw(arrays("float64", base)) for _ in range(n)]
    sax = data.draw(st.integers(-len(base) - 1, len(base)), label="stack_axis")
    np.testing.assert_array_equal(run_both(lambda *ts: tc.stack(ts, sax), *same), np.stack(same, sax))
    np.testing.assert_array_equal(tc.stack([tc.tensor(s) for s in same], dim=sax).numpy(), np.stack(same, sax))


@FAST
@given(data=st.data())
def test_split_and_chunk(data: Any) -> None:
    x, axis = data.draw(array_and_axis("float32", max_dims=3), label="x,axis")
    n = x.shape[axis]
    size = data.draw(st.integers(1, max(1, n + 1)), label="size")
    got = run_both(lambda t: tc.split(t, size, axis), x)
    # Like torch.split: pieces of `size`, the last one shorter; an empty axis gives one empty piece.
    for g, e in zip(got, np.split(x, list(range(size, n, size)), axis=axis), strict=True):
        np.testing.assert_array_equal(g, e)
    sections = data.draw(st.lists(st.integers(0, n), min_size=1, max_size=4).filter(lambda s: sum(s) <= n))
    sections = sections + [n - sum(sections)]
    got = run_both(lambda t: tc.split(t, sections, axis), x)
    for g, e in zip(got, np.split(x, np.cumsum(sections)[:-1], axis=axis), strict=True):
        np.testing.assert_array_equal(g, e)
    chunks = data.draw(st.integers(1, 4), label="chunks")
    step = -(-n // chunks) if n else 1
    got = run_both(lambda t: tc.chunk(t, chunks, axis), x)
    for g, e in zip(got, np.split(x, list(range(step, n, step)), axis=axis), strict=True):
        np.testing.assert_array_equal(g, e)


def test_split_sizes_must_add_up() -> None:
    with pytest.raises(tc.ShapeError, match="split"):
        tc.split(tc.zeros(5), [2, 2])


@covers("pad")
@FAST
@given(data=st.data())
def test_pad(data: Any) -> None:
    dt = data.draw(dtypes(NUMERIC_DTYPES), label="dtype")
    x = data.draw(arrays(dt, data.draw(shapes(max_dims=3))), label="x")
    widths = []
    for n in x.shape:
        lo = data.draw(st.integers(-n, 3))
        hi = data.draw(st.integers(-(n + min(lo, 0)), 3))  # never crop more than the axis holds
        widths.append((lo, hi))
    value = data.draw(st.sampled_from([0.0, 7.0, -1.0]))
    got = run_both(lambda t: tc.pad(t, widths, value), x, op="pad" if any(a > 0 or b > 0 for a, b in widths) else None)
    cropped = x[tuple(slice(max(0, -a), n - max(0, -b)) for n, (a, b) in zip(x.shape, widths))]
    expected = np.pad(cropped, [(max(0, a), max(0, b)) for a, b in widths], constant_values=value) if x.ndim else x
    np.testing.assert_array_equal(got, expected.astype(x.dtype))
    assert got.dtype == x.dtype


@FAST
@given(data=st.data())
def test_flip(data: Any) -> None:
    x = data.draw(arrays("int32", data.draw(shapes(min_dims=1))), label="x")
    dims = data.draw(axes_for(x.ndim).filter(lambda a: a is not None), label="dims")
    np.testing.assert_array_equal(run_both(lambda t: tc.flip(t, dims), x), np.flip(x, dims))
    np.testing.assert_array_equal(tc.tensor(x).flip(dims).numpy(), np.flip(x, dims))


# ----------------------------------------------------------------------------- indexing


@st.composite
def basic_index(draw: Any, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """A numpy basic index: ints (maybe negative), slices (any step, out-of-range bounds), None, one Ellipsis."""
    ndim = len(shape)
    m = draw(st.integers(0, ndim))  # indexed axes; the rest are implicit
    use_ellipsis = draw(st.booleans())
    p = draw(st.integers(0, m)) if use_ellipsis else m
    axes = list(range(p)) + list(range(ndim - (m - p), ndim))
    items: list[Any] = []
    for ax in axes:
        n = shape[ax]
        kind = draw(st.sampled_from(["int", "slice", "slice", "full"]) if n else st.sampled_from(["slice", "full"]))
        if kind == "int":
            items.append(draw(st.integers(-n, n - 1)))
        elif kind == "full":
            items.append(slice(None))
        else:
            bound = st.one_of(st.none(), st.integers(-n - 2, n + 2))
            step = draw(st.one_of(st.none(), st.integers(-3, 3).filter(bool)))
            items.append(slice(draw(bound), draw(bound), step))
    if use_ellipsis:
        items.insert(p, Ellipsis)
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), None)
    return tuple(items)


@covers("slice")
@FAST
@given(data=st.data())
def test_getitem_basic(data: Any) -> None:
    x = data.draw(arrays("float32", data.draw(shapes(max_dims=4))), label="x")
    key = data.draw(basic_index(x.shape), label="key")
    expected = x[key]
    got = run_both(lambda t: t[key], x)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("key", [
    (1,), (-1,), (slice(None, None, -1),), (slice(3, 0, -2),), (Ellipsis, slice(None, None, -2)),
    (None, 0, Ellipsis, None), (Ellipsis, -1), (slice(1, None), None, slice(None, None, 3)), (0, -1, -2),
])
def test_getitem_explicit(key: Any) -> None:
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(run_both(lambda t: t[key], x), x[key])


@pytest.mark.parametrize("key", [
    np.array([2, 0, 2]), np.array([[1, 0], [1, 1]]), (slice(None), np.array([2, 0, 2])),
    (Ellipsis, np.array([3, 3, 0])), (slice(None, None, -1), slice(1, None), np.array([3, 0])),
    (0, np.array([2, 1])), (None, slice(None), np.array([0, 0])), [1, 0],
])
def test_getitem_integer_array(key: Any) -> None:
    x = np.arange(3 * 3 * 4, dtype=np.float64).reshape(3, 3, 4)
    got = run_both(lambda t: t[key], x, op="gather")
    np.testing.assert_array_equal(got, x[np.array(key) if isinstance(key, list) else key])
    # The index may be a tensor, and in jit a traced tensor.
    if isinstance(key, np.ndarray):
        np.testing.assert_array_equal(tc.jit(lambda t, i: t[i])(x, key), x[key])


def test_getitem_errors() -> None:
    t = tc.tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(tc.ShapeError, match="getitem.*index 2 is out of range for axis 0 of size 2"):
        t[2]
    with pytest.raises(tc.ShapeError, match="too many indices"):
        t[0, 0, 0]
    with pytest.raises(tc.TensorcError, match="boolean"):
        t[np.array([True, False])]
    with pytest.raises(tc.DTypeError, match="integers"):
        t[np.array([0.5])]
    with pytest.raises(TypeError, match="immutable"):
        t[0] = 1.0


# ----------------------------------------------------------------------------- matmul


@covers("matmul")
@FAST
@given(data=st.data())
def test_matmul(data: Any) -> None:
    dt = data.draw(dtypes(NUMERIC_DTYPES + ("float16",)), label="dtype")
    m, k, n = (data.draw(st.integers(0, 4)) for _ in range(3))
    (ba, bb), _ = data.draw(broadcastable_shapes(2, max_dims=2, max_side=3), label="batch")
    a_vec, b_vec = data.draw(st.booleans()), data.draw(st.booleans())
    sa = (k,) if a_vec else ba + (m, k)
    sb = (k,) if b_vec else bb + (k, n)
    a = data.draw(arrays(dt, sa, min_value=-4, max_value=4), label="a")
    b = data.draw(arrays(dt, sb, min_value=-4, max_value=4), label="b")
    got = run_both(lambda x, y: x @ y, a, b, op="matmul")
    expected = np.matmul(f64(a), f64(b))
    assert got.shape == expected.shape and got.dtype == a.dtype
    assert_close(got, expected.astype(a.dtype) if dt in INT_DTYPES else expected, dt, scale=max(1, k))
    assert_close(tc.matmul(tc.tensor(a), tc.tensor(b)), got, dt)


def test_matmul_promotes_and_rejects_scalars() -> None:
    a, b = np.ones((2, 3), np.int32), np.ones((3,), np.float32)
    got = run_both(tc.matmul, a, b)
    assert got.dtype == np.float32 and got.tolist() == [3.0, 3.0]
    with pytest.raises(tc.ShapeError, match="scalars"):
        tc.matmul(tc.tensor(2.0), tc.tensor([1.0]))
    assert (np.ones((2, 2), np.float32) @ tc.tensor(np.eye(2, dtype=np.float32))).tolist() == [[1, 1], [1, 1]]


# ----------------------------------------------------------------------------- gather / scatter_add


@covers("gather")
@FAST
@given(data=st.data())
def test_gather(data: Any) -> None:
    dt = data.draw(dtypes(ALL_DTYPES), label="dtype")
    x = data.draw(arrays(dt, data.draw(nonempty_shapes(min_dims=1, max_dims=3))), label="x")
    axis = data.draw(axis_for(x.ndim), label="axis")
    n = x.shape[axis]
    idx_dt = data.draw(dtypes(ALL_INT_DTYPES), label="idx_dtype")
    # Small index range, so indices repeat.
    idx = data.draw(arrays(idx_dt, data.draw(shapes(max_dims=2)), elements_strategy=st.integers(0, n - 1)), label="idx")
    got = run_both(lambda t, i: tc.gather(t, i, axis), x, idx, op="gather")
    np.testing.assert_array_equal(got, np.take(x, idx, axis=axis))
    np.testing.assert_array_equal(tc.take(tc.tensor(x), tc.tensor(idx), axis).numpy(), np.take(x, idx, axis=axis))


def _scatter_add_oracle(x: np.ndarray, idx: np.ndarray, upd: np.ndarray, axis: int) -> np.ndarray:
    out = x.astype(np.float64 if x.dtype.kind == "f" else x.dtype).copy()
    axis %= x.ndim
    for pos in np.ndindex(*idx.shape):
        target = int(idx[pos])
        for pre in np.ndindex(*x.shape[:axis]):
            for post in np.ndindex(*x.shape[axis + 1:]):
                out[pre + (target,) + post] += upd[pre + pos + post]
    return out


@covers("scatter_add")
@FAST
@given(data=st.data())
def test_scatter_add(data: Any) -> None:
    dt = data.draw(dtypes(NUMERIC_DTYPES), label="dtype")
    x = data.draw(arrays(dt, data.draw(nonempty_shapes(min_dims=1, max_dims=3, max_side=4))), label="x")
    axis = data.draw(axis_for(x.ndim), label="axis")
    ax = axis % x.ndim
    idx = data.draw(arrays("int64", data.draw(shapes(max_dims=2, max_side=4)),
                           elements_strategy=st.integers(0, x.shape[ax] - 1)), label="idx")
    upd = data.draw(arrays(dt, x.shape[:ax] + idx.shape + x.shape[ax + 1:]), label="updates")
    got = run_both(lambda t, i, u: tc.scatter_add(t, i, u, axis), x, idx, upd, op="scatter_add")
    assert_close(got, _scatter_add_oracle(x, idx, upd, axis), dt, scale=max(1, idx.size))


def test_scatter_add_accumulates_repeated_indices() -> None:
    x = np.zeros((3, 2), np.float32)
    idx = np.array([2, 0, 2, 2])
    upd = np.arange(8, dtype=np.float32).reshape(4, 2)
    got = run_both(lambda t, i, u: tc.scatter_add(t, i, u, 0), x, idx, upd)
    np.testing.assert_array_equal(got, [[2, 3], [0, 0], [0 + 4 + 6, 1 + 5 + 7]])
    with pytest.raises(tc.ShapeError, match="updates shape"):
        tc.scatter_add(tc.tensor(x), tc.tensor(idx), tc.tensor(np.zeros((3, 2), np.float32)), 0)


# ----------------------------------------------------------------------------- sources


@covers("param")
def test_param_is_a_graph_input() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    f = tc.jit(lambda a, b: (b, a))
    lowered = f.lower(x, np.int32(4))
    assert [n.op for n in lowered.graph.inputs] == ["param", "param"]
    assert [n.type_str for n in lowered.graph.inputs] == ["f32[2,3]", "i32[]"]
    b, a = f(x, np.int32(4))
    np.testing.assert_array_equal(a, x)
    assert b.shape == () and b == 4 and b.dtype == np.int32


@covers("const")
@FAST
@given(data=st.data())
def test_const_captured_tensor(data: Any) -> None:
    dt = data.draw(dtypes(NUMERIC_DTYPES), label="dtype")
    c = data.draw(arrays(dt, data.draw(shapes(max_dims=2))), label="c")
    captured = tc.tensor(c)
    f = tc.jit(lambda: captured * 1)
    assert "const" in op_names(f.lower().graph)
    np.testing.assert_array_equal(f(), c)
    # A Python scalar becomes a const node, too.
    g = tc.jit(lambda a: a + 3)
    consts = [n for n in g.lower(c).graph.nodes if n.op == "const"]
    assert [n.attrs["value"].array.item() for n in consts] == [3]


@covers("iota")
@FAST
@given(data=st.data())
def test_iota(data: Any) -> None:
    shape = data.draw(shapes(min_dims=1), label="shape")
    axis = data.draw(axis_for(len(shape)), label="axis")
    dt = data.draw(dtypes(ALL_INT_DTYPES + FLOAT_DTYPES), label="dtype")
    got = run_both(lambda: tc.iota(shape, axis, dt), op="iota")
    expected = np.indices(shape)[axis % len(shape)] if shape else np.zeros(())
    assert got.dtype == np_dtype(dt)
    np.testing.assert_array_equal(got, expected.astype(np_dtype(dt)))


@FAST
@given(start=st.integers(-10, 10), stop=st.integers(-10, 10), step=st.integers(-4, 4).filter(bool))
@example(start=5, stop=None, step=1)
def test_arange_ints(start: int, stop: int | None, step: int) -> None:
    expected = np.arange(start, stop, step) if stop is not None else np.arange(start)
    args = (start, stop, step) if stop is not None else (start,)
    got = run_both(lambda: tc.arange(*args))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("args,dtype", [((0.0, 1.0, 0.1), None), ((2.5,), None), ((-1, 1, 0.25), None), ((5,), "float64"),
                                        ((1, 2, 0.5), "float64"), ((10, 0, -3), "int32")])
def test_arange_floats_and_dtypes(args: tuple[Any, ...], dtype: str | None) -> None:
    got = run_both(lambda: tc.arange(*args, dtype=dtype))
    expected = np.arange(*args)
    out_dt = dtype or "float32"
    assert got.dtype == np_dtype(out_dt)
    assert_close(got, expected.astype(np_dtype(out_dt)) if out_dt.startswith("int") else expected, out_dt)


def test_arange_rejects_zero_step() -> None:
    with pytest.raises(tc.TensorcError, match="step"):
        tc.arange(0, 5, 0)


@FAST
@given(shape=shapes(max_dims=3), fill=st.one_of(st.integers(-5, 5), st.floats(-5, 5, width=32), st.booleans()),
       dt=st.one_of(st.none(), dtypes(ALL_DTYPES)))
def test_full_zeros_ones(shape: tuple[int, ...], fill: Any, dt: str | None) -> None:
    assume(not (dt == "uint32" and fill < 0))
    got = run_both(lambda: tc.full(shape, fill, dt))
    expected_dt = np_dtype(dt) if dt else np.dtype({bool: np.bool_, int: np.int64, float: np.float32}[type(fill)])
    assert got.dtype == expected_dt and got.shape == shape
    np.testing.assert_array_equal(got, np.full(shape, fill, dtype=np.float64).astype(expected_dt) if dt else np.full(shape, fill, expected_dt))
    np.testing.assert_array_equal(run_both(lambda: tc.zeros(*shape)), np.zeros(shape, np.float32))
    np.testing.assert_array_equal(run_both(lambda: tc.ones(shape, dtype="int32")), np.ones(shape, np.int32))
    x = tc.tensor(np.full(shape, 3, np.int32))
    assert tc.zeros_like(x).dtype == tc.int32 and tc.zeros_like(x).numpy().sum() == 0
    assert tc.ones_like(x, "float64").dtype == tc.float64 and tc.ones_like(x).shape == shape
    np.testing.assert_array_equal(tc.full_like(x, 2).numpy(), np.full(shape, 2, np.int32))


@pytest.mark.parametrize("n,m", [(0, None), (1, None), (4, None), (3, 5), (5, 2)])
def test_eye(n: int, m: int | None) -> None:
    np.testing.assert_array_equal(run_both(lambda: tc.eye(n, m)), np.eye(n, m, dtype=np.float32))
    assert tc.eye(n, m, dtype="int64").dtype == tc.int64


@FAST
@given(data=st.data())
def test_tril_triu(data: Any) -> None:
    dt = data.draw(dtypes(ALL_DTYPES), label="dtype")
    x = data.draw(arrays(dt, data.draw(shapes(min_dims=2, max_dims=4))), label="x")
    k = data.draw(st.integers(-4, 4), label="diagonal")
    for got, expected in ((run_both(lambda t: tc.tril(t, k), x), np.tril(x, k)), (run_both(lambda t: tc.triu(t, k), x), np.triu(x, k))):
        assert got.dtype == x.dtype  # a bool mask stays bool
        np.testing.assert_array_equal(got, expected)


@FAST
@given(data=st.data())
def test_one_hot(data: Any) -> None:
    c = data.draw(st.integers(1, 6), label="classes")
    idx = data.draw(arrays(data.draw(dtypes(INT_DTYPES)), data.draw(shapes(max_dims=3)), elements_strategy=st.integers(0, c - 1)))
    dt = data.draw(dtypes(("float32", "int64", "bool")))
    got = run_both(lambda i: tc.one_hot(i, c, dt), idx)
    expected = (idx[..., None] == np.arange(c)).astype(np_dtype(dt))
    assert got.dtype == np_dtype(dt)
    np.testing.assert_array_equal(got, expected)


# ----------------------------------------------------------------------------- random bits


def _threefry_py(k0: int, k1: int, x0: int, x1: int) -> tuple[int, int]:
    """Threefry-2x32, 20 rounds, in plain Python integers (an independent oracle)."""
    mask = 0xFFFFFFFF
    rot = ((13, 15, 26, 6), (17, 29, 16, 24))
    ks = (k0, k1, k0 ^ k1 ^ 0x1BD11BDA)
    x0, x1 = (x0 + ks[0]) & mask, (x1 + ks[1]) & mask
    for i in range(20):
        r = rot[(i // 4) % 2][i % 4]
        x0 = (x0 + x1) & mask
        x1 = ((x1 << r) | (x1 >> (32 - r))) & mask
        x1 ^= x0
        if i % 4 == 3:
            j = i // 4 + 1
            x0 = (x0 + ks[j % 3]) & mask
            x1 = (x1 + ks[(j + 1) % 3] + j) & mask
    return x0, x1


@covers("random_bits")
@FAST
@given(seed=st.integers(0, 2**64 - 1), shape=shapes(max_dims=3, max_side=4))
def test_random_bits(seed: int, shape: tuple[int, ...]) -> None:
    key = tc.random.key(seed).numpy()
    got = run_both(lambda k: tc.random.bits(k, shape), key, op="random_bits")
    assert got.dtype == np.uint32 and got.shape == shape
    # Documented layout: element i < half uses counter (i, i + half) and takes the first output word;
    # the second half takes the second word.
    n = math.prod(shape)
    half = (n + 1) // 2
    words = [_threefry_py(int(key[0]), int(key[1]), i, i + half) for i in range(half)]
    expected = ([w[0] for w in words] + [w[1] for w in words])[:n]
    np.testing.assert_array_equal(got.reshape(-1), np.array(expected, np.uint32))


# ----------------------------------------------------------------------------- scan / tuple_get


@covers("scan", "tuple_get")
@QUICK
@given(data=st.data())
def test_scan_cumulative(data: Any) -> None:
    dt = data.draw(dtypes(FLOAT_DTYPES + INT_DTYPES), label="dtype")
    xs = data.draw(arrays(dt, data.draw(shapes(min_dims=1, max_dims=3, max_side=6)), min_value=-3, max_value=3), label="xs")
    reverse = data.draw(st.booleans(), label="reverse")

    def cumsum(x: tc.Tensor) -> Any:
        def step(c: tc.Tensor, v: tc.Tensor) -> Any:
            s = c + v
            return s, (s, c * 2)

        return tc.scan(step, tc.zeros(x.shape[1:], dtype=x.dtype), x, reverse=reverse)

    graph_ops = op_names(tc.jit(cumsum).lower(xs).graph)
    assert graph_ops.count("scan") == 1 and graph_ops.count("tuple_get") == 3
    total, (running, doubled_prev) = run_both(cumsum, xs)
    order = xs[::-1] if reverse else xs
    run = np.cumsum(order, axis=0, dtype=xs.dtype)
    prev = np.concatenate([np.zeros_like(run[:1]), run[:-1]])
    if reverse:
        run, prev = run[::-1], prev[::-1]
    assert_close(total, xs.sum(axis=0, dtype=xs.dtype), dt, scale=xs.shape[0])
    assert_close(running, run, dt, scale=xs.shape[0])
    assert_close(doubled_prev, prev * 2, dt, scale=xs.shape[0])


# ----------------------------------------------------------------------------- fused ops
# Checked against numpy written here (forward) and float64 central differences of that
# numpy (backward), independently of the ops' references and their DSL decompositions.


def _ln_oracle(attrs: dict[str, Any], x: np.ndarray, *affine: np.ndarray) -> tuple[np.ndarray, ...]:
    n = attrs["n_axes"]
    axes = tuple(range(x.ndim - n, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + attrs["eps"])
    y = (x - mean) * rstd
    if attrs["has_weight"]:
        y = y * affine[0]
    if attrs["has_bias"]:
        y = y + affine[-1]
    lead = x.shape[:x.ndim - n]
    return y, mean.reshape(lead), rstd.reshape(lead)


def _xent_oracle(attrs: dict[str, Any], logits: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, ...]:
    ignore = attrs["ignore_index"]
    valid = target != ignore if ignore is not None else np.ones(target.shape, bool)
    m = logits.max(-1, keepdims=True)
    lse = (np.log(np.exp(logits - m).sum(-1, keepdims=True)) + m)[..., 0]
    picked = np.take_along_axis(logits, np.where(valid, target, 0)[..., None], -1)[..., 0]
    rows = np.where(valid, lse - picked, 0.0)
    loss = {"none": rows, "sum": rows.sum(), "mean": rows.sum() / max(valid.sum(), 1)}[attrs["reduction"]]
    return np.asarray(loss), lse


def _attn_oracle(attrs: dict[str, Any], q: np.ndarray, k: np.ndarray, v: np.ndarray, *mask: np.ndarray) -> tuple[np.ndarray, ...]:
    s = q @ np.swapaxes(k, -1, -2) * attrs["scale"]
    allowed = np.ones(s.shape, bool)
    if attrs["causal"]:
        allowed &= np.tril(np.ones(s.shape[-2:], bool))
    if attrs["mask_kind"] == "bool":
        allowed &= mask[0]
    elif attrs["mask_kind"] == "add":
        s = s + mask[0]
    any_allowed = allowed.any(-1, keepdims=True)
    m = np.where(any_allowed, np.where(allowed, s, -np.inf).max(-1, keepdims=True), 0.0)
    e = np.where(allowed, np.exp(np.where(allowed, s, 0.0) - m), 0.0)
    z = np.where(any_allowed, e.sum(-1, keepdims=True), 1.0)
    lse = np.where(any_allowed, np.log(z) + m, -np.inf)[..., 0]
    return (e / z) @ v, lse


def _numeric_vjp(f: Callable[..., np.ndarray], args: list[np.ndarray], wrt: list[int], cot: np.ndarray,
                 h: float = 1e-6) -> list[np.ndarray]:
    """d sum(f(args) * cot) / d args[i] for i in wrt, by float64 central differences."""
    grads = []
    for i in wrt:
        x = args[i].astype(np.float64).copy()
        g = np.zeros_like(x)
        for idx in np.ndindex(*x.shape):
            x0 = x[idx]
            sides = []
            for delta in (h, -h):
                x[idx] = x0 + delta
                sides.append(np.sum(f(*args[:i], x, *args[i + 1:]) * cot))
            x[idx] = x0
            g[idx] = (sides[0] - sides[1]) / (2 * h)
        grads.append(g)
    return grads


def _fused_both(op: str, attrs: dict[str, Any], *arrays_: np.ndarray) -> tuple[np.ndarray, ...]:
    from tensorc.frontend.tracing import apply

    out = run_both(lambda *ts: apply(op, list(ts), attrs), *arrays_, op=op)
    return out if isinstance(out, tuple) else (out,)


def _check_fused(got: tuple[np.ndarray, ...], expected: Any, dt: str, backward: bool = False) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        if backward:  # against central differences: their error, not the dtype's, dominates in float64
            rtol, atol = (1e-5, 1e-6) if dt == "float64" else (2e-4, 2e-5)
            np.testing.assert_allclose(f64(g), e, rtol=rtol, atol=atol)
        else:
            assert_close(g, e, g.dtype, scale=10)


_STATS = {"float64": np.float64, "float32": np.float32}
_rng = np.random.default_rng(1234)


@covers("fused_layernorm", "fused_layernorm_bwd")
@pytest.mark.parametrize("dt", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,n_axes,has_weight,has_bias", [((3, 5), 1, True, True), ((2, 3, 4), 2, True, False),
                                                             ((4, 6), 1, False, False), ((2, 1, 3), 1, False, True)])
def test_fused_layernorm(dt: str, shape: tuple[int, ...], n_axes: int, has_weight: bool, has_bias: bool) -> None:
    attrs = dict(n_axes=n_axes, eps=1e-5, has_weight=has_weight, has_bias=has_bias)
    x = _rng.standard_normal(shape).astype(dt)
    norm = shape[len(shape) - n_axes:]
    affine = [_rng.standard_normal(norm).astype(dt) for flag in (has_weight, has_bias) if flag]
    args64 = [f64(a) for a in [x, *affine]]
    y, mean, rstd = _ln_oracle(attrs, *args64)
    got = _fused_both("fused_layernorm", attrs, x, *affine)
    assert [g.dtype for g in got] == [np.dtype(dt), np.dtype(_STATS[dt]), np.dtype(_STATS[dt])]
    _check_fused(got, (y, mean, rstd), dt)
    dy = _rng.standard_normal(shape).astype(dt)
    weight = affine[:1] if has_weight else []
    got = _fused_both("fused_layernorm_bwd", attrs, dy, x, mean.astype(_STATS[dt]), rstd.astype(_STATS[dt]), *weight)
    expected = _numeric_vjp(lambda *a: _ln_oracle(attrs, *a)[0], args64, list(range(len(args64))), f64(dy))
    _check_fused(got, expected, dt, backward=True)


@covers("fused_softmax_xent", "fused_softmax_xent_bwd")
@pytest.mark.parametrize("dt", FLOAT_DTYPES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("ignore_index", [-100, None])
@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 5)])
def test_fused_softmax_xent(dt: str, reduction: str, ignore_index: int | None, shape: tuple[int, ...]) -> None:
    attrs = dict(ignore_index=ignore_index, reduction=reduction)
    logits = (_rng.standard_normal(shape) * 3).astype(dt)
    target = _rng.integers(0, shape[-1], shape[:-1])
    if ignore_index is not None:
        target.flat[1] = ignore_index
    loss, lse = _xent_oracle(attrs, f64(logits), target)
    got = _fused_both("fused_softmax_xent", attrs, logits, target)
    assert got[0].dtype == np.dtype(dt) and got[1].dtype == np.dtype(_STATS[dt])
    _check_fused(got, (loss, lse), dt)
    g = _rng.standard_normal(np.shape(loss)).astype(dt)
    got = _fused_both("fused_softmax_xent_bwd", attrs, g, logits, target, lse.astype(_STATS[dt]))
    expected = _numeric_vjp(lambda x: _xent_oracle(attrs, x, target)[0], [f64(logits)], [0], f64(g))
    _check_fused(got, expected, dt, backward=True)
    if ignore_index is not None:
        assert not np.any(got[0].reshape(-1, shape[-1])[1])


@covers("fused_attention", "fused_attention_bwd")
@pytest.mark.parametrize("dt", FLOAT_DTYPES)
@pytest.mark.parametrize("kind", ["none", "causal", "bool", "add"])
@pytest.mark.parametrize("batch", [(2,), (1, 2)])
def test_fused_attention(dt: str, kind: str, batch: tuple[int, ...]) -> None:
    L, S, E, Ev = 4, 5, 3, 2
    q, k, v = (_rng.standard_normal(batch + s).astype(dt) for s in ((L, E), (S, E), (S, Ev)))
    mask: list[np.ndarray] = []
    if kind == "bool":
        m = _rng.random(batch + (L, S)) > 0.4
        m[..., 1, :] = False  # fully masked rows: zeros, not NaN
        mask = [m]
    elif kind == "add":
        mask = [_rng.standard_normal(batch + (L, S)).astype(dt)]
    attrs = dict(scale=0.7, causal=kind == "causal", mask_kind=kind if kind in ("bool", "add") else "none")
    args64 = [f64(a) if a.dtype != bool else a for a in [q, k, v, *mask]]
    o, lse = _attn_oracle(attrs, *args64)
    got = _fused_both("fused_attention", attrs, q, k, v, *mask)
    _check_fused(got, (o, lse), dt)
    if kind == "bool":
        assert np.all(got[0][..., 1, :] == 0) and np.all(got[1][..., 1] == -np.inf)
    do = _rng.standard_normal(o.shape).astype(dt)
    got = _fused_both("fused_attention_bwd", attrs, do, q, k, v, o.astype(dt), lse.astype(_STATS[dt]), *mask)
    wrt = [0, 1, 2, 3] if kind == "add" else [0, 1, 2]
    expected = _numeric_vjp(lambda *a: _attn_oracle(attrs, *a)[0], args64, wrt, f64(do))
    _check_fused(got, expected, dt, backward=True)
