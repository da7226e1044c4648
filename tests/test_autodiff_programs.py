"""VJP rules in combination: random small programs, scan (BPTT) against the
unrolled loop, second derivatives, and the library's functions at realistic shapes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from grad_strategies import KINK_MARGIN, arrays, floats
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorc as tc
import tensorc.nn.functional as F
from tensorc.frontend.tracing import is_traced

# Hypothesis' default of 100 examples for the random programs (the point of the
# test is breadth); 30 for the scan properties, each of which differentiates two
# programs and compares them; 10 per second-order check, which differentiates a
# backward graph again. The file takes ~20 s of CPU (well under a minute on 2 cores).
PROGRAMS = settings(deadline=None, max_examples=100,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
SCANS = settings(PROGRAMS, max_examples=30)
SECOND_ORDER = settings(PROGRAMS, max_examples=10)


# ----------------------------------------------------------------------------- random programs


@dataclass(frozen=True)
class Step:
    """One op (or idiom) of a program, mapping x: (B, D) to a new (B, D).

    ``kink(x, p)`` gives, for a step that is not differentiable everywhere, the
    distance of each relevant value from its kink; inputs too close are assumed away.
    """

    fn: Callable[[Any, dict[str, Any]], Any]
    params: tuple[str, ...] = ()
    kink: Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray] | None = None


def _row_max_gap(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] < 2:
        return np.full(x.shape[:-1], np.inf)
    top = np.sort(x, -1)[..., -2:]
    return top[..., 1] - top[..., 0]


def _frac_gap(q: np.ndarray) -> np.ndarray:
    return np.abs(q - np.round(q))


def _running_sum(x: Any, p: dict[str, Any]) -> Any:
    def body(c: Any, row: Any) -> Any:
        c = tc.tanh(c + row * p["v"])
        return c, c * row

    _, ys = tc.scan(body, tc.zeros(x.shape[-1], dtype=x.dtype), x)
    return ys


STEPS: dict[str, Step] = {
    "tanh": Step(lambda x, p: tc.tanh(x)),
    "sigmoid": Step(lambda x, p: tc.sigmoid(x)),
    "sin": Step(lambda x, p: tc.sin(x)),
    "cos": Step(lambda x, p: tc.cos(x)),
    "erf": Step(lambda x, p: tc.erf(x)),
    "exp": Step(lambda x, p: tc.exp(x)),
    "neg": Step(lambda x, p: -x),
    "square": Step(lambda x, p: x * x),
    "log1p_sq": Step(lambda x, p: tc.log(1.0 + x * x)),
    "sqrt": Step(lambda x, p: tc.sqrt(x * x + 0.5)),
    "rsqrt": Step(lambda x, p: tc.rsqrt(x * x + 0.5)),
    "reciprocal": Step(lambda x, p: tc.reciprocal(1.0 + x * x)),
    "div": Step(lambda x, p: x / p["s"], ("s",)),
    "rdiv": Step(lambda x, p: p["v"] / (1.0 + x * x), ("v",)),
    "pow": Step(lambda x, p: tc.pow(x * x + 0.5, p["e"]), ("e",)),
    "relu": Step(lambda x, p: tc.relu(x), kink=lambda x, p: np.abs(x)),
    "abs": Step(lambda x, p: tc.abs(x), kink=lambda x, p: np.abs(x)),
    "leaky": Step(lambda x, p: tc.where(x > 0, x, x * 0.1), kink=lambda x, p: np.abs(x)),
    "maximum": Step(lambda x, p: tc.maximum(x, p["v"]), ("v",), kink=lambda x, p: np.abs(x - p["v"])),
    "minimum": Step(lambda x, p: tc.minimum(p["v"], x), ("v",), kink=lambda x, p: np.abs(x - p["v"])),
    "clip": Step(lambda x, p: tc.clip(x, -1.0, 1.0), kink=lambda x, p: np.minimum(np.abs(x - 1), np.abs(x + 1))),
    "select": Step(lambda x, p: tc.where(x > p["v"], x * 2.0, -x), ("v",), kink=lambda x, p: np.abs(x - p["v"])),
    "mod": Step(lambda x, p: tc.mod(x, 1.7), kink=lambda x, p: _frac_gap(x / 1.7)),
    "matmul": Step(lambda x, p: x @ p["W"], ("W",)),
    "linear": Step(lambda x, p: tc.tanh(x @ p["W"] + p["b"]), ("W", "b")),
    "scale_cols": Step(lambda x, p: x * p["v"], ("v",)),
    "scale_rows": Step(lambda x, p: tc.transpose(tc.transpose(x) * p["c"]), ("c",)),
    "shift": Step(lambda x, p: x - p["b"] + 0.5, ("b",)),
    "center": Step(lambda x, p: x - tc.mean(x, -1, keepdims=True)),
    "col_mix": Step(lambda x, p: x * tc.tanh(tc.sum(x, 0, keepdims=True))),
    "softmax": Step(lambda x, p: tc.softmax(x, -1)),
    "log_softmax": Step(lambda x, p: tc.log_softmax(x, 0)),
    # Near-constant rows make layer norm ill-conditioned (rstd -> 1/sqrt(eps)): central differences
    # cannot check it there, so such rows are assumed away like kinks (one-column rows are exact: output = bias).
    "layer_norm": Step(lambda x, p: F.layer_norm(x, (x.shape[-1],), p["v"], p["b"]), ("v", "b"),
                       kink=lambda x, p: np.broadcast_to(x.var(-1, keepdims=True) + (x.shape[-1] == 1), x.shape)),
    "sub_max": Step(lambda x, p: x - tc.max(x, -1, keepdims=True), kink=lambda x, p: _row_max_gap(x)),
    "roll": Step(lambda x, p: tc.concat([x[:, 1:], x[:, :1]], 1)),
    "shift_pad": Step(lambda x, p: tc.pad(x, [(0, 0), (1, 0)], value=0.3)[:, :x.shape[1]]),
    "interleave": Step(lambda x, p: tc.concat([x[:, ::2], x[:, 1::2]], 1)),
    "reverse_rows": Step(lambda x, p: x[::-1]),
    "transpose_trip": Step(lambda x, p: tc.transpose(tc.reshape(x, (x.shape[1], x.shape[0])))),
    "gather": Step(lambda x, p: x[:, p["idx"]], ("idx",)),
    "scatter": Step(lambda x, p: tc.scatter_add(x * 0.5, p["idx"], tc.tanh(x), 1), ("idx",)),
    "scan": Step(_running_sum, ("v",)),
    "stack_mean": Step(lambda x, p: tc.mean(tc.stack([x, tc.sin(x)], 0), 0)),
}


def _param_strategies(B: int, D: int) -> dict[str, st.SearchStrategy[np.ndarray]]:
    return {
        "W": arrays((D, D), floats(-1, 1)),
        "b": arrays((D,), floats(-1, 1)),
        "v": arrays((D,), floats(-2, 2)),
        "c": arrays((B,), floats(-2, 2)),
        "s": arrays((D,), floats(0.5, 2)),
        "e": arrays((D,), floats(-1.5, 1.5)),
        "idx": hnp.arrays(np.int64, (D,), elements=st.integers(0, D - 1)),
    }


@st.composite
def programs(draw: Any) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    names = draw(st.lists(st.sampled_from(sorted(STEPS)), min_size=2, max_size=6))
    B, D = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    needed = sorted({p for n in names for p in STEPS[n].params})
    strategies = _param_strategies(B, D)
    params = {k: draw(strategies[k]) for k in needed}
    x = draw(arrays((B, D), floats(-2, 2)))
    return names, x, params


def run_program(names: list[str], x: Any, params: dict[str, Any]) -> Any:
    for n in names:
        x = STEPS[n].fn(x, params)
    return x


def assume_differentiable(names: list[str], x: np.ndarray, params: dict[str, np.ndarray]) -> None:
    """Run the program eagerly; assume away kinks and overflowing values."""
    t: Any = tc.as_tensor(x)
    ps = {k: tc.as_tensor(v) for k, v in params.items()}
    for n in names:
        step = STEPS[n]
        if step.kink is not None:
            gap = step.kink(np.asarray(t), params)
            assume(np.all(gap > KINK_MARGIN))
        t = step.fn(t, ps)
        assert not is_traced(t)
        value = np.asarray(t)
        assume(np.all(np.isfinite(value)) and np.all(np.abs(value) < 1e3))


@PROGRAMS
@given(program=programs())
def test_random_programs_match_central_differences(program: tuple[list[str], np.ndarray, dict[str, np.ndarray]]) -> None:
    names, x, params = program
    assume_differentiable(names, x, params)
    assert tc.gradcheck(lambda x_, p_: run_program(names, x_, p_), x, params)


def test_program_steps_each_appear_in_some_program() -> None:
    """Every step can be drawn and runs (a typo in STEPS would otherwise hide behind assume)."""
    rng = np.random.default_rng(0)
    B, D = 2, 3
    params = {"W": rng.standard_normal((D, D)), "b": rng.standard_normal(D), "v": rng.standard_normal(D),
              "c": rng.standard_normal(B), "s": rng.uniform(0.5, 2, D), "e": rng.uniform(-1, 1, D), "idx": np.array([2, 0, 0])}
    for name in STEPS:
        out = STEPS[name].fn(tc.as_tensor(rng.standard_normal((B, D))), {k: tc.as_tensor(v) for k, v in params.items()})
        assert out.shape == (B, D), name


# ----------------------------------------------------------------------------- scan (BPTT) against the unrolled loop


@dataclass
class Rnn:
    """A small recurrent cell with the features scan's VJP must handle."""

    two_carries: bool  # (h, c) as in an LSTM
    counter: bool  # an int64 step counter carried along, feeding the float math
    reverse: bool
    has_xs: bool

    def step(self, carry: Any, x: Any, W: Any, U: Any) -> tuple[Any, Any]:
        h = carry["h"]
        inp = x @ U if self.has_xs else tc.sin(h)
        new_h = tc.tanh(h @ W + inp)
        new = dict(carry)
        if self.two_carries:
            c = carry["c"]
            new["c"] = c * tc.sigmoid(inp) + tc.tanh(h) * 0.5
            new_h = new_h + tc.tanh(new["c"]) * 0.25
        if self.counter:
            t = carry["t"]
            new["t"] = t + 1
            new_h = new_h * (1.0 + 0.1 * tc.cast(t, h.dtype))
        new["h"] = new_h
        y = new_h * (x[..., :new_h.shape[-1]] if self.has_xs else 1.0)
        return new, y

    def init(self, h0: Any, c0: Any) -> dict[str, Any]:
        carry = {"h": h0}
        if self.two_carries:
            carry["c"] = c0
        if self.counter:
            carry["t"] = tc.tensor(0)
        return carry

    def loss_scan(self, h0: Any, c0: Any, xs: Any, W: Any, U: Any, r: Any, length: int) -> Any:
        final, ys = tc.scan(lambda c, x: self.step(c, x, W, U), self.init(h0, c0), xs if self.has_xs else None,
                            length=length, reverse=self.reverse)
        return self._loss(final, ys, r)

    def loss_unrolled(self, h0: Any, c0: Any, xs: Any, W: Any, U: Any, r: Any, length: int) -> Any:
        carry = self.init(h0, c0)
        ys: list[Any] = [None] * length
        for t in (range(length - 1, -1, -1) if self.reverse else range(length)):
            carry, ys[t] = self.step(carry, xs[t] if self.has_xs else None, W, U)
        stacked = tc.stack(ys, 0) if length else tc.zeros((0, h0.shape[-1]), dtype=h0.dtype)
        return self._loss(carry, stacked, r)

    def _loss(self, final: dict[str, Any], ys: Any, r: Any) -> Any:
        loss = (final["h"] * r).sum() + (ys * ys).sum() * 0.5
        if self.two_carries:
            loss = loss + (final["c"] * final["c"]).sum()
        if self.counter:
            loss = loss * (1.0 + 0.01 * tc.cast(final["t"], loss.dtype))
        return loss


