"""Hypothesis strategies for the autodiff tests: one input strategy per differentiable primitive.

``OP_CASES[name]`` is a strategy of :class:`OpCase`: a function that calls the
primitive ``name`` exactly (through :func:`tensorc.frontend.tracing.apply`, or
through the DSL function when broadcasting is the point), and float64 inputs
that keep it away from points where it is not differentiable (those are
``assume``-d away). ``tests/test_autodiff_ops.py`` enumerates the registry and
fails for a differentiable op that has no entry here.

Inputs are often *views*: the array handed to gradcheck has another layout and
the function permutes or strided-slices it into the operand, so every op is
also checked on non-contiguous operands (and the permute/slice VJPs with it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorc as tc
from tensorc.frontend.tracing import apply

# The per-op property runs once per differentiable op (41 with the fused ops), so
# each op gets 40 examples rather than hypothesis' default 100: the autodiff test
# files then stay well inside their CI share (~3 minutes on 2 cores with -n 2).
# A deep local run (200 per op) found nothing the 40 miss; raise it when hunting.
# Heavier properties (programs, scans) set their own counts.
OP_SETTINGS = settings(deadline=None, max_examples=40,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])

# The minimum distance from a kink (relu at 0, |x| at 0, a tie of max/maximum,
# a jump of mod) that an input must keep: central differences step by 1e-6.
KINK_MARGIN = 1e-3

# A strided-view input stays under this many elements (central differences cost two
# evaluations per element).
MAX_RAW_ELEMENTS = 96


# ----------------------------------------------------------------------------- values


def floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def signed(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Floats with ``lo <= |x| <= hi``, either sign (bounded away from zero)."""
    return st.one_of(floats(lo, hi), floats(-hi, -lo))


