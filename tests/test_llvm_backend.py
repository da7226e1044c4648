"""Differential tests of the LLVM CPU backend: ``target="llvm"`` must equal the reference backend.

Tolerances: elementwise results (no transcendental) must be bit-identical
(float and int); results through exp/log/tanh/erf/pow or a float reduction
(sequential, reassociated sums vs numpy's pairwise ones) use rtol=atol=1e-5
for float32 and 1e-12 for float64; the GPT block (loop nests and
library kernels) uses 1e-5 (float32) / 1e-11 (float64).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("llvmlite")

import tensorc as tc  # noqa: E402
import tensorc.nn.functional as F  # noqa: E402
from tensorc.kernel import lower_kernel  # noqa: E402

rng = np.random.default_rng(0)
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def rand(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def both(fn: Callable[..., Any], *args: Any) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
    """(llvm results, reference results, the llvm executable)."""
    lowered = tc.jit(fn).lower(*args)
    llvm = lowered.compile("llvm")
    ref = lowered.compile("reference")
    out_l, out_r = llvm(*args), ref(*args)
    out_l = list(out_l) if isinstance(out_l, (tuple, list)) else [out_l]
    out_r = list(out_r) if isinstance(out_r, (tuple, list)) else [out_r]
    return [np.asarray(o) for o in out_l], [np.asarray(o) for o in out_r], llvm.executable


def check(fn: Callable[..., Any], *args: Any, exact: bool = False, native: bool = True) -> Any:
    out_l, out_r, exe = both(fn, *args)
    if native:
        assert not exe.fallback_kernels, [k.pattern for k in exe.fallback_kernels]
    for a, b in zip(out_l, out_r):
        assert a.shape == b.shape and a.dtype == b.dtype
        if exact or a.dtype.kind not in "f":
            np.testing.assert_array_equal(a, b)
        else:
            tol = TOL[a.dtype]
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    return exe


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (7,), (13, 17), (3, 1, 33), (2, 0, 5), ()])
def test_elementwise_arithmetic_is_exact(dtype: Any, shape: tuple[int, ...]) -> None:
    x, y = rand(*shape, dtype=dtype), rand(*shape, dtype=dtype) + 3
    check(lambda x, y: tc.maximum(x * y - x / y, -x) + abs(y) * 0.5, x, y, exact=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transcendental_chain(dtype: Any) -> None:
    x = rand(37, 19, dtype=dtype)
    check(lambda x: tc.exp(tc.tanh(x)) + tc.log(abs(x) + 1) * tc.sigmoid(x) - tc.sqrt(abs(x)), x)
    check(lambda x: F.gelu(x, approximate="tanh") + F.gelu(x), x)


def test_compare_where_cast_and_ints() -> None:
    x = rand(5, 31)
    i = rng.integers(-50, 50, (5, 31)).astype(np.int64)
    check(lambda x, i: tc.where(x > 0.1, x, -x * 2) + i.astype(np.float32), x, i, exact=True)
    check(lambda x, i: ((i * 3 - 7) > 4).astype(np.int32) + tc.maximum(i, 2).astype(np.int32), x, i)
    check(lambda x: (x * 100).astype(np.int64), x)
    check(lambda x: tc.logical_not((x > 0) & (x < 0.5)) | (x == 0), x)


def test_broadcasting_through_expand() -> None:
    x, b, c = rand(6, 1, 11), rand(11), rand(6, 1, 1)
    check(lambda x, b, c: (x + b) * c - 2, x, b, c, exact=True)
    check(lambda b, c: b * c, b, c, exact=True)


def test_permuted_and_sliced_inputs() -> None:
    x = rand(9, 16, 5)
    check(lambda x: x.permute(2, 0, 1) * 2 + 1, x, exact=True)
    check(lambda x: x[1:8:2, 3:, ::2] - x[0:4, 0:13, 0:3], x, exact=True)
    check(lambda x: tc.exp(x.permute(1, 0, 2)[2:5]), x)
    check(lambda x: x.permute(2, 0, 1), x, exact=True)  # a materialized copy kernel


def test_padding_reads_through_a_mask() -> None:
    x = rand(5, 7)
    check(lambda x: tc.pad(x, ((1, 2), (0, 3)), 0.5) * 3 + 1, x, exact=True)
    check(lambda x: tc.pad(x, ((1, 2), (0, 3)), 0.5) * 3 + 1, rand(0, 4), exact=True)


def test_matmul_plus_bias_is_one_gemm_that_adds_the_bias() -> None:
    """x @ w + b (2-D and batched over a shared weight): the GEMM adds the row, no epilogue pass; a sum
    with a full matrix or a column is not a bias and keeps the epilogue."""
    x, x3, w, b = rand(37, 20), rand(3, 11, 20), rand(20, 33), rand(33)
    for fn, args in ((lambda x, w, b: x @ w + b, (x, w, b)), (lambda x, w, b: b + x @ w, (x3, w, b))):
        exe = check(fn, *args)
        assert any(s.bias is not None and exe.how(s.kernel) == "library" for s in exe.library.values())
    for fn, args in ((lambda x, w, y: x @ w + y, (x, w, rand(37, 33))), (lambda x, w, y: x @ w + y, (x, w, rand(37, 1)))):
        exe = check(fn, *args)
        assert all(s.bias is None for s in exe.library.values())
    # a square product plus a column of its size: the bias's size matches, its broadcast does not (runtime declines)
    check(lambda x, w, c: x @ w + c.reshape(33, 1), rand(33, 20), w, b)


def test_pieces_of_a_concat_run_as_loops_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gradient of a chunk (pieces padded and added) and a concat: the inner loop is split where
    the pieces meet, so no load keeps a mask and no where is left; results equal the unsplit loop's."""
    x, y = rand(6, 40), rand(6, 12)

    def pieces(x: Any, y: Any) -> Any:
        a, b, c, d = tc.chunk(x, 4, dim=-1)
        grad = tc.pad(tc.tanh(a), ((0, 0), (0, 30))) + tc.pad(b * 2.0, ((0, 0), (10, 20)))
        grad = grad + tc.pad(tc.sigmoid(c), ((0, 0), (20, 10))) + tc.pad(d - 1.0, ((0, 0), (30, 0)))
        return grad * 3.0, tc.concat([y, tc.exp(x[:, :5]), y * y], axis=1)

    exe = check(pieces, x, y)
    texts = [str(lk.func) for lk in exe.native.values()]
    assert texts and all(" if " not in t and "where(" not in t for t in texts), texts
    assert any(t.count("for i1 in 0..10 (vector)") == 4 for t in texts), texts
    split = tc.jit(pieces).lower(x, y).compile("llvm")(x, y)
    monkeypatch.setattr("tensorc.kernel.split.MAX_PARTS", 1)
    whole = tc.jit(pieces).lower(x, y).compile("llvm")
    assert any(" if " in str(lk.func) for lk in whole.executable.native.values())
    for a, b in zip(split, whole(x, y)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (4, 17), (13, 100), (3, 257)])
