"""The user-facing behaviour of tc.grad, tc.value_and_grad, tc.vjp, tc.gradcheck and tc.gradgradcheck."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from grad_strategies import floats
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorc as tc
import tensorc.nn.functional as F
from tensorc.frontend import ops as ops
from tensorc.ir.registry import REGISTRY

X = np.array([0.3, -1.2, 2.0])
Y = np.array([1.5, 0.25, -0.5])


def arr(t: Any) -> np.ndarray:
    return np.asarray(t)


# ----------------------------------------------------------------------------- accumulation and zeros


def test_fan_out_accumulates() -> None:
    g = tc.grad(lambda x: (x * x + tc.sin(x) + x).sum())(X)
    np.testing.assert_allclose(arr(g), 2 * X + np.cos(X) + 1, rtol=1e-14)


def test_fan_out_through_matmul_and_broadcasting_accumulates() -> None:
    w = np.array([[1.0, 2.0], [3.0, -1.0]])
    # w used twice in one matmul, and a broadcast row added to every row: its gradient sums the rows.
    gw, gb = tc.grad(lambda w_, b_: ((w_ @ w_) + b_).sum(), (0, 1))(w, np.array([0.5, -0.5]))
    ones = np.ones((2, 2))
    np.testing.assert_allclose(arr(gw), ones @ w.T + w.T @ ones, rtol=1e-14)
    np.testing.assert_allclose(arr(gb), [2.0, 2.0])


def test_unused_inputs_get_zeros_of_their_shape_and_dtype() -> None:
    gx, gy, gz = tc.grad(lambda x, y, z: (x * 2.0).sum(), (0, 1, 2))(X, np.ones((2, 2), np.float32), np.float64(3.0))
    np.testing.assert_array_equal(arr(gx), [2.0, 2.0, 2.0])
    assert gy.shape == (2, 2) and gy.dtype == tc.float32 and not arr(gy).any()
    assert gz.shape == () and gz.dtype == tc.float64 and float(gz) == 0.0


def test_output_independent_of_input_gives_zero_gradient() -> None:
    g = tc.grad(lambda x: tc.sum(tc.ones(3, dtype="float64")))(X)
    np.testing.assert_array_equal(arr(g), np.zeros(3))


def test_gradient_has_the_input_dtype() -> None:
    for dt in ("float32", "float64"):
        g = tc.grad(lambda x: tc.tanh(x).sum())(X.astype(dt))
        assert g.dtype == tc.as_tensor(X.astype(dt)).dtype
    assert tc.grad(lambda x: tc.tanh(x))(0.0).dtype == tc.float32  # a Python float is a float32 scalar


def test_identity_and_constant_functions() -> None:
    assert float(tc.grad(lambda x: x)(np.float64(2.0))) == 1.0
    assert float(tc.grad(lambda x: 3.0)(np.float64(2.0))) == 0.0


def test_one_value_returned_twice_gets_both_cotangents() -> None:
    def f(x: Any) -> Any:
        t = tc.tanh(x)
        return t, t

    _, back = tc.vjp(f, np.array([0.5]))
    (g,) = back((np.array([1.0]), np.array([2.0])))
    np.testing.assert_allclose(arr(g), [3 * (1 - np.tanh(0.5) ** 2)], rtol=1e-14)


def test_nested_grads_do_not_confuse_their_variables() -> None:
    """d/dx [x * d/dy (x + y)] = 1 (perturbation confusion would give 2)."""
    one = np.float64(1.0)
    assert float(tc.grad(lambda x: x * tc.grad(lambda y: x + y)(one))(np.float64(2.0))) == 1.0
    # d/dx [d/dy (x * y)] = d/dx x = 1
    assert float(tc.grad(lambda x: tc.grad(lambda y: x * y)(np.float64(3.0)))(np.float64(2.0))) == 1.0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_half_and_single_precision_gradients_keep_their_dtype(dtype: str) -> None:
    x = tc.tensor([1.0, -2.0, 0.5], dtype)
    g = tc.grad(lambda t: (t * t).sum().astype("float32"))(x)
    assert g.dtype == x.dtype
    np.testing.assert_allclose(np.asarray(g).astype(np.float32), [2.0, -4.0, 1.0])


def test_gradient_through_a_scan_over_token_ids() -> None:
    """The RNN language-model pattern: integer xs pick rows of a captured embedding."""
    rng = np.random.default_rng(6)
    emb, w, ids = rng.standard_normal((5, 3)), rng.standard_normal((3, 3)) * 0.5, np.array([1, 4, 4, 0])

    def lm(emb_: Any, w_: Any, ids_: Any) -> Any:
        h, ys = tc.scan(lambda h, i: (tc.tanh(h @ w_ + emb_[i]), h.sum()), tc.zeros(3, dtype="float64"), ids_)
        return (h * h).sum() + ys.sum()

    assert tc.gradcheck(lm, emb, w, ids)
    g_emb = arr(tc.grad(lm)(emb, w, ids))
    assert not g_emb[[2, 3]].any()  # rows no id picks get no gradient
    np.testing.assert_allclose(arr(tc.grad(tc.jit(lm))(emb, w, ids)), g_emb, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------- integer inputs


def test_integer_argument_in_argnums_raises_dtype_error_naming_it() -> None:
    def f(x: Any, steps: Any) -> Any:
        return (x * tc.cast(steps, "float64")).sum()

    with pytest.raises(tc.DTypeError, match=r"argument steps is i64\[3\].*integer and bool inputs have no gradient"):
        tc.grad(f, argnums=(0, 1))(X, np.arange(3))
    g = tc.grad(f)(X, np.arange(3))  # differentiating x alone is fine: the int argument is just data
    np.testing.assert_array_equal(arr(g), [0.0, 1.0, 2.0])


def test_integer_leaf_of_a_pytree_raises_dtype_error_naming_its_path() -> None:
    def loss(params: Any) -> Any:
        return (params["w"] * tc.cast(params["n"], "float64")).sum()

    with pytest.raises(tc.DTypeError, match=r"argument params\['n'\] is i64\[\]"):
        tc.grad(loss)({"w": X, "n": np.int64(2)})


def test_bool_argument_raises_dtype_error() -> None:
    with pytest.raises(tc.DTypeError, match="argument mask"):
        tc.grad(lambda mask: tc.where(mask, 1.0, 0.0).sum())(np.array([True, False]))


def test_vjp_gives_none_for_integer_primals() -> None:
    out, back = tc.vjp(lambda x, idx: tc.gather(x, idx), X, np.array([2, 2, 0]))
    gx, gidx = back(np.ones(3))
    assert gidx is None
    np.testing.assert_array_equal(arr(gx), [1.0, 0.0, 2.0])


# ----------------------------------------------------------------------------- outputs


def test_grad_of_a_non_scalar_output_raises_a_clear_error() -> None:
    with pytest.raises(tc.TensorcError, match=r"must return a float scalar, got f64\[3\]; use tc.vjp"):
        tc.grad(lambda x: x * 2.0)(X)


def test_grad_of_an_integer_output_raises() -> None:
    with pytest.raises(tc.TensorcError, match=r"must return a float scalar, got i64\[\]"):
        tc.grad(lambda x: tc.argmax(x))(X)


def test_has_aux_returns_aux_untouched() -> None:
    g, aux = tc.grad(lambda x: ((x * x).sum(), {"double": x * 2.0, "n": 7}), has_aux=True)(X)
    np.testing.assert_allclose(arr(g), 2 * X)
    np.testing.assert_allclose(arr(aux["double"]), 2 * X)
    assert aux["n"] == 7
    (value, aux2), g2 = tc.value_and_grad(lambda x: ((x * x).sum(), x.sum()), has_aux=True)(X)
    np.testing.assert_allclose(float(value), (X * X).sum())
    np.testing.assert_allclose(float(aux2), X.sum())
    np.testing.assert_allclose(arr(g2), 2 * X)


def test_has_aux_needs_a_pair() -> None:
    with pytest.raises(tc.TensorcError, match="has_aux=True: fn must return"):
        tc.grad(lambda x: (x * x).sum(), has_aux=True)(X)


def test_value_and_grad_returns_the_value() -> None:
    v, g = tc.value_and_grad(lambda x: tc.exp(x).sum())(X)
    np.testing.assert_allclose(float(v), np.exp(X).sum(), rtol=1e-14)
    np.testing.assert_allclose(arr(g), np.exp(X), rtol=1e-14)


def test_vjp_of_a_non_scalar_output() -> None:
    out, back = tc.vjp(lambda a, b: a * b, X, Y)
    np.testing.assert_allclose(arr(out), X * Y)
    ga, gb = back(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(arr(ga), Y * [1, 2, 3])
    np.testing.assert_allclose(arr(gb), X * [1, 2, 3])
    with pytest.raises(tc.TensorcError, match="cotangent"):
        back(np.ones(2))


# ----------------------------------------------------------------------------- argnums and pytrees


def test_argnums_tuple_and_negative_argnums() -> None:
    def f(a: Any, b: Any, c: Any) -> Any:
        return (a * b * b + c).sum()

    ga, gc = tc.grad(f, argnums=(0, 2))(X, Y, X)
    np.testing.assert_allclose(arr(ga), Y * Y)
    np.testing.assert_allclose(arr(gc), np.ones(3))
    (gb,) = tc.grad(f, argnums=(1,))(X, Y, X)
    np.testing.assert_allclose(arr(gb), 2 * X * Y)
    np.testing.assert_allclose(arr(tc.grad(f, argnums=-2)(X, Y, X)), 2 * X * Y)
    with pytest.raises(tc.TensorcError, match="argnums 3 is out of range"):
        tc.grad(f, argnums=3)(X, Y, X)


def test_pytree_of_params_gives_grads_of_the_same_structure() -> None:
    params = {"layer": {"w": np.array([[0.5, -1.0], [2.0, 0.1]]), "b": np.array([0.1, 0.2])},
              "scales": [np.array(1.5), np.array([2.0, 3.0])]}

    def loss(p: Any, x: Any) -> Any:
        h = tc.tanh(x @ p["layer"]["w"] + p["layer"]["b"])
        return (h * p["scales"][0] * p["scales"][1]).sum()

    x = np.array([[1.0, -1.0], [0.5, 0.25]])
    g = tc.grad(loss)(params, x)
    assert tc.tree_flatten(g)[1] == tc.tree_flatten(params)[1]
    for gl, pl in zip(tc.tree_flatten(g)[0], tc.tree_flatten(params)[0]):
        assert gl.shape == pl.shape and gl.dtype == tc.float64
    # Each leaf against a finite difference of that leaf.
    assert tc.gradcheck(loss, params, x)


# ----------------------------------------------------------------------------- composition with jit and itself


def _loss(params: Any, x: Any, y: Any) -> Any:
    h = tc.tanh(x @ params["w1"] + params["b1"])
    return F.cross_entropy(h @ params["w2"], y)


def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"w1": rng.standard_normal((4, 5)), "b1": rng.standard_normal(5), "w2": rng.standard_normal((5, 3))}


def test_grad_composes_with_jit_in_both_orders() -> None:
    params, x, y = _params(), np.random.default_rng(4).standard_normal((6, 4)), np.array([0, 2, 1, 1, 0, 2])
    eager = tc.grad(_loss)(params, x, y)
    jit_of_grad = tc.jit(tc.grad(_loss))
    grad_of_jit = tc.grad(tc.jit(_loss))
    for other in (jit_of_grad(params, x, y), grad_of_jit(params, x, y), jit_of_grad(params, x, y)):
        assert sorted(other) == sorted(eager)
        for k in eager:
            np.testing.assert_allclose(arr(other[k]), arr(eager[k]), rtol=1e-12, atol=1e-15, err_msg=k)
    assert jit_of_grad.compile_count == 1  # the second call reuses the compiled gradient


def test_value_and_grad_under_jit_matches_eager() -> None:
    params, x, y = _params(), np.random.default_rng(5).standard_normal((2, 4)), np.array([1, 2])
    v1, g1 = tc.value_and_grad(_loss)(params, x, y)
    v2, g2 = tc.jit(tc.value_and_grad(_loss))(params, x, y)
    np.testing.assert_allclose(float(v1), float(v2), rtol=1e-13)
    for k in g1:
        np.testing.assert_allclose(arr(g1[k]), arr(g2[k]), rtol=1e-12, atol=1e-15)


@settings(deadline=None, max_examples=30)
@given(x=floats(-2.0, 2.0))
def test_grad_of_grad_is_the_analytic_second_derivative(x: float) -> None:
    def f(t: Any) -> Any:
        return tc.sin(t) * t * t + tc.exp(t * 0.5)

    d2 = tc.grad(tc.grad(f))(np.float64(x))
    expected = 2 * math.sin(x) + 4 * x * math.cos(x) - x * x * math.sin(x) + 0.25 * math.exp(0.5 * x)
    np.testing.assert_allclose(float(d2), expected, rtol=1e-10, atol=1e-12)


def test_third_derivative_and_jit_of_grad_of_grad() -> None:
    def f(t: Any) -> Any:
        return tc.tanh(t)

    x = np.float64(0.4)
    th = math.tanh(0.4)
    d3 = tc.grad(tc.grad(tc.grad(f)))(x)
    np.testing.assert_allclose(float(d3), -2 * (1 - th * th) * (1 - 3 * th * th), rtol=1e-12)
    np.testing.assert_allclose(float(tc.jit(tc.grad(tc.grad(f)))(x)), -2 * th * (1 - th * th), rtol=1e-12)


# ----------------------------------------------------------------------------- gradcheck itself


def test_gradcheck_passes_and_returns_true() -> None:
    assert tc.gradcheck(lambda a, b: tc.tanh(a) * b, X, Y) is True
    assert tc.gradgradcheck(lambda a, b: tc.tanh(a) * b, X, Y) is True


def test_gradcheck_failure_names_the_input_the_element_and_both_values(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong_tanh(c: Any, g: Any) -> tuple[Any, ...]:  # the derivative of tanh is 1 - y², not 1 - 2y²
        y = c.out
        return (ops.mul(g, ops.sub(1.0, ops.mul(ops.mul(y, y), 2.0))),)

    monkeypatch.setattr(REGISTRY["tanh"], "vjp", wrong_tanh)
    with pytest.raises(tc.GradcheckError) as info:
        tc.gradcheck(lambda a, b: a * tc.tanh(b), X, Y)
    msg = str(info.value)
    assert "input arg1" in msg  # a is fine; b, the second argument, goes through tanh
    assert "element (0,)" in msg
    assert "analytic" in msg and "numeric" in msg and "atol" in msg
    assert tc.gradcheck(lambda a, b: a * tc.tanh(b), X, Y, raise_exception=False) is False
    with pytest.raises(tc.GradcheckError, match=r"input arg0\['b'\] element \(1,\)"):
        tc.gradcheck(lambda p: tc.tanh(p["b"]) + p["a"], {"a": np.array([1.0, 2.0]), "b": np.array([0.0, 0.7])})


def test_gradcheck_failure_is_an_assertion_error_and_a_tensorc_error() -> None:
    assert issubclass(tc.GradcheckError, AssertionError) and issubclass(tc.GradcheckError, tc.TensorcError)


def test_gradgradcheck_catches_a_rule_that_is_right_only_at_first_order(monkeypatch: pytest.MonkeyPatch) -> None:
    def frozen(x: Any) -> Any:  # x's value (to 1e-12), through floor, which passes no gradient
        return ops.div(ops.floor(ops.mul(x, 2.0**40)), 2.0**40)

    monkeypatch.setattr(REGISTRY["sin"], "vjp", lambda c, g: (ops.mul(g, ops.cos(frozen(c.inputs[0]))),))
    x = np.array([0.3, -0.4])
    assert tc.gradcheck(lambda t: tc.sin(t), x)
    with pytest.raises(tc.GradcheckError, match="input arg0"):
        tc.gradgradcheck(lambda t: tc.sin(t), x)


def test_gradcheck_in_float32_warns() -> None:
    with pytest.warns(UserWarning, match="gradcheck in float32"):
        assert tc.gradcheck(lambda t: t * t, np.array([0.5, 1.0], np.float32), dtype="float32")


def test_gradcheck_in_float64_converts_float32_inputs_without_warning(recwarn: pytest.WarningsRecorder) -> None:
    assert tc.gradcheck(lambda t: tc.tanh(t), np.array([0.5, 1.0], np.float32))
    assert not [w for w in recwarn if "gradcheck" in str(w.message)]


def test_gradcheck_rejects_an_unknown_dtype_and_no_float_inputs() -> None:
    with pytest.raises(tc.TensorcError, match="dtype must be one of"):
        tc.gradcheck(lambda t: t, X, dtype="float16")
    with pytest.raises(tc.TensorcError, match="no floating-point inputs"):
        tc.gradcheck(lambda t: tc.cast(t, "float64"), np.arange(3))


def test_gradcheck_skips_integer_inputs_in_any_position() -> None:
    """Integer inputs get no gradient; the float inputs after them must still line up with theirs."""
    idx = np.array([1, 0, 1])
    assert tc.gradcheck(lambda i, x, j, y: tc.gather(x, i) * tc.gather(y, j), idx, X, np.array([2, 2, 0]), Y)


def test_tolerance_tables_in_the_docs_match_the_code() -> None:
    """docs/autodiff.md and check.py's docstring show TOLERANCES; they must not drift from it."""
    from tensorc.autodiff import TOLERANCES, check

    docs = (Path(__file__).resolve().parent.parent / "docs" / "autodiff.md").read_text()
    want = {name: (t.eps, t.atol, t.rtol) for name, t in TOLERANCES.items()}
    for where, text in (("docs/autodiff.md", docs), ("check.py docstring", check.__doc__ or "")):
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("| float")]
        assert {r[0]: tuple(float(c) for c in r[1:4]) for r in rows} == want, where


