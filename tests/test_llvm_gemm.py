"""The LLVM backend's GEMM library kernel (``kernels/gemm.py``, and the ``matmul`` op on it, ``kernels/matmul.py``) against numpy.

Error bound, as for BLAS: ``|C - C64| <= 2 K eps (|A| @ |B|)`` elementwise, where C64 is the
product in float64 (for float64 operands, numpy's own float64 product, hence the factor 2).
Results with 1 and 2 threads must be bit-identical: every element is the same chain of FMAs
whatever the split.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import pytest

pytest.importorskip("llvmlite")

from tensorc.backends.llvm import library, parallel  # noqa: E402
from tensorc.backends.llvm.kernels import gemm  # noqa: E402
from tensorc.backends.llvm.kernels import matmul as mm  # noqa: E402
from tensorc.ir.registry import REGISTRY  # noqa: E402

rng = np.random.default_rng(0)
DTYPES = [np.float32, np.float64]


def rand(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def check(a: np.ndarray, b: np.ndarray, fn: Any = None) -> np.ndarray:
    """Run the native matmul (or ``fn``) on ``a @ b`` and check it against float64 numpy within the BLAS bound."""
    out = (fn or mm.matmul)(None, a, b)
    assert out is not None
    expect = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert out.shape == expect.shape and out.dtype == a.dtype and out.flags.c_contiguous
    k = a.shape[-1]
    bound = 2 * max(k, 1) * np.finfo(a.dtype).eps * np.matmul(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64)))
    err = np.abs(out - expect)
    assert np.all(err <= bound + np.finfo(a.dtype).tiny), float((err - bound).max())
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 3, 7, 17, 31, 97, 100, 257])
def test_square(dtype: Any, n: int) -> None:
    check(rand(n, n, dtype=dtype), rand(n, n, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mnk", [(1, 1, 7), (1, 300, 5), (300, 1, 33), (5, 33, 1), (13, 65, 129), (300, 1100, 530),
                                 (150, 40, 1100), (7, 4500, 9)])
def test_odd_and_blocked_shapes(dtype: Any, mnk: tuple[int, int, int]) -> None:
    """Sizes off every vector/tile multiple, and larger than the MC, KC and NC blocks."""
    m, n, k = mnk
    check(rand(m, k, dtype=dtype), rand(k, n, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_transposed_and_strided_views(dtype: Any) -> None:
    m, n, k = 37, 45, 300
    a, b = rand(m, k, dtype=dtype), rand(k, n, dtype=dtype)
    at, bt = np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T  # column-major views
    for x, y in [(at, b), (a, bt), (at, bt)]:
        check(x, y)
    check(rand(m, 2 * k, dtype=dtype)[:, ::2], rand(k, 3 * n, dtype=dtype)[:, 1::3])  # unit stride nowhere
    check(a[::-1], b[:, ::-1])  # negative strides
    check(rand(k, 256, dtype=dtype).T[:, :], rand(k, 2048, dtype=dtype)[:, 5:5 + 768])  # backward-style dW shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched(dtype: Any) -> None:
    check(rand(6, 70, 50, dtype=dtype), rand(6, 50, 61, dtype=dtype))  # batch split over threads
    check(rand(3, 70, 300, dtype=dtype), rand(3, 300, 90, dtype=dtype))  # one GEMM after another
    check(rand(2, 3, 17, 33, dtype=dtype), rand(2, 3, 33, 8, dtype=dtype))  # 4-d, batch dims merge
    x = rand(3, 2, 17, 33, dtype=dtype).transpose(1, 0, 2, 3)  # (2, 3, 17, 33): batch dims do not merge
    check(x, rand(2, 3, 33, 9, dtype=dtype).transpose(0, 1, 3, 2).swapaxes(-1, -2))
    check(rand(2, 3, 4, 5, 6, dtype=dtype).transpose(2, 0, 1, 3, 4), rand(4, 2, 3, 6, 7, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_broadcast_batch_operands(dtype: Any) -> None:
    x, w = rand(4, 50, 33, dtype=dtype), rand(33, 70, dtype=dtype)
    check(x, np.broadcast_to(w, (4, 33, 70)))  # weight over the batch: one GEMM of 200 rows
    check(x[:, ::2], np.broadcast_to(w, (4, 33, 70)))  # rows do not run on: one GEMM per item
    check(np.broadcast_to(x[0], (4, 50, 33)), rand(4, 33, 70, dtype=dtype))
    check(np.broadcast_to(x[0], (2, 3, 50, 33)), np.broadcast_to(w, (2, 3, 33, 70)))
    check(np.broadcast_to(rand(1, 3, 8, 5, dtype=dtype), (2, 3, 8, 5)), np.broadcast_to(rand(2, 1, 5, 6, dtype=dtype),
                                                                                           (2, 3, 5, 6)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [((0, 5), (5, 3)), ((4, 5), (5, 0)), ((4, 0), (0, 3)), ((0, 4, 5), (0, 5, 3)),
                                    ((2, 4, 0), (2, 0, 3)), ((0, 0), (0, 0))])
def test_empty(dtype: Any, shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    a, b = rand(*shapes[0], dtype=dtype), rand(*shapes[1], dtype=dtype)
    out = mm.matmul(None, a, b)
    np.testing.assert_array_equal(out, np.matmul(a, b))
    assert out.dtype == a.dtype and out.shape == np.matmul(a, b).shape


def test_other_dtypes_fall_back() -> None:
    for dt in (np.int32, np.int64, np.float16):
        a = np.ones((3, 4), dt)
        assert mm.matmul(None, a, np.ones((4, 2), dt)) is None
    assert library.native_impl("matmul") is mm.matmul


def test_matches_the_registry_reference() -> None:
    a, b = rand(3, 20, 30), np.broadcast_to(rand(30, 10), (3, 30, 10))
    ref = REGISTRY["matmul"].ref(None, a, b)
    np.testing.assert_allclose(mm.matmul(None, a, b), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_and_two_threads_agree_bitwise(dtype: Any) -> None:
    cases = [(rand(300, 1100, dtype=dtype), rand(1100, 530, dtype=dtype)),  # split by columns (N > M)
             (rand(530, 300, dtype=dtype), rand(300, 70, dtype=dtype)),  # split by rows
             (rand(8, 64, 64, dtype=dtype), rand(8, 64, 60, dtype=dtype)),  # split by batch
             (rand(200, 3, dtype=dtype).T, rand(200, 333, dtype=dtype))]
    before = parallel.num_threads()
    try:
        parallel.set_num_threads(1)
        one = [mm.matmul(None, a, b) for a, b in cases]
        parallel.set_num_threads(2)
        two = [mm.matmul(None, a, b) for a, b in cases]
    finally:
        parallel.set_num_threads(before)
    for (a, b), x, y in zip(cases, one, two):
        np.testing.assert_array_equal(x, y)
        check(a, b)


def test_wide_vector_tiles() -> None:
    """The AVX-512 tiles (6x64 f32, 6x32 f64), built as 16/8-lane vectors; LLVM splits them on AVX2."""
    import llvmlite.ir as ir

    from tensorc.backends.llvm.executable import compile_ir

    module = ir.Module(name="gemm_wide")
    gemm.build_gemm(module, "gemm_w_f32", 4, lanes=16)
    gemm.build_gemm(module, "gemm_w_f64", 8, lanes=8)
    native = compile_ir(str(module), "gemm_wide")
    for name, dtype, lanes in (("gemm_w_f32", np.float32, 16), ("gemm_w_f64", np.float64, 8)):
        fn = ctypes.CFUNCTYPE(None, *gemm.GEMM_ARGTYPES)(native.address(name))
        size = np.dtype(dtype).itemsize
        threads = parallel.num_threads()
        for m, n, k in [(1, 1, 1), (7, 70, 9), (13, 65, 600), (100, 200, 30), (5, 7, 0)]:
            a, b = rand(2, k, m, dtype=dtype).transpose(0, 2, 1), rand(2, k, n, dtype=dtype)
            c = np.empty((2, m, n), dtype)
            sa, sb = (s // size for s in a.strides), (s // size for s in b.strides)
            ws = mm.workspace(gemm.workspace_bytes(size, n, k, threads, lanes))
            fn(a.ctypes.data, b.ctypes.data, c.ctypes.data, 2, m, n, k, *sa, *sb, m * n, n, ws, threads, None, None)
            check(a, b, fn=lambda _ctx, a, b, c=c: c)


def test_addresses_without_the_object_layout_and_misaligned_data() -> None:
    a, b = rand(9, 20), rand(20, 11)
    saved = mm.DATA_OFFSET
    try:
        mm.DATA_OFFSET = mm._state.block[8] = 0  # data pointers from arr.ctypes.data instead
        check(a, b)
    finally:
        mm.DATA_OFFSET = mm._state.block[8] = saved
    raw = np.zeros(4 * 9 * 20 + 1, np.uint8)
    odd = np.frombuffer(raw.data, np.float32, 9 * 20, offset=1).reshape(9, 20)  # not 4-byte aligned
    odd[...] = a
    check(odd, b)
    rows = np.ndarray((9, 20), np.float32, buffer=np.zeros(82 * 9, np.uint8), strides=(82, 4))  # 82 bytes apart
    rows[...] = a
    check(rows, b)


def test_python_threads_each_have_a_workspace() -> None:
    from concurrent.futures import ThreadPoolExecutor

    pairs = [(rand(130 + i, 70), rand(70, 90 + i)) for i in range(6)]
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda ab: mm.matmul(None, *ab), pairs))
    for (a, b), out in zip(pairs, outs):
        np.testing.assert_array_equal(out, mm.matmul(None, a, b))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mnk", [(32, 1024, 256), (32, 256, 1024), (7, 70, 9), (13, 4500, 600), (100, 33, 530), (2, 17, 3)])
def test_prepacked_b_gives_the_same_bits(dtype: Any, threads: int, mnk: tuple[int, int, int]) -> None:
    """A B packed once (a scan's weight) and read by every call: the product is bit-identical to
    packing it per call, for row-major and transposed B, across the KC and NC blocks and thread splits."""
    m, n, k = mnk
    a = rand(m, k, dtype=dtype)
    saved = parallel.num_threads()
    parallel.set_num_threads(threads)
    try:
        for b in (rand(k, n, dtype=dtype), rand(n, k, dtype=dtype).T):
            packed = mm.prepack(b)
            assert packed is not None and packed.ctypes.data % 64 == 0
            out = np.empty((m, n), dtype)
            calls = mm.bound_calls(a, b, out, packed)
            assert calls is not None and all(block[9] == packed.ctypes.data for _, block, _ in calls)
            for fn, block, shape in calls:
                ctypes.CFUNCTYPE(None, *gemm.CALL_ARGTYPES)(fn)(ctypes.addressof(block), ctypes.addressof(shape))
            np.testing.assert_array_equal(out, mm.matmul(None, a, b))
            check(a, b, fn=lambda _ctx, a, b, out=out: out)
    finally:
        parallel.set_num_threads(saved)


def test_prepack_declines_what_it_cannot_pack() -> None:
    assert mm.prepack(np.ones((3, 4), np.float16)) is None
    assert mm.prepack(np.ones((2, 3, 4), np.float32)) is None
    assert mm.prepack(np.ones((0, 4), np.float32)) is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mnk", [(1, 1, 1), (7, 70, 9), (13, 4500, 600), (2048, 1024, 64), (32, 65, 256), (300, 1, 5)])
def test_bias_added_by_the_gemm(dtype: Any, threads: int, mnk: tuple[int, int, int]) -> None:
    """``matmul_bias``: the bias row is added as the first depth slice is stored (edge tiles included),
    once, whatever the number of depth slices, thread split, B layout, or a prepacked B."""
    m, n, k = mnk
    a, bias = rand(m, k, dtype=dtype), rand(n, dtype=dtype)
    saved = parallel.num_threads()
    parallel.set_num_threads(threads)
    try:
        for b in (rand(k, n, dtype=dtype), rand(n, k, dtype=dtype).T):
            out = mm.matmul_bias(a, b, bias)
            assert out is not None
            # the product's BLAS bound, plus one rounding of the sum
            want = a.astype(np.float64) @ b.astype(np.float64) + bias
            eps = np.finfo(dtype).eps
            bound = 2 * max(k, 1) * eps * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))) + eps * np.abs(want)
            assert np.all(np.abs(out - want) <= bound + np.finfo(dtype).tiny)
            packed, into = mm.prepack(b), np.empty((m, n), dtype)
            for fn, block, shape in mm.bound_calls(a, b, into, packed, bias) or []:
                ctypes.CFUNCTYPE(None, *gemm.CALL_ARGTYPES)(fn)(ctypes.addressof(block), ctypes.addressof(shape))
            np.testing.assert_array_equal(into, out)
    finally:
        parallel.set_num_threads(saved)


def test_bias_declined_where_it_is_not_one_row() -> None:
    a, b = rand(4, 3), rand(3, 5)
    assert mm.matmul_bias(a, b, rand(6)) is None  # wrong length
    assert mm.matmul_bias(a, b, rand(10)[::2]) is None  # strided
    assert mm.matmul_bias(a, b, rand(5, dtype=np.float64)) is None  # dtype
    assert mm.matmul_bias(rand(2, 4, 3), rand(2, 3, 5), rand(5)) is None  # a batch of two GEMMs