def test_softmax_over_last_axis_is_one_native_row_kernel(dtype: Any, shape: tuple[int, ...]) -> None:
    exe = check(lambda x: tc.softmax(x, -1), rand(*shape, dtype=dtype))
    assert [k.pattern for k in exe.schedule.kernels] == ["softmax-row"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axes", [(0,), (1,), (2,), (0, 2), (0, 1, 2), (1, 2)])
def test_sum_and_max_over_axes(dtype: Any, axes: tuple[int, ...]) -> None:
    x = rand(5, 19, 33, dtype=dtype)
    check(lambda x: (x * x).sum(axes), x)
    check(lambda x: x.max(axes), x, exact=True)


def test_reductions_of_odd_sizes_and_ints() -> None:
    check(lambda x: x.sum(-1), rand(3, 0))
    check(lambda x: x.sum(), rand(1))
    check(lambda x: x.sum(0) * 2, rand(101, 3))
    check(lambda x: x.sum(0) * 2 + x.max(0), rand(37, 5, 3))  # a column reduction with an epilogue
    check(lambda x: tc.exp(x).sum((0, 2)) - x.max((0, 2)), rand(4, 6, 17, dtype=np.float64))
    i = rng.integers(-9, 9, (7, 23)).astype(np.int32)
    check(lambda i: i.sum(1) + i.max(1), i)


def test_layernorm_row_kernel() -> None:
    x = rand(6, 45, dtype=np.float64)
    check(lambda x: F.layer_norm(x, 45), x, native=False)


def test_float32_exp_tanh_sigmoid_accuracy_and_special_values() -> None:
    x = np.concatenate([np.linspace(-86, 88, 20001), [-np.inf, np.inf, np.nan, 0.0, -0.0, 1e-30, -1e-6, 0.0999, 0.1001]])
    x = x.astype(np.float32)
    for fn, exact in ((tc.exp, np.exp), (tc.tanh, np.tanh), (tc.sigmoid, lambda v: 1 / (1 + np.exp(-v)))):
        out = tc.jit(fn).lower(x).compile("llvm")(x)
        want = exact(x.astype(np.float64))
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-37)  # numpy's float32 exp: about 2e-7


