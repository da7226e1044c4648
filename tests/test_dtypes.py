"""The promotion table of ``tensorc/ir/dtypes.py``: tensor-tensor and weak Python scalars."""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest

import tensorc as tc
from tensorc.ir import dtypes as D

NAMES = ["bool", "i32", "i64", "u32", "f16", "bf16", "f32", "f64"]

# Written out from the rules in the module docstring: bool < integers < floats; two integers
# give the wider one, uint32 with a signed one gives int64; two floats the wider one,
# float16 with bfloat16 gives float32.
TABLE = """
        bool  i32   i64   u32   f16   bf16  f32   f64
bool    bool  i32   i64   u32   f16   bf16  f32   f64
i32     i32   i32   i64   i64   f16   bf16  f32   f64
i64     i64   i64   i64   i64   f16   bf16  f32   f64
u32     u32   i64   i64   u32   f16   bf16  f32   f64
f16     f16   f16   f16   f16   f16   f32   f32   f64
bf16    bf16  bf16  bf16  bf16  f32   bf16  f32   f64
f32     f32   f32   f32   f32   f32   f32   f32   f64
f64     f64   f64   f64   f64   f64   f64   f64   f64
"""


def _table() -> dict[tuple[str, str], str]:
    rows = [line.split() for line in TABLE.strip().splitlines()]
    header = rows[0]
    assert header == NAMES
    return {(r[0], c): r[1 + j] for r in rows[1:] for j, c in enumerate(header)}


PROMOTE = _table()
PAIRS = sorted(PROMOTE)


def dt(short: str) -> tc.DType:
    return D.dtype(short)


def sample(short: str, value: float = 1) -> np.ndarray:
    d = dt(short)
    return np.full((2,), value, d.np)


@pytest.mark.parametrize("a,b", PAIRS)
def test_promote_table(a: str, b: str) -> None:
    assert tc.promote(dt(a), dt(b)) == dt(PROMOTE[a, b])


def test_promote_is_commutative_and_associative() -> None:
    all_dt = [dt(n) for n in NAMES]
    for a, b in itertools.product(all_dt, repeat=2):
        assert tc.promote(a, b) == tc.promote(b, a)
    for a, b, c in itertools.product(all_dt, repeat=3):
        assert tc.promote(tc.promote(a, b), c) == tc.promote(a, tc.promote(b, c)), (a, b, c)


@pytest.mark.parametrize("a,b", PAIRS)
def test_binary_ops_promote_tensors(a: str, b: str) -> None:
    want = dt(PROMOTE[a, b])
    x, y = tc.tensor(sample(a)), tc.tensor(sample(b, 0))
    # `where` takes any dtype, bool included; its branches are promoted together.
    assert tc.where(tc.tensor([True, False]), x, y).dtype == want
    assert tc.jit(lambda c, p, q: tc.where(c, p, q))(np.array([True, False]), sample(a), sample(b)).dtype == want.np
    assert tc.concat([x, y]).dtype == want
    if want != tc.bool:
        got = x + y
        assert got.dtype == want and got.tolist() == [1, 1]
        assert tc.jit(lambda p, q: p + q)(sample(a), sample(b)).dtype == want.np
        assert (x == y).dtype == tc.bool
    else:
        with pytest.raises(tc.DTypeError, match="add"):
            x + y