def arrays(shape: tuple[int, ...], elements: st.SearchStrategy[float] | None = None) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, shape, elements=elements if elements is not None else floats(-3.0, 3.0))


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 4) -> st.SearchStrategy[tuple[int, ...]]:
    """Small shapes; size-1 dims come up often (hypothesis shrinks towards them)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def index_arrays(shape: tuple[int, ...], size: int) -> st.SearchStrategy[np.ndarray]:
    """int64 indices into an axis of ``size`` (repeats allowed: they must accumulate)."""
    return hnp.arrays(np.int64, shape, elements=st.integers(0, size - 1))


# ----------------------------------------------------------------------------- views


@dataclass
class View:
    """How the function turns the array gradcheck perturbs into the operand."""

    kind: str  # "plain", "permute" or "slice"
    dims: tuple[int, ...] = ()  # permute: the raw array is the operand permuted by these dims
    slices: tuple[slice, ...] = ()

    def __call__(self, x: Any) -> Any:
        x = tc.as_tensor(x)
        if self.kind == "permute":
            inverse = [0] * len(self.dims)
            for i, d in enumerate(self.dims):
                inverse[d] = i
            return tc.permute(x, *inverse)
        if self.kind == "slice":
            return x[self.slices]
        return x

    def __repr__(self) -> str:
        return {"plain": "plain", "permute": f"permute{self.dims}", "slice": f"slice{self.slices}"}[self.kind]


@st.composite
def viewed(draw: Any, shape: tuple[int, ...], elements: st.SearchStrategy[float] | None = None) -> tuple[np.ndarray, View]:
    """A raw array and a View that maps it to an operand of ``shape`` (often non-contiguous)."""
    kinds = ["plain"] + (["permute", "slice"] if shape else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "permute":
        dims = tuple(draw(st.permutations(range(len(shape)))))
        raw_shape = tuple(shape[d] for d in dims)
        return draw(arrays(raw_shape, elements)), View("permute", dims=dims)
    if kind == "slice":
        slices, raw_shape = [], []
        for _ in shape:
            start, step, tail = draw(st.integers(0, 2)), draw(st.integers(1, 3)), draw(st.integers(0, 2))
            slices.append([start, step, tail])
        # Keep the raw array small (gradcheck perturbs every element): make axes plain until it is.
        for i in range(len(shape)):
            if math.prod(p[0] + max(n - 1, 0) * p[1] + 1 + p[2] for n, p in zip(shape, slices)) <= MAX_RAW_ELEMENTS:
                break
            slices[i] = [0, 1, 0]
        for n, (start, step, tail) in zip(shape, slices):
            raw_shape.append(start + (n - 1) * step + 1 + tail if n else start + tail)
        view = View("slice", slices=tuple(slice(a, a + n * b, b) for n, (a, b, _) in zip(shape, slices)))
        return draw(arrays(tuple(raw_shape), elements)), view
    return draw(arrays(shape, elements)), View("plain")


# ----------------------------------------------------------------------------- cases


@dataclass
class OpCase:
    """``fn(*args)`` exercises one op; gradcheck it with ``tc.gradcheck(case.fn, *case.args)``."""

    op: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        shapes_ = ", ".join(f"{a.dtype}{list(a.shape)}" if isinstance(a, np.ndarray) else repr(a) for a in self.args)
        return f"OpCase({self.op}: {self.note}; args {shapes_}; values {self.args!r})"


UNARY_DOMAINS: dict[str, st.SearchStrategy[float]] = {
    "neg": floats(-5, 5),
    "exp": floats(-4, 4),
    "log": floats(0.1, 5),
    "sqrt": floats(0.1, 5),
    "rsqrt": floats(0.1, 5),
    "reciprocal": signed(0.2, 5),
    "tanh": floats(-4, 4),
    "sigmoid": floats(-6, 6),
    "sin": floats(-5, 5),
    "cos": floats(-5, 5),
    "erf": floats(-3, 3),
    "abs": signed(KINK_MARGIN, 5),  # |x| is not differentiable at 0
}


def unary_case(op: str) -> st.SearchStrategy[OpCase]:
    @st.composite
    def case(draw: Any) -> OpCase:
        shape = draw(shapes(max_dims=3))
        raw, view = draw(viewed(shape, UNARY_DOMAINS[op]))
        return OpCase(op, lambda x: apply(op, [view(x)]), (raw,), f"view {view}")

    return case()


# (a, b) element strategies; the extra check keeps a pair away from a kink.
def _no_tie(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(np.abs(a - b) > KINK_MARGIN))


def _no_mod_jump(a: np.ndarray, b: np.ndarray) -> bool:
    q = a / b
    return bool(np.all(np.abs(q - np.round(q)) > KINK_MARGIN))


BINARY_DOMAINS: dict[str, tuple[st.SearchStrategy[float], st.SearchStrategy[float], Callable[[Any, Any], bool] | None]] = {
    "add": (floats(-5, 5), floats(-5, 5), None),
    "sub": (floats(-5, 5), floats(-5, 5), None),
    "mul": (floats(-5, 5), floats(-5, 5), None),
    "div": (floats(-5, 5), signed(0.2, 5), None),  # no division near 0
    "pow": (floats(0.2, 3), floats(-2, 2.5), None),  # positive base only: log(a) enters b's gradient
    "maximum": (floats(-3, 3), floats(-3, 3), _no_tie),
    "minimum": (floats(-3, 3), floats(-3, 3), _no_tie),
    "mod": (floats(-5, 5), signed(0.5, 3), _no_mod_jump),  # a mod b jumps where a/b is an integer
}


def binary_case(op: str) -> st.SearchStrategy[OpCase]:
    ea, eb, ok = BINARY_DOMAINS[op]

    @st.composite
    def case(draw: Any) -> OpCase:
        mode = draw(st.sampled_from(["primitive", "broadcast", "scalar"]))
        if mode == "primitive":  # the primitive itself: one shape, operands maybe non-contiguous views
            shape = draw(shapes(max_dims=3))
            a, va = draw(viewed(shape, ea))
            b, vb = draw(viewed(shape, eb))
            if ok is not None:
                assume(ok(np.asarray(va(a)), np.asarray(vb(b))))
            return OpCase(op, lambda x, y: apply(op, [va(x), vb(y)]), (a, b), f"primitive, views {va}, {vb}")
        if mode == "broadcast":  # the DSL function: numpy broadcasting becomes reshape + expand nodes
            bs = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=3))
            a = draw(arrays(bs.input_shapes[0], ea))
            b = draw(arrays(bs.input_shapes[1], eb))
            if ok is not None:
                assume(ok(*np.broadcast_arrays(a, b)))
            fn = getattr(tc, op)
            return OpCase(op, lambda x, y: fn(x, y), (a, b), f"tc.{op} broadcasting {bs.input_shapes} -> {bs.result_shape}")
        # One operand a 0-d tensor that broadcasts against the other (a Python scalar's position).
        shape = draw(shapes(min_dims=1, max_dims=2))
        a = draw(arrays(shape, ea))
        b = draw(arrays((), eb))
        swap = draw(st.booleans()) and op not in ("pow", "div", "mod")
        if ok is not None:
            assume(ok(*np.broadcast_arrays(a, b)))
        fn = getattr(tc, op)
        if swap:
            return OpCase(op, lambda x, y: fn(y, x), (a, b), f"tc.{op}(scalar, tensor)")
        return OpCase(op, lambda x, y: fn(x, y), (a, b), f"tc.{op}(tensor, scalar)")

    return case()


@st.composite
def where_case(draw: Any) -> OpCase:
    if draw(st.booleans()):
        shape = draw(shapes(max_dims=3))
        cond = draw(hnp.arrays(np.bool_, shape))
        a, va = draw(viewed(shape))
        b, vb = draw(viewed(shape))
        return OpCase("where", lambda c, x, y: apply("where", [tc.as_tensor(c), va(x), vb(y)]), (cond, a, b),
                      f"primitive, views {va}, {vb}")
    bs = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, min_side=1, max_side=3))
    cond = draw(hnp.arrays(np.bool_, bs.input_shapes[0]))
    a = draw(arrays(bs.input_shapes[1]))
    b = draw(arrays(bs.input_shapes[2]))
    return OpCase("where", lambda c, x, y: tc.where(c, x, y), (cond, a, b), f"tc.where broadcasting {bs.input_shapes}")


@st.composite
def cast_case(draw: Any) -> OpCase:
    """A float64 -> float64 cast node (identity in value, a real node for the VJP), next to
    casts from integers and bools that must pass no gradient. (Casts through float32 cannot be
    central-differenced in float64; test_autodiff_ops checks their gradient dtypes exactly.)"""
    shape = draw(shapes(max_dims=2))
    x, vx = draw(viewed(shape))
    ints = draw(hnp.arrays(np.int64, shape, elements=st.integers(-3, 3)))
    bools = draw(hnp.arrays(np.bool_, shape))

    def fn(x: Any, n: Any, m: Any) -> Any:
        f = apply("cast", [vx(x)], {"dtype": tc.float64})
        ni = apply("cast", [tc.as_tensor(n)], {"dtype": tc.float64})
        mb = apply("cast", [tc.as_tensor(m)], {"dtype": tc.float64})
        return f * (ni + 1.5) + mb

    return OpCase("cast", fn, (x, ints, bools), f"f64->f64 view {vx}, i64->f64, bool->f64")


def _nonempty_axes(ndim: int) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(lambda a: tuple(sorted(a)))


def _dsl_axis(draw: Any, ndim: int) -> Any:
    """An axis argument as users write it: None, an int or a tuple, negative half of the time."""
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none" or ndim == 0:
        return None
    axes = draw(_nonempty_axes(ndim))
    axes = tuple(a - ndim if draw(st.booleans()) else a for a in axes)
    return axes[0] if kind == "int" else axes


@st.composite
def sum_case(draw: Any) -> OpCase:
    if draw(st.booleans()):
        shape = draw(shapes(min_dims=1, max_dims=4, min_side=0, max_side=3))  # size-0 axes sum to 0
        axes = draw(_nonempty_axes(len(shape)))
        x, vx = draw(viewed(shape))
        return OpCase("sum", lambda t: apply("sum", [vx(t)], {"axes": axes}), (x,), f"primitive axes={axes}, view {vx}")
    shape = draw(shapes(min_dims=0, max_dims=3))
    axis = _dsl_axis(draw, len(shape))
    keepdims = draw(st.booleans())
    x, vx = draw(viewed(shape))
    return OpCase("sum", lambda t: tc.sum(vx(t), axis, keepdims), (x,), f"tc.sum axis={axis} keepdims={keepdims}, view {vx}")


def _no_max_ties(x: np.ndarray, axes: tuple[int, ...]) -> bool:
    """The largest and second-largest element of every reduced group differ by more than KINK_MARGIN."""
    if x.size == 0:
        return True
    kept = [i for i in range(x.ndim) if i not in axes]
    groups = np.transpose(x, kept + list(axes)).reshape(int(np.prod([x.shape[i] for i in kept], dtype=np.int64)), -1)
    if groups.shape[1] < 2:
        return True
    top2 = np.sort(groups, axis=1)[:, -2:]
    return bool(np.all(top2[:, 1] - top2[:, 0] > KINK_MARGIN))


@st.composite
def max_case(draw: Any) -> OpCase:
    if draw(st.booleans()):
        shape = draw(shapes(min_dims=1, max_dims=3))
        axes = draw(_nonempty_axes(len(shape)))
        x, vx = draw(viewed(shape))
        assume(_no_max_ties(np.asarray(vx(x)), axes))
        return OpCase("max", lambda t: apply("max", [vx(t)], {"axes": axes}), (x,), f"primitive axes={axes}, view {vx}")
    shape = draw(shapes(min_dims=1, max_dims=3))
    axis = _dsl_axis(draw, len(shape))
    keepdims = draw(st.booleans())
    which = draw(st.sampled_from(["max", "min"]))  # min is -max(-x)
    x = draw(arrays(shape))
    norm = tuple(range(len(shape))) if axis is None else tuple(sorted(a % len(shape) for a in np.atleast_1d(axis)))
    assume(_no_max_ties(x if which == "max" else -x, norm))
    fn = getattr(tc, which)
    return OpCase("max", lambda t: fn(t, axis, keepdims), (x,), f"tc.{which} axis={axis} keepdims={keepdims}")


@st.composite
def reshape_case(draw: Any) -> OpCase:
    shape = draw(shapes(min_dims=0, max_dims=3, min_side=0))
    x, vx = draw(viewed(shape))
    n = math.prod(shape)
    # A new shape: a random factorization of n, with size-1 dims sprinkled in.
    dims: list[int] = []
    rest = n
    while rest > 1:
        divisors = [d for d in range(2, rest + 1) if rest % d == 0]
        d = draw(st.sampled_from(divisors))
        dims.append(d)
        rest //= d
    if n == 0:
        dims = [0] + draw(st.lists(st.integers(1, 3), max_size=2))
    dims = draw(st.permutations(dims)) if dims else []
    for _ in range(draw(st.integers(0, 2))):
        dims.insert(draw(st.integers(0, len(dims))), 1)
    new = tuple(dims)
    return OpCase("reshape", lambda t: apply("reshape", [vx(t)], {"shape": new}), (x,), f"{shape} -> {new}, view {vx}")


@st.composite
def permute_case(draw: Any) -> OpCase:
    shape = draw(shapes(min_dims=1, max_dims=4, max_side=3))
    dims = tuple(draw(st.permutations(range(len(shape)))))
    x, vx = draw(viewed(shape))
    return OpCase("permute", lambda t: apply("permute", [vx(t)], {"dims": dims}), (x,), f"dims={dims}, view {vx}")


@st.composite
def expand_case(draw: Any) -> OpCase:
    if draw(st.booleans()):
        target = draw(shapes(min_dims=1, max_dims=3))
        shape = tuple(1 if draw(st.booleans()) else n for n in target)
        x, vx = draw(viewed(shape))
        return OpCase("expand", lambda t: apply("expand", [vx(t)], {"shape": target}), (x,), f"{shape} -> {target}, view {vx}")
    bs = draw(hnp.mutually_broadcastable_shapes(num_shapes=1, min_dims=0, max_dims=3, min_side=1, max_side=3))
    shape = bs.input_shapes[0]
    target = tuple(draw(st.lists(st.integers(1, 3), max_size=2))) + bs.result_shape
    x = draw(arrays(shape))
    return OpCase("expand", lambda t: tc.broadcast_to(t, target), (x,), f"tc.broadcast_to {shape} -> {target}")


@st.composite
def slice_case(draw: Any) -> OpCase:
    shape = draw(shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    starts, stops, steps = [], [], []
    for n in shape:
        a = draw(st.integers(0, n))
        b = draw(st.integers(a, n))
        starts.append(a), stops.append(b), steps.append(draw(st.integers(1, 3)))
    attrs = {"starts": tuple(starts), "stops": tuple(stops), "steps": tuple(steps)}
    x, vx = draw(viewed(shape))
    return OpCase("slice", lambda t: apply("slice", [vx(t)], attrs), (x,), f"{attrs}, view {vx}")


@st.composite
def pad_case(draw: Any) -> OpCase:
    shape = draw(shapes(min_dims=1, max_dims=3, min_side=0))
    low = tuple(draw(st.integers(0, 2)) for _ in shape)
    high = tuple(draw(st.integers(0, 2)) for _ in shape)
    value = draw(floats(-2, 2))
    x, vx = draw(viewed(shape))
    attrs = {"low": low, "high": high, "value": value}
    return OpCase("pad", lambda t: apply("pad", [vx(t)], attrs), (x,), f"{attrs}, view {vx}")


@st.composite
def concat_case(draw: Any) -> OpCase:
    shape = draw(shapes(min_dims=1, max_dims=3))
    axis = draw(st.integers(0, len(shape) - 1))
    k = draw(st.integers(1, 3))
    parts, views = [], []
    for _ in range(k):
        s = list(shape)
        s[axis] = draw(st.integers(0, 3))
        p, v = draw(viewed(tuple(s)))
        parts.append(p), views.append(v)
    return OpCase("concat", lambda *ts: apply("concat", [v(t) for v, t in zip(views, ts)], {"axis": axis}), tuple(parts),
                  f"axis={axis}, views {views}")


@st.composite
def matmul_case(draw: Any) -> OpCase:
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    if draw(st.booleans()):
        batch = draw(shapes(min_dims=0, max_dims=2, max_side=3))
        a, va = draw(viewed(batch + (m, k)))
        b, vb = draw(viewed(batch + (k, n)))
        return OpCase("matmul", lambda x, y: apply("matmul", [va(x), vb(y)]), (a, b), f"primitive, views {va}, {vb}")
    # tc.matmul: vectors and broadcast batch dims.
    bs = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, min_side=1, max_side=3))
    sa = bs.input_shapes[0] + (m, k) if draw(st.booleans()) else (k,)
    sb = bs.input_shapes[1] + (k, n) if draw(st.booleans()) else (k,)
    a, b = draw(arrays(sa)), draw(arrays(sb))
    return OpCase("matmul", lambda x, y: tc.matmul(x, y), (a, b), f"tc.matmul {sa} @ {sb}")


@st.composite
def gather_case(draw: Any) -> OpCase:
    shape = draw(shapes(min_dims=1, max_dims=3))
    axis = draw(st.integers(0, len(shape) - 1))
    idx = draw(index_arrays(draw(shapes(min_dims=0, max_dims=2, min_side=0)), shape[axis]))
    x, vx = draw(viewed(shape))
    return OpCase("gather", lambda t, i: apply("gather", [vx(t), tc.as_tensor(i)], {"axis": axis}), (x, idx),
                  f"axis={axis}, view {vx}")


@st.composite
def scatter_add_case(draw: Any) -> OpCase:
    shape = draw(shapes(min_dims=1, max_dims=3))
    axis = draw(st.integers(0, len(shape) - 1))
    idx = draw(index_arrays(draw(shapes(min_dims=0, max_dims=2, min_side=0)), shape[axis]))
    upd_shape = tuple(shape[:axis]) + tuple(idx.shape) + tuple(shape[axis + 1:])
    x, vx = draw(viewed(shape))
    u, vu = draw(viewed(upd_shape))
    return OpCase("scatter_add", lambda t, i, v: apply("scatter_add", [vx(t), tc.as_tensor(i), vu(v)], {"axis": axis}),
                  (x, idx, u), f"axis={axis}, views {vx}, {vu}")


@st.composite
def scan_case(draw: Any, op: str = "scan") -> OpCase:
    """A small RNN as one scan node: captured weights, a float carry, scanned xs, per-step ys,
    maybe reversed. For ``tuple_get`` only some of the scan's outputs are used, so the
    tuple's other slots get no cotangent."""
    length = draw(st.integers(0 if op == "scan" else 1, 4))
    d = draw(st.integers(1, 3))
    reverse = draw(st.booleans())
    h0 = draw(arrays((d,)))
    xs = draw(arrays((length, d)))
    w = draw(arrays((d, d), floats(-1, 1)))
    use = draw(st.sampled_from(["carry", "ys", "both"])) if op == "tuple_get" else "both"

    def fn(h: Any, x: Any, w_: Any) -> Any:
        def step(c: Any, xt: Any) -> Any:
            new = tc.tanh(c @ w_ + xt)
            return new, new * xt

        last, ys = tc.scan(step, tc.as_tensor(h), tc.as_tensor(x), reverse=reverse)
        if use == "carry":
            return last
        if use == "ys":
            return ys
        return last.sum() + (ys * ys).sum()

    return OpCase(op, fn, (h0, xs, w), f"length={length} d={d} reverse={reverse} uses {use}")