def test_causal_mask_from_iota_and_masked_softmax() -> None:
    x = rand(2, 9, 9)

    def masked_softmax(x: Any) -> Any:
        keep = tc.iota((9, 9), 0) >= tc.iota((9, 9), 1)
        return tc.softmax(tc.where(keep, x, float("-inf")), -1)

    check(masked_softmax, x)
    check(lambda x: tc.tril(x) * 2, x, exact=True)


def test_unsupported_kernels_fall_back() -> None:
    a, b = rand(4, 6), rand(6, 3)
    lowered = tc.jit(lambda a, b: tc.tanh(a @ b)).lower(a, b)
    assert any(lower_kernel(k) is None for k in lowered.schedule.kernels)
    out_l, out_r, _ = both(lambda a, b: tc.tanh(a @ b) + 1, a, b)
    np.testing.assert_allclose(out_l[0], out_r[0], rtol=1e-6, atol=1e-6)


def test_float32_elementwise_kernel_is_vectorized() -> None:
    x = rand(64, 100)
    exe = tc.jit(lambda x: (x * 2 + 1) * x).lower(x).compile("llvm").executable
    assert exe.module is not None and not exe.fallback_kernels
    asm = exe.module.asm()
    ir_text = exe.module.optimized_ir
    assert "<8 x float>" in ir_text or "<16 x float>" in ir_text
    assert "ymm" in asm or "zmm" in asm


