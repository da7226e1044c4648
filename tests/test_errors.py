"""User mistakes raise TensorcErrors that name the op, the operands' types and
the caller's file:line, in eager mode and inside tc.jit alike."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorc as tc
import tensorc.nn.functional as F

_SOURCE = Path(__file__).read_text().splitlines()


def line_of(marker: str) -> int:
    """The line of this file that ends with ``# <marker>``."""
    hits = [i + 1 for i, text in enumerate(_SOURCE) if text.rstrip().endswith(f"# <{marker}>")]
    assert len(hits) == 1, f"marker {marker!r} found {len(hits)} times"
    return hits[0]


def f32(*shape: int) -> np.ndarray:
    return np.ones(shape, np.float32)


# The user's functions: each op that fails is on a line with a marker.


def bad_matmul(a: Any, b: Any) -> Any:
    return a @ b  # <matmul>


def bad_broadcast(a: Any, b: Any) -> Any:
    return a + b  # <broadcast>


def bad_reshape(a: Any) -> Any:
    return a.reshape(5, 7)  # <reshape>


def bad_axis(a: Any) -> Any:
    return a.sum(axis=2)  # <axis>


def bad_transpose(a: Any) -> Any:
    return a.transpose(0, -3)  # <transpose>


def float_indices(a: Any, i: Any) -> Any:
    return tc.gather(a, i, 0)  # <gather-dtype>


def float_condition(c: Any, a: Any) -> Any:
    return tc.where(c, a, 0.0)  # <where>


def gather_at(a: Any, i: Any) -> Any:
    return tc.gather(a, i, 0)  # <gather-index>


def xent(logits: Any, target: Any) -> Any:
    return F.cross_entropy(logits, target)  # <xent>


def bool_matmul(a: Any, b: Any) -> Any:
    return a @ b  # <bool-matmul>


def helper_then_error(a: Any) -> Any:
    b = a * 2
    return tc.concat([a, b.reshape(-1)], 0)  # <concat>


# (name, user function, numpy arguments, error class, expected message; {loc} is "test_errors.py:<line>")
CASES: list[tuple[str, Callable[..., Any], list[np.ndarray], type[Exception], str]] = [
    ("matmul", bad_matmul, [f32(4, 8), f32(7, 16)], tc.ShapeError,
     "matmul at {loc}: f32[4,8] @ f32[7,16]: inner dims 8 != 7"),
    ("broadcast", bad_broadcast, [f32(4, 8), f32(3, 4)], tc.ShapeError,
     "add at {loc}: f32[4,8] + f32[3,4]: shapes (4, 8) and (3, 4) do not broadcast"),
    ("reshape", bad_reshape, [f32(4, 8)], tc.ShapeError,
     "reshape at {loc}: f32[4,8]: cannot reshape 32 elements (4, 8) to (5, 7)"),
    ("axis", bad_axis, [f32(4, 8)], tc.ShapeError,
     "sum at {loc}: f32[4,8]: axis 2 is out of range for a tensor of rank 2"),
    ("transpose", bad_transpose, [f32(4, 8)], tc.ShapeError,
     "transpose at {loc}: f32[4,8]: axis -3 is out of range for a tensor of rank 2"),
    ("gather-dtype", float_indices, [f32(4, 8), np.array([1.0, 2.0])], tc.DTypeError,
     "gather at {loc}: f32[4,8], f64[2]: gather indices must be integers, got float64"),
    ("where", float_condition, [f32(4, 8), f32(4, 8)], tc.DTypeError,
     "where at {loc}: f32[4,8]: condition must be a bool tensor"),
    ("gather-index", gather_at, [f32(4, 8), np.array([0, 7])], tc.ShapeError,
     "gather at {loc}: f32[4,8], i64[2]: index 7 out of range for axis 0 of size 4"),
    ("xent", xent, [f32(4, 8), np.array([1, 2, 3])], tc.ShapeError,
     "cross_entropy at {loc}: f32[4,8], i64[3]: target shape must equal input shape without its last (class) axis"),
    ("bool-matmul", bool_matmul, [np.ones((2, 2), bool), np.ones((2, 2), bool)], tc.DTypeError,
     "matmul at {loc}: bool[2,2] @ bool[2,2]: bool operands"),
    ("concat", helper_then_error, [f32(2, 3)], tc.ShapeError,
     "concat at {loc}: f32[2,3], f32[6]: concat along axis 0: shapes differ off that axis"),
]


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("name,fn,args,kind,message", CASES, ids=[c[0] for c in CASES])
def test_error_names_op_types_and_user_line(mode: str, name: str, fn: Callable[..., Any], args: list[np.ndarray],
                                            kind: type[Exception], message: str) -> None:
    expected = message.format(loc=f"test_errors.py:{line_of(name)}")
    with pytest.raises(kind) as info:
        if mode == "eager":
            fn(*[tc.tensor(a) for a in args])
        else:
            tc.jit(fn)(*args)
    assert isinstance(info.value, tc.TensorcError)
    assert str(info.value) == expected