# ----------------------------------------------------------------------------- a missing rule


def test_a_differentiable_op_without_a_vjp_rule_raises_naming_the_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(REGISTRY["sin"], "vjp", None)
    with pytest.raises(tc.TensorcError, match=r"no VJP rule is registered for op 'sin'") as info:
        tc.grad(lambda x: tc.sin(x).sum())(X)
    assert "test_autodiff_api.py" in str(info.value)  # the user's line where sin was traced
    # Ops that do not reach the loss do not need a rule.
    np.testing.assert_array_equal(arr(tc.grad(lambda x: (x * 2.0).sum() + tc.sin(Y).sum())(X)), [2.0, 2.0, 2.0])


def test_gradient_stops_at_non_differentiable_ops() -> None:
    g = tc.grad(lambda x: (x * tc.cast(tc.argmax(x), "float64")).sum())(X)
    np.testing.assert_array_equal(arr(g), [2.0, 2.0, 2.0])


@settings(deadline=None, max_examples=20)
@given(st.lists(floats(-3, 3), min_size=1, max_size=5))
def test_grad_is_linear_in_the_loss(values: list[float]) -> None:
    x = np.array(values)
    g1 = arr(tc.grad(lambda t: (tc.sin(t) * 3.0 + tc.exp(t * 0.1)).sum())(x))
    g2 = arr(tc.grad(lambda t: tc.sin(t).sum())(x)) * 3.0 + arr(tc.grad(lambda t: tc.exp(t * 0.1).sum())(x))
    np.testing.assert_allclose(g1, g2, rtol=1e-13, atol=1e-13)


def test_backward_nodes_point_at_the_forward_line() -> None:
    def f(x: Any) -> Any:
        y = tc.tanh(x)  # the forward line the backward of tanh must name
        return (y * y).sum()

    import inspect

    forward_line = inspect.getsourcelines(f)[1] + 1
    graph = tc.jit(tc.grad(f)).lower(np.ones(3, np.float32)).graph
    tanh_backward = [n for n in graph.nodes if n.op == "sub" and n.loc is not None]  # 1 - y*y in tanh's VJP
    assert tanh_backward and all(n.loc.lineno == forward_line for n in tanh_backward)