@st.composite
def rnn_problems(draw: Any) -> tuple[Rnn, int, list[np.ndarray]]:
    rnn = Rnn(draw(st.booleans()), draw(st.booleans()), draw(st.booleans()), draw(st.booleans()))
    length, d, dx = draw(st.integers(0, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dx = max(dx, d)
    h0, c0 = draw(arrays((d,), floats(-1, 1))), draw(arrays((d,), floats(-1, 1)))
    xs = draw(arrays((length, dx), floats(-1, 1)))
    W, U = draw(arrays((d, d), floats(-1, 1))), draw(arrays((dx, d), floats(-1, 1)))
    r = draw(arrays((d,), floats(-1, 1)))
    return rnn, length, [h0, c0, xs, W, U, r]


@SCANS
@given(problem=rnn_problems())
def test_scan_bptt_equals_gradient_of_unrolled_loop(problem: tuple[Rnn, int, list[np.ndarray]]) -> None:
    rnn, length, args = problem
    argnums = (0, 1, 2, 3, 4)  # h0, c0, xs, and the captured weights W, U
    v_scan, g_scan = tc.value_and_grad(lambda *a: rnn.loss_scan(*a, length), argnums)(*args)
    v_loop, g_loop = tc.value_and_grad(lambda *a: rnn.loss_unrolled(*a, length), argnums)(*args)
    np.testing.assert_allclose(float(v_scan), float(v_loop), rtol=1e-12, atol=1e-12)
    for name, a, b in zip(["h0", "c0", "xs", "W", "U"], g_scan, g_loop):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12, err_msg=f"d loss / d {name} ({rnn})")


@SCANS
@given(problem=rnn_problems())
def test_scan_bptt_matches_central_differences(problem: tuple[Rnn, int, list[np.ndarray]]) -> None:
    rnn, length, args = problem
    assert tc.gradcheck(lambda *a: rnn.loss_scan(*a, length), *args)


def test_scan_int_carry_counts_steps_and_gets_no_gradient() -> None:
    def f(h0: Any, xs: Any) -> Any:
        (h, t), ys = tc.scan(lambda c, x: ((c[0] * x, c[1] + 1), c[1]), (h0, tc.tensor(0)), xs)
        return h.sum() * tc.cast(t, h.dtype), (t, ys)

    (g, (t, ys)) = tc.grad(f, has_aux=True)(np.array([1.5]), np.array([[2.0], [3.0], [0.5]]))
    assert int(t) == 3 and ys.tolist() == [0, 1, 2]
    np.testing.assert_allclose(np.asarray(g), [3 * 2.0 * 3.0 * 0.5])


def test_scan_of_scan_matches_unrolled() -> None:
    """A scan whose body holds a scan: the reverse scan's body is itself a vjp of a scan."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((2, 2)) * 0.5
    xs = rng.standard_normal((3, 2, 2))

    def inner(h: Any, rows: Any, w: Any) -> Any:
        return tc.scan(lambda c, r: (tc.tanh(c @ w + r), c), h, rows)

    def nested(h0: Any, xs_: Any, w: Any) -> Any:
        last, ys = tc.scan(lambda h, rows: inner(h, rows, w), h0, xs_)
        return (last * last).sum() + ys.sum()

    def unrolled(h0: Any, xs_: Any, w: Any) -> Any:
        h, total = h0, 0.0
        for i in range(xs_.shape[0]):
            for j in range(xs_.shape[1]):
                total = total + h.sum()
                h = tc.tanh(h @ w + xs_[i, j])
        return (h * h).sum() + total

    h0 = rng.standard_normal(2)
    ga = tc.grad(nested, (0, 1, 2))(h0, xs, W)
    gb = tc.grad(unrolled, (0, 1, 2))(h0, xs, W)
    for a, b in zip(ga, gb):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    assert tc.gradcheck(nested, h0, xs, W)


def test_scan_backward_reads_saved_values_and_takes_weight_gradients_out_of_the_loop() -> None:
    """BPTT of an LSTM-like body: the reverse scan recomputes no matmul of the forward, computes
    no per-step weight gradient, and the weights' gradients are GEMMs over all T * B rows."""
    steps, batch, d_in, d_h = 7, 3, 4, 5
    rng = np.random.default_rng(3)
    wx, wh, b = rng.standard_normal((d_in, d_h)), rng.standard_normal((d_h, d_h)) * 0.5, rng.standard_normal(d_h)
    xs, h0 = rng.standard_normal((steps, batch, d_in)), np.zeros((batch, d_h))

    def loss(wx: Any, wh: Any, b: Any, xs: Any, h0: Any) -> Any:
        def step(h: Any, x: Any) -> Any:
            h = tc.tanh(x @ wx + h @ wh + b)
            return h, h
        _, hs = tc.scan(step, h0, xs)
        return (hs * hs).sum()

    graph = tc.jit(tc.grad(loss, (0, 1, 2))).lower(wx, wh, b, xs, h0).graph
    fwd, rev = [n for n in graph.nodes if n.op == "scan"]
    # final carry, ys, saved carries, then the saved x @ wx, h @ wh and tanh of every step
    assert fwd.shape == ((batch, d_h),) + ((steps, batch, d_h),) * 5
    rev_body = rev.attrs["body"]
    shapes = [n.shape for n in rev_body.nodes if n.op == "matmul"]
    # only the cotangents of the carry (g @ whᵀ) and of x_t (g @ wxᵀ): no recomputed product, no per-step dW
    assert sorted(shapes) == [(batch, d_in), (batch, d_h)]
    outside = [n for n in graph.nodes if n.op == "matmul"]
    assert sorted(n.shape for n in outside) == [(d_in, d_h), (d_h, d_h)]  # dwx, dwh after the loop
    assert all(n.inputs[1].shape[0] == steps * batch for n in outside)
    def loss_unrolled(wx: Any, wh: Any, b: Any, xs: Any, h0: Any) -> Any:
        h, total = h0, 0.0
        for t in range(steps):
            h = tc.tanh(xs[t] @ wx + h @ wh + b)
            total = total + (h * h).sum()
        return total

    unrolled = tc.grad(loss_unrolled, (0, 1, 2))
    for got, want in zip(tc.grad(loss, (0, 1, 2))(wx, wh, b, xs, h0), unrolled(wx, wh, b, xs, h0)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-11, atol=1e-12)



def test_scan_gradient_under_jit_equals_eager() -> None:
    rnn = Rnn(two_carries=True, counter=True, reverse=True, has_xs=True)
    rng = np.random.default_rng(2)
    args = [rng.standard_normal(2), rng.standard_normal(2), rng.standard_normal((4, 3)), rng.standard_normal((2, 2)),
            rng.standard_normal((3, 2)), rng.standard_normal(2)]
    f = tc.grad(lambda *a: rnn.loss_scan(*a, 4), (2, 3, 4))
    eager = f(*args)
    jitted = tc.jit(f)(*args)
    for a, b in zip(eager, jitted):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- second order


def _xent(logits: Any, target: Any) -> Any:
    return F.cross_entropy(logits, target)


def _scan_rnn(h0: Any, xs: Any, w: Any) -> Any:
    last, ys = tc.scan(lambda h, x: (tc.tanh(h @ w + x), h * x), h0, xs)
    return (last * last).sum() + ys.sum()


SECOND_ORDER_CASES: dict[str, tuple[Callable[..., Any], Callable[[Any], Any]]] = {
    # name: (fn, a strategy of its argument tuple)
    "tanh": (lambda x: tc.tanh(x), lambda d: (d.draw(arrays((2, 3))),)),
    "exp": (lambda x: tc.exp(x), lambda d: (d.draw(arrays((2, 3))),)),
    "mul": (lambda x, y: x * y, lambda d: (d.draw(arrays((2, 3))), d.draw(arrays((3,))))),
    "matmul": (lambda a, b: a @ b, lambda d: (d.draw(arrays((2, 3))), d.draw(arrays((3, 2))))),
    "softmax": (lambda x: tc.softmax(x, -1), lambda d: (d.draw(arrays((2, 4))),)),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (4,), w, b),
                   lambda d: (d.draw(arrays((2, 4))), d.draw(arrays((4,))), d.draw(arrays((4,))))),
    "cross_entropy": (_xent, lambda d: (d.draw(arrays((3, 4))), d.draw(hnp.arrays(np.int64, (3,), elements=st.integers(0, 3))))),
    "scan": (_scan_rnn, lambda d: (d.draw(arrays((2,), floats(-1, 1))), d.draw(arrays((3, 2), floats(-1, 1))),
                                   d.draw(arrays((2, 2), floats(-1, 1))))),
}