def _block(p: dict[str, Any], x: Any) -> Any:
    b, t, c = x.shape
    h = F.layer_norm(x, c, p["ln_w"], p["ln_b"])
    q, k, v = tc.split(h @ p["w_qkv"], c, -1)
    q, k, v = (z.reshape(b, t, 2, c // 2).permute(0, 2, 1, 3) for z in (q, k, v))
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True).permute(0, 2, 1, 3).reshape(b, t, c)
    x = x + a @ p["w_o"]
    return x + F.gelu(F.layer_norm(x, c) @ p["w_fc"], approximate="tanh") @ p["w_proj"]


def _loss(p: dict[str, Any], x: Any, t: Any) -> Any:
    logits = _block(p, x) @ p["w_out"]
    return F.cross_entropy(logits.reshape(-1, 5), t.reshape(-1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpt_block_forward_and_backward(dtype: Any) -> None:
    c = 8
    r = np.random.default_rng(1)
    shapes = {"ln_w": (c,), "ln_b": (c,), "w_qkv": (c, 3 * c), "w_o": (c, c), "w_fc": (c, 4 * c), "w_proj": (4 * c, c),
              "w_out": (c, 5)}
    p = {k: (r.standard_normal(s) * 0.3 + (1.0 if k == "ln_w" else 0.0)).astype(dtype) for k, s in shapes.items()}
    x = r.standard_normal((2, 6, c)).astype(dtype)
    t = r.integers(0, 5, (2, 6))
    lowered = tc.jit(tc.value_and_grad(_loss)).lower(p, x, t)
    llvm, ref = lowered.compile("llvm"), lowered.compile("reference")
    exe = llvm.executable
    # loop nests for elementwise/reductions, library routines for the matmuls and fused ops, nothing left over
    assert exe.native and {s.node.op for s in exe.library.values()} >= {"matmul", "fused_attention", "fused_layernorm"}
    assert not exe.fallback_kernels
    (loss_l, g_l), (loss_r, g_r) = llvm(p, x, t), ref(p, x, t)
    tol = 1e-5 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(np.asarray(loss_l), np.asarray(loss_r), rtol=tol, atol=tol)
    for k in p:
        np.testing.assert_allclose(np.asarray(g_l[k]), np.asarray(g_r[k]), rtol=tol, atol=tol, err_msg=k)


# ---------------------------------------------------------------------------- parallel regions
# Sizes above the backend's PARALLEL_MIN_WORK, so the outer loops run over OpenMP threads.


@pytest.mark.parametrize("threads", [1, 2])
def test_parallel_kernels_match_reference(threads: int) -> None:
    from tensorc.backends.llvm.parallel import num_threads, set_num_threads

    before = num_threads()
    set_num_threads(threads)
    try:
        x = rand(3001, 257)
        v = rand(300_007)
        check(lambda a: a * 2.0 + 1.0, v, exact=True)  # one long elementwise loop, chunked over threads
        check(lambda a: tc.softmax(a, -1), x)  # rows over threads
        check(lambda a: a.sum(0), x)  # a column reduction accumulates across rows: must stay race-free
        check(lambda a: (a * a).sum(), v)  # a full reduction
        check(lambda a: tc.exp(a).sum(0, keepdims=True) * a, x, native=False)
    finally:
        set_num_threads(before)


def test_column_reductions_over_leading_axes_use_partial_rows_independent_of_threads() -> None:
    """Sums and maxes over leading axes, large enough: 8 slices of axis 0 walked in parallel into partial
    rows, added in a fixed order; the same bits on 1 and 2 threads, and the reference's values."""
    from tensorc.backends.llvm.parallel import num_threads, set_num_threads

    x = rand(64, 32, 48)
    fn = lambda a: (a.sum((0, 1)), (a * 2.0).max(0), a.sum(0) + 1.0)  # noqa: E731
    before, results = num_threads(), []
    try:
        for threads in (1, 2):
            set_num_threads(threads)
            got, want, exe = both(fn, x)
            texts = [str(lk.func) for lk in exe.native.values()]
            assert any("for p0 in 0..8 (parallel)" in t for t in texts), texts
            for g, w, bound in zip(got, want, (np.abs(x).sum((0, 1)), np.abs(x).max(0), np.abs(x).sum(0))):
                # a float32 sum of n terms in another order: within n eps of the sum of magnitudes
                assert np.all(np.abs(g - w) <= x.shape[0] * x.shape[1] * np.finfo(np.float32).eps * (bound + 1))
            results.append(got)
    finally:
        set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    small = check(lambda a: a.sum(0), rand(12, 5))  # too small: one walk
    assert all("p0" not in str(lk.func) for lk in small.native.values())


def test_large_elementwise_kernel_opens_a_parallel_region() -> None:
    exe = check(lambda a: a * 3.0, rand(1 << 16), exact=True)
    assert "GOMP_parallel" in exe.ir_text
    small = check(lambda a: a * 3.0, rand(64), exact=True)
    assert "GOMP_parallel" not in small.ir_text


# ---------------------------------------------------------------------------- library steps


def test_library_step_runs_the_routine_and_the_epilogue_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    """A matmul kernel runs its routine from the library registry, then its bias + GELU epilogue as a loop nest."""
    from tensorc.backends.llvm import library

    library.load_kernels()
    calls = []

    def fake_matmul(ctx: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        calls.append((a.shape, b.shape))
        return np.matmul(a, b)

    monkeypatch.setitem(library.IMPLS, "matmul", fake_matmul)
    x, w, bias = rand(6, 5), rand(5, 7), rand(7)
    exe = check(lambda x, w, b: F.gelu(x @ w + b), x, w, bias)
    step = next(iter(exe.library.values()))
    assert step.node.op == "matmul" and step.epilogue is not None
    assert calls == [((6, 5), (5, 7))]
    # The routine may decline a case (returns None): the reference runs it instead.
    monkeypatch.setitem(library.IMPLS, "matmul", lambda ctx, a, b: None)
    check(lambda x, w, b: tc.relu(x @ w + b), x, w, bias)


# ---------------------------------------------------------------------------- scan


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_body_runs_as_a_compiled_program(reverse: bool) -> None:
    """An RNN as a scan: the body is compiled once and run per step; forward and gradients match."""
    w, u = rand(6, 6) * 0.5, rand(4, 6) * 0.5
    xs = rand(9, 3, 4)
    h0 = rand(3, 6)

    def loss(w: Any, u: Any, xs: Any, h0: Any) -> Any:
        def cell(h: Any, x: Any) -> Any:
            h = tc.tanh(h @ w + x @ u)
            return h, h.sum(-1)

        h, ys = tc.scan(cell, h0, xs, reverse=reverse)
        return (h * h).sum() + ys.sum()

    exe = check(loss, w, u, xs, h0)
    (step,) = [s for s in exe.library.values() if s.body is not None]
    assert step.node.op == "scan" and not step.body.fallback_kernels
    check(tc.grad(loss, argnums=(0, 1, 3)), w, u, xs, h0, native=False)


# ---------------------------------------------------------------------------- gradients through the backend


def _grads_agree(loss: Callable[..., Any], params: Any, *data: Any, tol: float) -> None:
    lowered = tc.jit(tc.value_and_grad(loss)).lower(params, *data)
    got = lowered.compile("llvm")(params, *data)
    want = lowered.compile("reference")(params, *data)
    flat_got, _ = tc.tree_flatten(got) if hasattr(tc, "tree_flatten") else _flatten(got)
    flat_want, _ = tc.tree_flatten(want) if hasattr(tc, "tree_flatten") else _flatten(want)
    assert len(flat_got) == len(flat_want)
    for g, w in zip(flat_got, flat_want):
        g, w = np.asarray(g), np.asarray(w)
        scale = float(np.max(np.abs(w), initial=1e-3))
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * scale)


def _flatten(tree: Any) -> Any:
    from tensorc.frontend.pytree import flatten

    return flatten(tree)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpt_gradients_through_llvm_equal_the_reference(dtype: Any) -> None:
    from models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16))
    params = tc.tree_map(lambda p: np.asarray(p, dtype), model.init(tc.random.key(0))) if hasattr(tc, "tree_map") else None
    if params is None:
        from tensorc.frontend.pytree import tree_map

        params = tree_map(lambda p: np.asarray(p, dtype), model.init(tc.random.key(0)))
    x = rng.integers(0, 11, (3, 16))
    y = rng.integers(0, 11, (3, 16))
    _grads_agree(model.loss, params, x, y, tol=2e-4 if dtype == np.float32 else 1e-9)


def test_lstm_gradients_through_llvm_equal_the_reference() -> None:
    from models.lstm import LSTMLM
    from models.rnn import RecurrentLMConfig

    model = LSTMLM(RecurrentLMConfig(vocab_size=9, n_embd=8, hidden_size=12, num_layers=2))
    params = model.init(tc.random.key(1))
    x = rng.integers(0, 9, (4, 7))
    y = rng.integers(0, 9, (4, 7))
    _grads_agree(model.loss, params, x, y, tol=2e-4)


# ---------------------------------------------------------------------------- float16 / bfloat16 storage


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_types_are_stored_as_such_and_computed_in_float32(dtype: str) -> None:
    """Loads widen to float32 and every op's result is rounded to the half type, as the reference
    rounds after every op: elementwise arithmetic is bit-identical; through exp/tanh (polynomials
    here, numpy there) or a sum they may differ by one unit in the last place."""
    np_dt = np.dtype(tc.dtype(dtype).np) if hasattr(tc, "dtype") else np.dtype(dtype)
    ulp = float(np.finfo(np.float16).eps) if dtype == "float16" else 2.0 ** -7
    x, y = rand(37, 29).astype(np_dt), rand(29).astype(np_dt)
    other = tc.bfloat16 if dtype == "float16" else tc.float16
    exact = [lambda a, b: a * b + 1.0, lambda a, b: a.astype(other) * 3.0, lambda a, b: tc.maximum(a, b) / 3.0]
    # (a sum's float32 accumulator adds in another order than numpy's pairwise sum)
    inexact = [lambda a, b: tc.softmax(a, -1), lambda a, b: tc.tanh(a).astype(tc.float32), lambda a, b: (a + b).sum(0)]
    for fn in exact + inexact:
        out_l, out_r, exe = both(fn, x, y)
        assert not exe.fallback_kernels
        for a, b in zip(out_l, out_r):
            assert a.dtype == b.dtype
            if fn in exact:
                np.testing.assert_array_equal(a.astype(np.float32), b.astype(np.float32))
            else:
                b32 = b.astype(np.float32)
                np.testing.assert_allclose(a.astype(np.float32), b32, rtol=ulp, atol=ulp * float(np.abs(b32).max()))


def test_bfloat16_rounds_to_nearest_even_and_keeps_nan() -> None:
    import ml_dtypes

    vals = np.array([1.0, 1.00390625, 1.01171875, 3.1415927, -2.5e-3, np.inf, -np.inf, np.nan, 1e38, 0.0],
                    np.float32)
    out_l, out_r, _ = both(lambda a: a.astype(tc.bfloat16), vals)
    finite = ~np.isnan(vals)
    np.testing.assert_array_equal(out_l[0].view(np.uint16)[finite], vals.astype(ml_dtypes.bfloat16).view(np.uint16)[finite])
    assert np.isnan(out_l[0].astype(np.float32)[~finite]).all()


def test_debug_level_2_profiles_each_kernel() -> None:
    x = rand(30, 40)
    c = tc.jit(lambda x: tc.softmax(x * 2.0, -1).sum(0) + 1).lower(x).compile("llvm")
    assert "no profile" in c.executable.profile_report()
    with tc.config(debug=2):
        for _ in range(3):
            c(x)
    report = c.executable.profile_report()
    assert "(3 calls, median" in report and "softmax-row" in report and " loop " in report


def test_long_reduced_inner_axis_is_not_split_over_threads() -> None:
    """A column reduction whose innermost axis is reduced accumulates into one element per row:
    its store loop must stay on one thread however long it is."""
    from tensorc.backends.llvm.parallel import num_threads, set_num_threads

    before = num_threads()
    set_num_threads(2)
    try:
        x = rand(3, 2, 40_000)
        got, want, exe = both(lambda a: a.sum((0, 2)), x)
        assert not exe.fallback_kernels
        # 120,000 terms summed in another order: the error bound scales with the sum of |terms|.
        np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-6 * float(np.abs(x).sum()))
        check(lambda a: (a + 1.0).sum(0) * 2.0, rand(5, 40_000))
    finally:
        set_num_threads(before)


