"""``tc.scan``: a loop traced once into one node, equal to the unrolled loop."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from strategies import op_names

import tensorc as tc

T_STEPS, BATCH, D_IN, D_H, D_OUT = 64, 3, 5, 8, 4


def rnn_params(seed: int = 0, dtype: str = "float64") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "wx": (rng.standard_normal((D_IN, D_H)) * 0.5).astype(dtype),
        "wh": (rng.standard_normal((D_H, D_H)) * 0.4).astype(dtype),
        "b": (rng.standard_normal(D_H) * 0.1).astype(dtype),
        "wy": rng.standard_normal((D_H, D_OUT)).astype(dtype),
    }


def rnn_scan(p: dict[str, Any], xs: Any, h0: Any, reverse: bool = False) -> tuple[Any, Any]:
    """Elman RNN; the weights are closed over by the body, not passed through the carry."""

    def step(h: tc.Tensor, x: tc.Tensor) -> tuple[tc.Tensor, tc.Tensor]:
        h = tc.tanh(x @ p["wx"] + h @ p["wh"] + p["b"])  # (B, H)
        return h, h @ p["wy"]  # (B, O)

    return tc.scan(step, h0, xs, reverse=reverse)


def rnn_unrolled(p: dict[str, Any], xs: Any, h0: Any, reverse: bool = False) -> tuple[Any, Any]:
    h, ys = h0, []
    steps = range(xs.shape[0] - 1, -1, -1) if reverse else range(xs.shape[0])
    for t in steps:
        h = tc.tanh(xs[t] @ p["wx"] + h @ p["wh"] + p["b"])
        ys.append(h @ p["wy"])
    if reverse:
        ys.reverse()
    return h, tc.stack(ys)


def rnn_numpy(p: dict[str, np.ndarray], xs: np.ndarray, h0: np.ndarray, reverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    h, ys = h0, [None] * len(xs)
    for t in (reversed(range(len(xs))) if reverse else range(len(xs))):
        h = np.tanh(xs[t] @ p["wx"] + h @ p["wh"] + p["b"])
        ys[t] = h @ p["wy"]
    return h, np.stack(ys)


def _data(dtype: str = "float64", steps: int = T_STEPS) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rnn_params(0, dtype), rng.standard_normal((steps, BATCH, D_IN)).astype(dtype), np.zeros((BATCH, D_H), dtype)


def _tensors(tree: Any) -> Any:
    return tc.tree_map(tc.tensor, tree)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_elman_rnn_equals_unrolled_loop(dtype: str, reverse: bool) -> None:
    p, xs, h0 = _data(dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    ref_h, ref_ys = rnn_numpy({k: v.astype(np.float64) for k, v in p.items()}, xs.astype(np.float64), h0, reverse)
    # eager
    h_s, ys_s = rnn_scan(_tensors(p), tc.tensor(xs), tc.tensor(h0), reverse)
    h_u, ys_u = rnn_unrolled(_tensors(p), tc.tensor(xs), tc.tensor(h0), reverse)
    assert ys_s.shape == (T_STEPS, BATCH, D_OUT) and ys_s.dtype.name == dtype
    np.testing.assert_allclose(h_s.numpy(), h_u.numpy(), **tol)
    np.testing.assert_allclose(ys_s.numpy(), ys_u.numpy(), **tol)
    np.testing.assert_allclose(ys_s.numpy(), ref_ys, **tol)
    np.testing.assert_allclose(h_s.numpy(), ref_h, **tol)
    # jit
    jh_s, jys_s = tc.jit(rnn_scan, static_argnums=3)(p, xs, h0, reverse)
    jh_u, jys_u = tc.jit(rnn_unrolled, static_argnums=3)(p, xs, h0, reverse)
    np.testing.assert_allclose(jys_s, jys_u, **tol)
    np.testing.assert_allclose(jh_s, jh_u, **tol)
    np.testing.assert_allclose(jys_s, ys_s.numpy(), **tol)
    np.testing.assert_allclose(jh_s, ref_h, **tol)


def test_scan_is_one_node_whatever_the_length() -> None:
    sizes = {}
    for steps in (8, T_STEPS):
        p, xs, h0 = _data(steps=steps)
        graph = tc.jit(rnn_scan).lower(p, xs, h0).graph
        ops = op_names(graph)
        assert ops.count("scan") == 1
        assert "matmul" not in ops and "tanh" not in ops  # the step lives in the body, once
        body = next(n for n in graph.nodes if n.op == "scan").attrs["body"]
        assert op_names(body).count("matmul") == 3
        sizes[steps] = len(graph.nodes)
        unrolled = op_names(tc.jit(rnn_unrolled).lower(p, xs, h0).graph)
        assert unrolled.count("matmul") == 3 * steps
    assert sizes[8] == sizes[T_STEPS]


def test_captured_weights_become_scan_inputs() -> None:
    p, xs, h0 = _data(steps=6)
    graph = tc.jit(rnn_scan).lower(p, xs, h0).graph
    (scan,) = [n for n in graph.nodes if n.op == "scan"]
    # wx, wh, b, wy are captured from the enclosing trace: the scan's leading (const) inputs.
    assert scan.attrs["n_consts"] == 4 and scan.attrs["n_carry"] == 1 and scan.attrs["length"] == 6
    assert {i.attrs["name"] for i in scan.inputs[:4]} == {"p['wx']", "p['wh']", "p['b']", "p['wy']"}
    # Concrete tensors closed over (eager, or constants under jit) work the same.
    w = tc.tensor(np.array([[2.0]]))
    final, ys = tc.scan(lambda c, x: (c @ w + x, c), tc.tensor(np.ones((1, 1))), tc.tensor(np.ones((3, 1, 1))))
    assert final.tolist() == [[15.0]] and ys.reshape(-1).tolist() == [1.0, 3.0, 7.0]
    jf = tc.jit(lambda c0, xs: tc.scan(lambda c, x: (c @ w + x, c), c0, xs))
    np.testing.assert_array_equal(jf(np.ones((1, 1)), np.ones((3, 1, 1)))[0], [[15.0]])


def test_pytree_carry_xs_and_ys() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))

    def step(carry: dict[str, Any], x: tuple[Any, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        xa, xb = x
        new = {"sum": carry["sum"] + xa * xb, "count": carry["count"] + 1, "pair": (carry["pair"][1], carry["pair"][0])}
        return new, {"prod": xa * xb, "prev": [carry["sum"]]}

    def run(a: Any, b: Any) -> Any:
        init = {"sum": tc.zeros(3, dtype="float64"), "count": tc.tensor(np.int32(0)),
                "pair": (tc.tensor(np.float64(1.0)), tc.tensor(np.float64(2.0)))}
        return tc.scan(step, init, (a, b))

    for final, ys in (run(tc.tensor(a), tc.tensor(b)), tc.jit(run)(a, b)):
        final = tc.tree_map(np.asarray, final)
        ys = tc.tree_map(np.asarray, ys)
        assert set(final) == {"sum", "count", "pair"} and set(ys) == {"prod", "prev"}
        np.testing.assert_allclose(final["sum"], (a * b).sum(0))
        assert final["count"] == 5 and final["count"].dtype == np.int32
        assert (float(final["pair"][0]), float(final["pair"][1])) == (2.0, 1.0)  # swapped an odd number of times
        np.testing.assert_allclose(ys["prod"], a * b)
        assert isinstance(ys["prev"], list)
        np.testing.assert_allclose(ys["prev"][0], np.concatenate([np.zeros((1, 3)), np.cumsum(a * b, 0)[:-1]]))


def test_reverse_and_length_only() -> None:
    xs = np.arange(5.0)
    final, ys = tc.scan(lambda c, x: (c * 10 + x, c), tc.tensor(0.0, "float64"), tc.tensor(xs), reverse=True)
    assert float(final) == 43210.0
    assert ys.tolist() == [4321.0, 432.0, 43.0, 4.0, 0.0]  # ys[t] is the carry when step t ran
    final, ys = tc.scan(lambda c, _: (c * 2, c), tc.tensor(1), length=4)
    assert int(final) == 16 and ys.tolist() == [1, 2, 4, 8]
    jf = tc.jit(lambda c: tc.scan(lambda c, _: (c * 2, None), c, length=4))
    final, ys = jf(np.int64(3))
    assert int(final) == 48 and ys is None


def test_nested_scan() -> None:
    m = np.arange(12.0).reshape(3, 4)

    def row_sums(m: Any) -> Any:
        def outer(total: tc.Tensor, row: tc.Tensor) -> Any:
            inner_total, _ = tc.scan(lambda c, v: (c + v, None), tc.zeros((), dtype=row.dtype), row)
            return total + inner_total, inner_total

        return tc.scan(outer, tc.zeros((), dtype=m.dtype), m)

    for total, per_row in (row_sums(tc.tensor(m)), tc.jit(row_sums)(m)):
        assert float(np.asarray(total)) == m.sum()
        np.testing.assert_array_equal(np.asarray(per_row), m.sum(1))
    graph = tc.jit(row_sums).lower(m).graph
    assert op_names(graph).count("scan") == 1
    assert "@body1" in str(graph)  # the inner body is printed after the outer one


@pytest.mark.parametrize("body,message", [
    (lambda c, x: (c.astype("float64"), x), "changes carry leaf 0 from f32[3] to f64[3]"),
    (lambda c, x: (c.sum(), x), "changes carry leaf 0 from f32[3] to f32[]"),
    (lambda c, x: ((c, c), x), "structure"),
    (lambda c, x: c, "must return a pair"),
])
def test_carry_type_change_is_an_error(body: Any, message: str) -> None:
    init, xs = np.zeros(3, np.float32), np.ones((4, 3), np.float32)
    with pytest.raises(tc.TensorcError, match=re.escape(message)):
        tc.scan(body, tc.tensor(init), tc.tensor(xs))
    with pytest.raises(tc.TensorcError, match=re.escape(message)):
        tc.jit(lambda i, x: tc.scan(body, i, x))(init, xs)


def test_scan_argument_errors() -> None:
    with pytest.raises(tc.TensorcError, match="leading dim"):
        tc.scan(lambda c, x: (c, x), tc.tensor(0.0), (tc.zeros(3), tc.zeros(4)))
    with pytest.raises(tc.TensorcError, match="xs or length"):
        tc.scan(lambda c, x: (c, x), tc.tensor(0.0))
    # A weak Python scalar in the carry keeps the carry's dtype: no error.
    final, _ = tc.scan(lambda c, x: (c * 0.5 + 1, None), tc.tensor(np.float16(0.0)), length=3)
    assert final.dtype == tc.float16 and float(final) == 1.75