@pytest.mark.parametrize("name", sorted(SECOND_ORDER_CASES))
def test_gradgradcheck(name: str) -> None:
    fn, args_of = SECOND_ORDER_CASES[name]

    @SECOND_ORDER
    @given(data=st.data())
    def check(data: Any) -> None:
        assert tc.gradgradcheck(fn, *args_of(data))

    check()


def test_grad_of_grad_of_a_scan() -> None:
    """d²/dw² of a scalar recurrence, against the closed form of h_{t+1} = w * h_t + 1."""
    def f(w: Any) -> Any:
        h, _ = tc.scan(lambda h, _x: (w * h + 1.0, h), tc.tensor(np.float64(0.5)), None, length=3)
        return h

    w = 0.7
    # h3 = w³/2 + w² + w + 1 -> h3'' = 3w + 2
    np.testing.assert_allclose(float(tc.grad(tc.grad(f))(np.float64(w))), 3 * w + 2, rtol=1e-12)


# ----------------------------------------------------------------------------- the library at realistic shapes

RNG = np.random.default_rng(1234)


def _normal(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape)


LIBRARY_CASES: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
    "softmax": (lambda x: tc.softmax(x, 1), (_normal(3, 6, 2),)),
    "log_softmax": (lambda x: tc.log_softmax(x, -1), (_normal(4, 10),)),
    "logsumexp": (lambda x: tc.logsumexp(x, (0, 2)), (_normal(3, 2, 4),)),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, 16, w, b), (_normal(4, 16), _normal(16), _normal(16))),
    "layer_norm_2d": (lambda x: F.layer_norm(x, (3, 4)), (_normal(2, 3, 4),)),
    "cross_entropy": (lambda x: F.cross_entropy(x, np.array([1, 0, 9, -100, 4, 4])), (_normal(6, 10),)),
    "cross_entropy_smoothed_sum": (lambda x: F.cross_entropy(x, np.array([[1, 2], [0, 3]]), reduction="sum",
                                                             label_smoothing=0.1), (_normal(2, 2, 5),)),
    "cross_entropy_none": (lambda x: F.cross_entropy(x, np.array([3, -100, 0]), reduction="none"), (_normal(3, 7),)),
    "attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v), (_normal(2, 2, 5, 4), _normal(2, 2, 6, 4), _normal(2, 2, 6, 3))),
    "attention_causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                         (_normal(1, 2, 6, 4), _normal(1, 2, 6, 4), _normal(1, 2, 6, 4))),
    "attention_masks": (lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=RNG_MASK) + F.scaled_dot_product_attention(
        q, k, v, attn_mask=m), (_normal(2, 4, 3), _normal(2, 5, 3), _normal(2, 5, 2), _normal(4, 5))),
    "gelu": (lambda x: F.gelu(x), (_normal(4, 8),)),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), (_normal(4, 8),)),
    "silu": (lambda x: F.silu(x), (_normal(4, 8),)),
    "linear": (lambda x, w, b: F.linear(x, w, b), (_normal(3, 5), _normal(4, 5), _normal(4))),
    "embedding": (lambda w: F.embedding(np.array([[0, 3], [3, 1]]), w), (_normal(5, 3),)),
    "mse_loss": (lambda x, y: F.mse_loss(x, y), (_normal(4, 3), _normal(4, 3))),
    "var": (lambda x: tc.var(x, 0, correction=1), (_normal(5, 3),)),
}
RNG_MASK = np.random.default_rng(7).random((2, 4, 5)) > 0.3
RNG_MASK[1, 2] = False  # a fully masked row gives zeros (and zero gradient), not NaN