def test_recomputed_values_read_through_padding() -> None:
    """Gate gradients concatenated (pads of recomputed values) and reduced in the same kernel, as an
    LSTM's backward step does: computed under guards, natively, with no out-of-bounds reads."""
    a, b, c = rand(32, 8), rand(32, 8), rand(32, 8)

    def fn(a: Any, b: Any, c: Any) -> Any:
        cat = tc.concat([a * b, tc.tanh(b) - c, c * c * 0.5], axis=1)
        return cat, cat.sum(0)

    exe = check(fn, a, b, c)
    assert not exe.fallback_kernels
    exe = check(lambda a, b: tc.pad(a * b, ((1, 2), (3, 0))) + 1.0, a, b) if hasattr(tc, "pad") else None


# ---------------------------------------------------------------------------- scatter_add


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scatter_add_runs_natively_and_equals_the_reference(dtype: Any) -> None:
    """Repeated indices accumulate; other axes, int tables and bad indices go to the reference."""
    table, upd = rand(7, 5, dtype=dtype), rand(4, 3, 5, dtype=dtype)
    idx = np.array([[0, 6, 6], [2, 0, 0], [6, 6, 6], [1, 3, 0]])
    exe = check(lambda t, i, u: tc.scatter_add(t, i, u) * 1.0, table, idx, upd)
    assert [s.node.op for s in exe.library.values()] == ["scatter_add"]
    check(lambda t, i, u: tc.scatter_add(t, i, u), table, idx[:0], upd[:0])  # no updates
    check(lambda t, i, u: tc.scatter_add(t, i, u, axis=1), rand(5, 7, dtype=dtype), idx[0], rand(5, 3, dtype=dtype))
    with pytest.raises(tc.TensorcError, match="scatter_add.*index 9 out of range"):
        tc.jit(lambda t, i, u: tc.scatter_add(t, i, u))(table, np.array([9]), upd[0, :1])