# ----------------------------------------------------------------------------- fused ops
# Pattern fusion puts these in graphs; here they are called directly. Using only the
# main output exercises the fused backward op; using the saved statistics as well
# sends the VJP through the op's decomposition.


def _pick(outs: Any, use: str) -> Any:
    outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
    return outs[0] if use == "first" else outs


@st.composite
def fused_layernorm_case(draw: Any) -> OpCase:
    shape = draw(shapes(min_dims=1, max_dims=3))
    n = draw(st.integers(1, len(shape)))
    attrs = {"n_axes": n, "eps": draw(st.sampled_from([1e-5, 1e-2])), "has_weight": draw(st.booleans()),
             "has_bias": draw(st.booleans())}
    use = draw(st.sampled_from(["first", "all"]))
    x, vx = draw(viewed(shape))
    affine = [draw(arrays(shape[-n:])) for _ in range(int(attrs["has_weight"]) + int(attrs["has_bias"]))]
    return OpCase("fused_layernorm", lambda t, *a: _pick(apply("fused_layernorm", [vx(t), *map(tc.as_tensor, a)], attrs), use),
                  (x, *affine), f"{attrs} uses {use}, view {vx}")


@st.composite
def fused_layernorm_bwd_case(draw: Any) -> OpCase:
    shape = draw(shapes(min_dims=1, max_dims=3))
    n = draw(st.integers(1, len(shape)))
    attrs = {"n_axes": n, "eps": 1e-5, "has_weight": draw(st.booleans()), "has_bias": draw(st.booleans())}
    lead = shape[:len(shape) - n]
    dy, x = draw(arrays(shape)), draw(arrays(shape))
    mean, rstd = draw(arrays(lead)), draw(arrays(lead, floats(0.5, 2.0)))
    w = [draw(arrays(shape[-n:]))] if attrs["has_weight"] else []
    return OpCase("fused_layernorm_bwd", lambda *a: apply("fused_layernorm_bwd", list(map(tc.as_tensor, a)), attrs),
                  (dy, x, mean, rstd, *w), f"{attrs}")


