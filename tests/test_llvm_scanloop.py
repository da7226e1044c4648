"""The native loop of a scan (``tensorc/backends/llvm/scanloop.py``): the same results as the Python
loop over the same compiled body, bit for bit, for every kind of carry, input and output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tensorc as tc
from tensorc.backends.llvm import scanloop
from tensorc.backends.llvm.executable import LLVMExecutable


def rand(*shape: int, dtype: Any = np.float32, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed + sum(shape)).standard_normal(shape) * 0.5).astype(dtype)


def scan_steps(exe: LLVMExecutable) -> list[Any]:
    """The scan kernels of ``exe`` (library steps with a body)."""
    return [s for s in exe.library.values() if s.body is not None]


def run_both(fn: Callable[..., Any], *args: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[list[np.ndarray], list[np.ndarray], LLVMExecutable]:
    """(outputs with native scan loops, outputs with the Python loop, the native executable)."""
    lowered = tc.jit(fn).lower(*args)
    native = lowered.compile("llvm")
    got = [np.asarray(v) for v in tc.tree_flatten(native(*args))[0]]
    with monkeypatch.context() as m:
        m.setattr(scanloop.NativeScan, "build", classmethod(lambda cls, node, body: None))
        python = tc.jit(fn).lower(*args).compile("llvm")
        want = [np.asarray(v) for v in tc.tree_flatten(python(*args))[0]]
        assert all(s.native_scan is None for s in scan_steps(python.executable))
    return got, want, native.executable


def assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def lstm_loss(w_ih: Any, w_hh: Any, b: Any, xs: Any, h0: Any, c0: Any, reverse: bool = False) -> Any:
    xw = xs @ w_ih  # (T, B, 4H)

    def cell(state: Any, xw_t: Any) -> Any:
        h, c = state
        gates = xw_t + h @ w_hh + b
        i, f, g, o = tc.chunk(gates, 4, dim=-1)
        c = tc.sigmoid(f) * c + tc.sigmoid(i) * tc.tanh(g)
        h = tc.sigmoid(o) * tc.tanh(c)
        return (h, c), h

    (h, c), hs = tc.scan(cell, (h0, c0), xw, reverse=reverse)
    return (hs * hs).sum() + (h * c).sum()


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_forward_and_gradients_equal_the_python_loop(reverse: bool, dtype: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    steps, batch, d_in, d_h = 6, 3, 5, 4
    args = (rand(d_in, 4 * d_h, dtype=dtype), rand(d_h, 4 * d_h, dtype=dtype), rand(4 * d_h, dtype=dtype),
            rand(steps, batch, d_in, dtype=dtype), rand(batch, d_h, dtype=dtype, seed=1), rand(batch, d_h, dtype=dtype, seed=2))
    fn = tc.value_and_grad(lambda *a: lstm_loss(*a, reverse=reverse), argnums=(0, 1, 2, 4, 5))
    got, want, exe = run_both(fn, *args, monkeypatch=monkeypatch)
    assert_same(got, want)
    steps_ = scan_steps(exe)
    assert len(steps_) == 2 and all(s.native_scan is not None and s.native_scan.calls == 1 for s in steps_)
    assert {exe.how(s.kernel) for s in steps_} == {"scan (native)"}
    ref = tc.jit(fn).lower(*args).compile("reference")(*args)
    for g, w in zip(got, tc.tree_flatten(ref)[0]):
        np.testing.assert_allclose(g, np.asarray(w), rtol=2e-4 if dtype == np.float32 else 1e-10, atol=1e-5)


def test_inputs_returned_as_they_are_and_outputs_in_two_places(monkeypatch: pytest.MonkeyPatch) -> None:
    """ys that are a scanned input, a const, the incoming carry, and one value as both carry and y."""
    w = rand(3, 3)

    def fn(h0: Any, xs: Any, k: Any) -> Any:
        def body(carry: Any, x: Any) -> Any:
            h, n = carry
            new = tc.tanh(h @ w + x)
            return (new, n), (x, k, h, new, new * 2.0)

        return tc.scan(body, (h0, tc.as_tensor(h0) * 0.0 + 1.0), xs)

    got, want, exe = run_both(fn, rand(2, 3), rand(5, 2, 3, seed=3), rand(4, seed=4), monkeypatch=monkeypatch)
    assert_same(got, want)
    assert all(s.native_scan is not None and s.native_scan.calls == 1 for s in scan_steps(exe))


def test_transposed_and_sliced_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consts that reach the body as strided views; a matmul on a view of the carry."""
    w = rand(8, 6)

    def fn(w: Any, xs: Any, h0: Any) -> Any:
        wt = tc.transpose(w, 0, 1)[:, 2:]  # (6, 6), strided

        def body(h: Any, x: Any) -> Any:
            h = tc.tanh(tc.transpose(h, 0, 1).T @ wt + x)
            return h, h[:, ::2]

        return tc.scan(body, h0, xs)

    got, want, exe = run_both(fn, w, rand(4, 2, 6, seed=5), rand(2, 6, seed=6), monkeypatch=monkeypatch)
    assert_same(got, want)


def test_length_zero_and_one(monkeypatch: pytest.MonkeyPatch) -> None:
    w = rand(3, 3)

    def fn(h0: Any, xs: Any) -> Any:
        return tc.scan(lambda h, x: (tc.tanh(h @ w + x), h.sum()), h0, xs)

    for steps in (0, 1):
        got, want, _ = run_both(fn, rand(2, 3), rand(steps, 2, 3, seed=7), monkeypatch=monkeypatch)
        assert_same(got, want)


def test_body_with_another_library_op_runs_the_python_loop() -> None:
    """A body whose kernels include a fused op other than matmul keeps the Python loop (and works)."""
    g, bias = np.ones(4, np.float32), np.zeros(4, np.float32)

    def fn(h0: Any, xs: Any) -> Any:
        return tc.scan(lambda h, x: (tc.nn.functional.layer_norm(h + x, (4,), g, bias), h), h0, xs)

    args = (rand(8, 4), rand(3, 8, 4, seed=8))
    exe = tc.jit(fn).lower(*args).compile("llvm")
    got = exe(*args)
    want = tc.jit(fn).lower(*args).compile("reference")(*args)
    for a, b in zip(tc.tree_flatten(got)[0], tc.tree_flatten(want)[0]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    steps = scan_steps(exe.executable)
    assert steps and all(exe.executable.how(s.kernel) in ("scan", "scan (native)") for s in steps)


def test_gru_body_whose_gemm_adds_the_bias(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GRU step: h @ W_hh + b_hh is one GEMM that adds the bias, inside the native loop too."""
    from models.lstm import gru_step

    steps, batch, d_h = 5, 3, 4
    w_hh_t, b_hh = rand(d_h, 3 * d_h), rand(3 * d_h, seed=9)

    def fn(xw: Any, h0: Any, w: Any, b: Any) -> Any:
        return tc.scan(lambda h, x: (lambda n: (n, n))(gru_step(x, h, w, b)), h0, xw)

    args = (rand(steps, batch, 3 * d_h, seed=10), rand(batch, d_h, seed=11), w_hh_t, b_hh)
    got, want, exe = run_both(fn, *args, monkeypatch=monkeypatch)
    assert_same(got, want)
    (step,) = scan_steps(exe)
    assert step.native_scan is not None and step.native_scan.calls == 1
    assert any(s.bias is not None for s in step.body.library.values())