# Python scalars are weak: the tensor's dtype wins when its category is as high or higher.
WEAK = {
    # tensor dtype: (with a Python bool, with a Python int, with a Python float)
    "bool": ("bool", "i64", "f32"),
    "i32": ("i32", "i32", "f32"),
    "i64": ("i64", "i64", "f32"),
    "u32": ("u32", "u32", "f32"),
    "f16": ("f16", "f16", "f16"),
    "bf16": ("bf16", "bf16", "bf16"),
    "f32": ("f32", "f32", "f32"),
    "f64": ("f64", "f64", "f64"),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind,scalar", [(0, True), (1, 3), (2, 0.5)])
def test_weak_python_scalars(name: str, kind: int, scalar: object) -> None:
    want = dt(WEAK[name][kind])
    assert D.weak_scalar_dtype(scalar, dt(name)) == want
    t = tc.tensor(sample(name))
    cond = tc.tensor([True, False])
    assert tc.where(cond, t, scalar).dtype == want
    assert tc.where(cond, scalar, t).dtype == want
    assert tc.jit(lambda c, x: tc.where(c, x, scalar))(np.array([True, False]), sample(name)).dtype == want.np
    if want != tc.bool:
        assert (t + scalar).dtype == want and (scalar + t).dtype == want
        assert (t * scalar).dtype == want
        assert tc.jit(lambda x: x * scalar)(sample(name)).dtype == want.np


def test_weak_scalar_values_are_computed_in_the_tensor_dtype() -> None:
    h = tc.tensor(np.array([1000.0], np.float16))
    # 1000 * 70 = 70000 overflows float16 (max 65504): computed in float16, not float32.
    assert np.isinf((h * 70.0).numpy()).all()
    i = tc.tensor(np.array([7], np.int32))
    assert (i * 0.5).tolist() == [3.5] and (i * 0.5).dtype == tc.float32
    assert (i // 2).tolist() == [3] and (i // 2).dtype == tc.int32
    b = tc.tensor([True, False])
    assert (b * 3).tolist() == [3, 0] and (b * 3).dtype == tc.int64
    assert (b * 1.5).tolist() == [1.5, 0.0]


def test_scalars_alone_and_tensor_construction() -> None:
    assert tc.add(2, 3).dtype == tc.int64
    assert tc.add(2, 3.0).dtype == tc.float32
    assert tc.tensor(2.0).dtype == tc.float32 and tc.tensor(True).dtype == tc.bool
    assert tc.tensor([1, 2]).dtype == tc.int64 and tc.tensor([1.5]).dtype == tc.float32
    # numpy arrays keep their dtype
    for short in NAMES:
        assert tc.tensor(sample(short)).dtype == dt(short)
    assert tc.tensor([1, 2], "bf16").numpy().dtype == np.dtype(ml_dtypes.bfloat16)
    with pytest.raises(tc.DTypeError):
        tc.tensor(np.array([1 + 2j]))
    with pytest.raises(tc.DTypeError):
        tc.tensor(["a"])


def test_documented_result_dtypes_of_functions() -> None:
    i32 = tc.tensor(np.array([1, 2], np.int32))
    assert (i32 / i32).dtype == tc.float32  # true division of integers gives float32
    assert tc.sum(i32).dtype == tc.int64 and tc.sum(tc.tensor([True, True])).dtype == tc.int64
    assert tc.sum(tc.tensor(np.array([1], np.uint32))).dtype == tc.int64
    assert int(tc.sum(tc.tensor([True, True, False]))) == 2
    assert tc.sum(i32, dtype="float64").dtype == tc.float64
    assert tc.mean(i32).dtype == tc.float32 and float(tc.mean(i32)) == 1.5
    assert tc.sqrt(i32).dtype == tc.float32
    assert tc.argmax(tc.tensor(np.array([1.0, 3.0], np.float16))).dtype == tc.int64
    assert (i32 > 1).dtype == tc.bool
    h = tc.tensor(np.array([2.0], np.float16))
    assert (h @ tc.tensor(np.array([[3.0]], np.float64))).dtype == tc.float64


def test_dtype_conversion_and_names() -> None:
    assert D.dtype("f32") is tc.float32 and D.dtype("float32") is tc.float32
    assert D.dtype(np.int64) is tc.int64 and D.dtype(np.dtype("uint32")) is tc.uint32
    assert D.dtype(ml_dtypes.bfloat16) is tc.bfloat16
    assert D.dtype(float) is tc.float32 and D.dtype(int) is tc.int64 and D.dtype(bool) is tc.bool
    with pytest.raises(TypeError, match="no dtype"):
        D.dtype(np.complex64)
    with pytest.raises(TypeError, match="not a dtype"):
        D.dtype(object())
    assert [D.dtype(n).short for n in NAMES] == NAMES
    assert D.type_str((4, 8), tc.float32) == "f32[4,8]" and D.type_str((), tc.bfloat16) == "bf16[]"
    assert repr(tc.float16) == "tc.float16" and str(tc.float16) == "float16"
    assert tc.float64.is_float and tc.uint32.is_int and tc.bool.is_bool and not tc.int32.is_float
    assert {d.np for d in D.ALL_DTYPES} == {dt(n).np for n in NAMES}