def _targets(draw: Any, shape: tuple[int, ...], n_classes: int, ignore_index: Any) -> np.ndarray:
    lo = -1 if ignore_index is not None else 0
    t = draw(hnp.arrays(np.int64, shape, elements=st.integers(lo, n_classes - 1)))
    return np.where(t < 0, ignore_index, t) if ignore_index is not None else t


def _xent_attrs(draw: Any) -> dict[str, Any]:
    return {"ignore_index": draw(st.sampled_from([-100, None])), "reduction": draw(st.sampled_from(["none", "sum", "mean"]))}


@st.composite
def fused_softmax_xent_case(draw: Any) -> OpCase:
    shape = draw(shapes(min_dims=1, max_dims=3))
    attrs = _xent_attrs(draw)
    use = draw(st.sampled_from(["first", "all"]))
    x, vx = draw(viewed(shape))
    t = _targets(draw, shape[:-1], shape[-1], attrs["ignore_index"])
    return OpCase("fused_softmax_xent", lambda a, b: _pick(apply("fused_softmax_xent", [vx(a), tc.as_tensor(b)], attrs), use),
                  (x, t), f"{attrs} uses {use}, view {vx}")


@st.composite
def fused_softmax_xent_bwd_case(draw: Any) -> OpCase:
    shape = draw(shapes(min_dims=1, max_dims=3))
    attrs = _xent_attrs(draw)
    g = draw(arrays(shape[:-1] if attrs["reduction"] == "none" else ()))
    x = draw(arrays(shape))
    t = _targets(draw, shape[:-1], shape[-1], attrs["ignore_index"])
    lse = draw(arrays(shape[:-1], floats(0.0, 3.0)))
    return OpCase("fused_softmax_xent_bwd",
                  lambda a, b, c, d: apply("fused_softmax_xent_bwd", [tc.as_tensor(a), tc.as_tensor(b), tc.as_tensor(c), tc.as_tensor(d)], attrs),
                  (g, x, t, lse), f"{attrs}")