@pytest.mark.parametrize("name", sorted(LIBRARY_CASES))
def test_library_function_gradients(name: str) -> None:
    fn, args = LIBRARY_CASES[name]
    assert tc.gradcheck(fn, *args)


def test_attention_fully_masked_row_has_zero_gradient() -> None:
    q, k, v = _normal(1, 3, 2), _normal(1, 4, 2), _normal(1, 4, 2)
    mask = np.ones((1, 3, 4), bool)
    mask[0, 1] = False
    g = tc.grad(lambda q_: F.scaled_dot_product_attention(q_, k, v, attn_mask=mask).sum())(q)
    assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_array_equal(np.asarray(g)[0, 1], 0.0)


def test_cross_entropy_gradient_is_softmax_minus_onehot() -> None:
    x = _normal(4, 5)
    t = np.array([0, 4, 2, 2])
    g = np.asarray(tc.grad(lambda z: F.cross_entropy(z, t))(x))
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(g, (p - np.eye(5)[t]) / 4, rtol=1e-12, atol=1e-15)


def test_gelu_forms_agree_closely_and_have_the_erf_derivative() -> None:
    x = np.linspace(-3, 3, 13)
    g = np.asarray(tc.grad(lambda z: F.gelu(z).sum())(x))
    cdf = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x]))
    pdf = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(g, cdf + x * pdf, rtol=1e-12, atol=1e-14)
    g_tanh = np.asarray(tc.grad(lambda z: F.gelu(z, approximate="tanh").sum())(x))
    np.testing.assert_allclose(g_tanh, g, atol=2e-3)
