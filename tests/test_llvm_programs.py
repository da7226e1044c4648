"""Random programs: the LLVM backend must agree with the reference backend.

Hypothesis draws small programs (a DAG of 1 to 8 steps over 1 to 3 inputs):
elementwise math with broadcasting, comparisons and ``where``, sum/max
reductions over random axes, transposes, reshapes, slices, softmax,
layernorm, matmuls, and float64 round trips, at odd sizes (1, primes,
non-multiples of the vector width) and, sometimes, big enough that the outer
loops run over two OpenMP threads. 200 programs in float32 and 40 in float64
run in CI. Each program is compiled for both backends and run on the same
inputs; results must agree to 1e-4 (float32, scaled by the largest magnitude:
sums and matmuls associate differently) or 1e-10 (float64).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("llvmlite")

import tensorc as tc  # noqa: E402
import tensorc.nn.functional as F  # noqa: E402

SIDES = (1, 2, 3, 5, 7, 8, 9, 17, 33)
RANDOM = settings(deadline=None, max_examples=200, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

UNARY: dict[str, Callable[[Any], Any]] = {
    "neg": lambda x: -x,
    "abs": tc.abs,
    "tanh": tc.tanh,
    "sigmoid": tc.sigmoid,
    "exp(tanh)": lambda x: tc.exp(tc.tanh(x)),
    "log1p(abs)": lambda x: tc.log(tc.abs(x) + 1.0),
    "sqrt(abs)": lambda x: tc.sqrt(tc.abs(x)),
    "relu": tc.relu,
    "gelu": F.gelu,
    "square": lambda x: x * x,
}
BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "safe_div": lambda a, b: a / (tc.abs(b) + 1.0),
    "maximum": tc.maximum,
    "minimum": tc.minimum,
    "where": lambda a, b: tc.where(a > b, a, b * 0.5),
}


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        return None


@st.composite
def programs(draw: Any, big: bool = False) -> tuple[list[tuple], list[tuple[int, ...]]]:
    """A program as (instructions, input shapes); each instruction appends one value."""
    rank = draw(st.integers(1, 3))
    base = tuple(draw(st.sampled_from(SIDES)) for _ in range(rank))
    if big:
        base = base[:-1] + (draw(st.sampled_from((1031, 4099))),) if rank > 1 else (70001,)
    n_inputs = draw(st.integers(1, 3))
    shapes = [base]
    for _ in range(n_inputs - 1):  # broadcast partners: dims set to 1 or leading dims dropped
        s = tuple(1 if draw(st.booleans()) else n for n in base)
        shapes.append(s[draw(st.integers(0, len(s) - 1)):] if draw(st.booleans()) else s)
    vals = list(shapes)
    prog: list[tuple] = []
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(vals) - 1))
        shape = vals[i]
        kind = draw(st.sampled_from(["unary", "binary", "binary", "reduce", "view", "softmax", "layernorm",
                                     "matmul", "roundtrip"]))
        if kind == "unary":
            prog.append(("unary", draw(st.sampled_from(sorted(UNARY))), i))
        elif kind == "binary":
            j = draw(st.integers(0, len(vals) - 1))
            out = _broadcast(shape, vals[j])
            if out is None:
                continue
            prog.append(("binary", draw(st.sampled_from(sorted(BINARY))), i, j))
            vals.append(out)
            continue
        elif kind == "reduce" and shape:
            axis = draw(st.integers(0, len(shape) - 1))
            keep = draw(st.booleans())
            prog.append(("reduce", draw(st.sampled_from(["sum", "max", "mean"])), i, axis, keep))
            vals.append(shape[:axis] + ((1,) if keep else ()) + shape[axis + 1:])
            continue
        elif kind == "view" and shape:
            how = draw(st.sampled_from(["transpose", "reshape", "slice"]))
            if how == "transpose" and len(shape) >= 2:
                prog.append(("transpose", i))
                vals.append(shape[::-1])
            elif how == "reshape":
                prog.append(("flatten", i))
                vals.append((int(np.prod(shape)),))
            elif shape[0] > 1:
                prog.append(("slice", i))
                vals.append((len(range(1, shape[0], 2)),) + shape[1:])
            continue
        elif kind in ("softmax", "layernorm") and shape and shape[-1] > 0:
            prog.append((kind, i))
        elif kind == "matmul" and len(shape) >= 2:
            prog.append(("matmul", i))
            vals.append(shape[:-1] + (shape[-2],))
            continue
        elif kind == "roundtrip":
            prog.append(("roundtrip", i))
        else:
            continue
        vals.append(shape)
    return prog, shapes


def build(prog: list[tuple], n_inputs: int) -> Callable[..., Any]:
    def fn(*xs: Any) -> Any:
        vals = list(xs)
        for ins in prog:
            op = ins[0]
            if op == "unary":
                vals.append(UNARY[ins[1]](vals[ins[2]]))
            elif op == "binary":
                vals.append(BINARY[ins[1]](vals[ins[2]], vals[ins[3]]))
            elif op == "reduce":
                x, axis, keep = vals[ins[2]], ins[3], ins[4]
                vals.append(getattr(x, ins[1])(axis, keepdims=keep))
            elif op == "transpose":
                vals.append(vals[ins[1]].T)
            elif op == "flatten":
                vals.append(vals[ins[1]].reshape(-1))
            elif op == "slice":
                vals.append(vals[ins[1]][1::2])
            elif op == "softmax":
                vals.append(tc.softmax(vals[ins[1]], -1))
            elif op == "layernorm":
                vals.append(F.layer_norm(vals[ins[1]], vals[ins[1]].shape[-1:]))
            elif op == "matmul":
                x = vals[ins[1]]
                vals.append(x @ x.mT * 0.1)
            elif op == "roundtrip":
                x = vals[ins[1]]
                vals.append(x.astype(tc.float64).astype(x.dtype) * 1.5)
        return vals[-1], vals[n_inputs:][0] if len(vals) > n_inputs + 1 else vals[-1] * 2.0

    return fn


def agree(prog: list[tuple], shapes: list[tuple[int, ...]], dtype: Any, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal(s).astype(dtype) for s in shapes]
    fn = build(prog, len(args))
    lowered = tc.jit(fn).lower(*args)
    got = lowered.compile("llvm")(*args)
    want = lowered.compile("reference")(*args)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (prog, g.shape, w.shape)
        scale = float(np.max(np.abs(w), initial=1.0))
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * scale, err_msg=repr(prog))


@RANDOM
@given(programs())
def test_random_float32_programs(case: tuple[list[tuple], list[tuple[int, ...]]]) -> None:
    agree(*case, np.float32)


@settings(RANDOM, max_examples=40)
@given(programs())
def test_random_float64_programs(case: tuple[list[tuple], list[tuple[int, ...]]]) -> None:
    agree(*case, np.float64)


@settings(RANDOM, max_examples=15)
@given(programs(big=True))
def test_random_programs_over_two_threads(case: tuple[list[tuple], list[tuple[int, ...]]]) -> None:
    from tensorc.backends.llvm.parallel import num_threads, set_num_threads

    before = num_threads()
    set_num_threads(2)
    try:
        agree(*case, np.float32)
    finally:
        set_num_threads(before)