def _attention_inputs(draw: Any) -> tuple[dict[str, Any], list[np.ndarray], tuple[int, ...]]:
    batch = draw(shapes(min_dims=0, max_dims=2, max_side=2))
    L, S, E, Ev = (draw(st.integers(1, 3)) for _ in range(4))
    attrs = {"scale": draw(st.sampled_from([0.5, 1.0 / math.sqrt(E)])), "causal": draw(st.booleans()),
             "mask_kind": draw(st.sampled_from(["none", "bool", "add"]))}
    q, k, v = draw(arrays(batch + (L, E))), draw(arrays(batch + (S, E))), draw(arrays(batch + (S, Ev)))
    mask = []
    if attrs["mask_kind"] == "bool":
        mask = [draw(hnp.arrays(np.bool_, batch + (L, S)))]
    elif attrs["mask_kind"] == "add":
        mask = [draw(arrays(batch + (L, S)))]
    return attrs, [q, k, v, *mask], batch + (L,)


def _masked_rows(attrs: dict[str, Any], args: list[np.ndarray]) -> np.ndarray:
    L, S = args[0].shape[-2], args[1].shape[-2]
    allowed = np.ones(args[0].shape[:-1] + (S,), bool)
    if attrs["causal"]:
        allowed &= np.tril(np.ones((L, S), bool))
    if attrs["mask_kind"] == "bool":
        allowed &= args[3]
    return ~allowed.any(-1)