def test_matmul_error_text_matches_the_documented_form() -> None:
    with pytest.raises(tc.ShapeError) as info:
        bad_matmul(tc.tensor(f32(4, 8)), tc.tensor(f32(7, 16)))
    assert f"ShapeError: {info.value}" == f"ShapeError: matmul at test_errors.py:{line_of('matmul')}: f32[4,8] @ f32[7,16]: inner dims 8 != 7"
    assert isinstance(info.value, ValueError)  # ShapeError is a ValueError, DTypeError a TypeError
    assert issubclass(tc.DTypeError, TypeError)


def test_runtime_index_error_depends_on_data_not_trace() -> None:
    f = tc.jit(gather_at)
    np.testing.assert_array_equal(f(f32(4, 8), np.array([0, 3])), f32(2, 8))  # compiled for i64[2]: fine
    with pytest.raises(tc.ShapeError, match=re.escape(f"gather at test_errors.py:{line_of('gather-index')}: ")):
        f(f32(4, 8), np.array([-1, 3]))  # same signature, bad data
    assert f.compile_count == 1


def scan_lookup(table: Any, ids: Any) -> Any:
    def step(total: Any, i: Any) -> Any:
        return total + tc.gather(table, i, 0), None  # <scan-gather>

    return tc.scan(step, tc.zeros(table.shape[1:]), ids)[0]


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_runtime_error_inside_a_scan_body_names_the_body_line(mode: str) -> None:
    table, ids = f32(5, 2), np.array([0, 4, 9, 1])
    with pytest.raises(tc.ShapeError) as info:
        if mode == "eager":
            scan_lookup(tc.tensor(table), tc.tensor(ids))
        else:
            tc.jit(scan_lookup)(table, ids)
    assert str(info.value).startswith(f"gather at test_errors.py:{line_of('scan-gather')}: f32[5,2], i64[]: index 9 out of range")


def test_integer_division_by_zero_names_the_line() -> None:
    def div(a: Any, b: Any) -> Any:
        return a // b  # <floordiv>

    for run in (lambda: div(tc.tensor([4, 2]), tc.tensor([2, 0])), lambda: tc.jit(div)(np.array([4, 2]), np.array([2, 0]))):
        with pytest.raises(tc.DTypeError) as info:
            run()
        assert str(info.value) == f"floordiv at test_errors.py:{line_of('floordiv')}: i64[2] // i64[2]: integer division by zero"


def test_errors_from_library_functions_point_at_the_caller() -> None:
    # F.layer_norm and F.embedding are tensorc code: the location is the line that called them.
    with pytest.raises(tc.ShapeError) as info:
        F.layer_norm(tc.tensor(f32(2, 3)), (4,))  # <layer_norm>
    assert f"layer_norm at test_errors.py:{line_of('layer_norm')}: f32[2,3]:" in str(info.value)
    with pytest.raises(tc.ShapeError) as info:
        tc.jit(lambda w, i: F.embedding(i, w))(f32(3, 2), np.array([3]))  # <embedding>
    assert str(info.value).startswith(f"gather at test_errors.py:{line_of('embedding')}: f32[3,2], i64[1]: index 3 out of range")