@st.composite
def fused_attention_case(draw: Any) -> OpCase:
    attrs, args, _ = _attention_inputs(draw)
    use = draw(st.sampled_from(["first", "all"]))
    if use == "all":  # a fully masked row has lse = -inf: fine for o (it is 0), not as an output to project
        assume(not _masked_rows(attrs, args).any())

    def fn(*a: Any) -> Any:
        return _pick(apply("fused_attention", [tc.as_tensor(t) for t in a], attrs), use)

    return OpCase("fused_attention", fn, tuple(args), f"{attrs} uses {use}")


@st.composite
def fused_attention_bwd_case(draw: Any) -> OpCase:
    attrs, (q, k, v, *mask), rows = _attention_inputs(draw)
    do = draw(arrays(rows + (v.shape[-1],)))
    o = draw(arrays(rows + (v.shape[-1],)))
    # lse as the forward makes it (the op's own forward, eagerly), plus up to 2: then p = exp(s - lse) <= 1
    # as in every real use. An lse far below the scores makes p ~ 1e6, and central differences of such a
    # function lose their digits to rounding (a false failure, seen at |diff| 6e-4 on terms of 1e6).
    _, fwd_lse = apply("fused_attention", [tc.as_tensor(t) for t in (q, k, v, *mask)], attrs)
    fwd_lse = np.asarray(fwd_lse.numpy(), np.float64)
    lse = np.where(np.isfinite(fwd_lse), fwd_lse, 0.0) + draw(arrays(rows, floats(0.0, 2.0)))

    def fn(*a: Any) -> Any:
        return apply("fused_attention_bwd", [tc.as_tensor(t) for t in a], attrs)

    return OpCase("fused_attention_bwd", fn, (do, q, k, v, o, lse, *mask), f"{attrs}")


OP_CASES: dict[str, st.SearchStrategy[OpCase]] = {
    **{op: unary_case(op) for op in UNARY_DOMAINS},
    **{op: binary_case(op) for op in BINARY_DOMAINS},
    "where": where_case(),
    "cast": cast_case(),
    "sum": sum_case(),
    "max": max_case(),
    "reshape": reshape_case(),
    "permute": permute_case(),
    "expand": expand_case(),
    "slice": slice_case(),
    "pad": pad_case(),
    "concat": concat_case(),
    "matmul": matmul_case(),
    "gather": gather_case(),
    "scatter_add": scatter_add_case(),
    "scan": scan_case(),
    "tuple_get": scan_case("tuple_get"),
    "fused_layernorm": fused_layernorm_case(),
    "fused_layernorm_bwd": fused_layernorm_bwd_case(),
    "fused_softmax_xent": fused_softmax_xent_case(),
    "fused_softmax_xent_bwd": fused_softmax_xent_bwd_case(),
    "fused_attention": fused_attention_case(),
    "fused_attention_bwd": fused_attention_bwd_case(),
}
"""One input strategy per differentiable primitive; a new differentiable op needs an entry."""
