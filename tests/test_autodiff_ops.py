"""Every differentiable primitive's VJP rule against float64 central differences.

The property test is parametrized by the op registry itself, so an op that is
registered as differentiable is checked as soon as it exists, and the suite
fails until ``tests/grad_strategies.py`` has a strategy for its inputs.
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest
from grad_strategies import OP_CASES, OP_SETTINGS, OpCase
from hypothesis import given

import tensorc as tc
from tensorc.frontend.tracing import apply
from tensorc.ir.registry import REGISTRY, OpDef


def _import_every_module() -> list[str]:
    """Ops may be registered anywhere in tensorc: import every module so the registry
    is complete before it is enumerated. Returns the modules that could not be imported
    (an optional dependency such as pycuda missing, or no GPU); ops they would register
    are not seen, so the coverage line names them."""
    failed = []
    for info in pkgutil.walk_packages(tc.__path__, prefix="tensorc.", onerror=failed.append):
        try:
            importlib.import_module(info.name)
        except Exception as e:
            failed.append(f"{info.name} ({type(e).__name__})")
    return failed


UNIMPORTABLE = _import_every_module()


def differentiable_ops(registry: dict[str, OpDef] = REGISTRY) -> list[str]:
    return sorted(name for name, opdef in registry.items() if opdef.differentiable)


def missing_strategies(registry: dict[str, OpDef] = REGISTRY) -> list[str]:
    return [name for name in differentiable_ops(registry) if name not in OP_CASES]


DIFFERENTIABLE = differentiable_ops()


def test_every_differentiable_op_has_a_strategy() -> None:
    ops = differentiable_ops()
    missing = missing_strategies()
    covered = len(ops) - len(missing)
    print(f"autodiff op coverage: {covered}/{len(ops)} registered differentiable ops have a gradcheck strategy "
          f"({100.0 * covered / len(ops):.0f}%)" + (f"; modules not imported: {UNIMPORTABLE}" if UNIMPORTABLE else ""))
    assert not missing, (f"differentiable ops without an input strategy in tests/grad_strategies.py: {missing}; "
                         "add one to OP_CASES so their VJP rules are gradchecked")


def test_a_new_differentiable_op_without_a_strategy_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    before = missing_strategies()
    fake = OpDef("fake_differentiable_op", "elementwise", lambda types, attrs: types[0], lambda ctx, x: x)
    monkeypatch.setitem(REGISTRY, fake.name, fake)
    assert fake.name in differentiable_ops()
    assert missing_strategies() == sorted(before + [fake.name])


def test_strategies_name_only_registered_differentiable_ops() -> None:
    stale = sorted(set(OP_CASES) - set(DIFFERENTIABLE))
    assert not stale, f"strategies for ops that are not registered as differentiable: {stale}"


@pytest.mark.parametrize("op", DIFFERENTIABLE)
def test_vjp_matches_central_differences(op: str) -> None:
    if op not in OP_CASES:
        pytest.fail(f"op {op!r} is registered as differentiable but tests/grad_strategies.py has no strategy for it")

    @OP_SETTINGS
    @given(case=OP_CASES[op])
    def check(case: OpCase) -> None:
        assert tc.gradcheck(case.fn, *case.args)

    check()


# ----------------------------------------------------------------------------- the conventions of rules.py, exactly


def _grad(fn, *args, argnums=0):  # noqa: ANN001, ANN202
    g = tc.grad(fn, argnums=argnums)(*args)
    return tuple(np.asarray(x) for x in g) if isinstance(g, tuple) else np.asarray(g)


def test_max_reduction_splits_ties_evenly() -> None:
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [5.0, 0.0, 4.0]])
    g = _grad(lambda t: tc.max(t, 1).sum(), x)
    np.testing.assert_allclose(g, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3], [1, 0, 0]], rtol=0, atol=1e-15)
    g_all = _grad(lambda t: tc.max(t), np.array([[4.0, 1.0], [4.0, 4.0]]))
    np.testing.assert_allclose(g_all, [[1 / 3, 0], [1 / 3, 1 / 3]], rtol=0, atol=1e-15)


def test_min_reduction_splits_ties_evenly() -> None:
    g = _grad(lambda t: tc.min(t, 0).sum(), np.array([[1.0, 2.0], [1.0, 0.0]]))
    np.testing.assert_allclose(g, [[0.5, 0], [0.5, 1]], rtol=0, atol=1e-15)


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_split_ties_evenly(op: str) -> None:
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([1.0, 0.0, 5.0])
    ga, gb = _grad(lambda x, y: getattr(tc, op)(x, y).sum(), a, b, argnums=(0, 1))
    first = [0.5, 1.0, 0.0] if op == "maximum" else [0.5, 0.0, 1.0]
    np.testing.assert_array_equal(ga, first)
    np.testing.assert_array_equal(gb, 1.0 - np.array(first))


def test_maximum_of_a_value_with_itself_has_gradient_one() -> None:
    np.testing.assert_array_equal(_grad(lambda x: tc.maximum(x, x).sum(), np.array([0.3, -2.0])), [1.0, 1.0])


def test_abs_and_relu_have_gradient_zero_at_zero() -> None:
    x = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(_grad(lambda t: tc.abs(t).sum(), x), [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(_grad(lambda t: tc.relu(t).sum(), x), [0.0, 0.0, 1.0])


def test_pow_exponent_gradient_only_where_base_is_positive() -> None:
    a = np.array([2.0, 0.0, -2.0])
    b = np.array([3.0, 2.0, 2.0])
    ga, gb = _grad(lambda x, y: tc.pow(x, y).sum(), a, b, argnums=(0, 1))
    np.testing.assert_allclose(ga, [12.0, 0.0, -4.0], rtol=1e-15)
    np.testing.assert_allclose(gb, [8.0 * np.log(2.0), 0.0, 0.0], rtol=1e-15)
    assert np.all(np.isfinite(gb))


def test_non_differentiable_ops_pass_no_gradient() -> None:
    x = np.array([0.7, -1.3, 2.5])
    g = _grad(lambda t: (tc.floor(t) + tc.sign(t) + tc.cast(tc.gt(t, 0.0), "float64") + t * 2.0).sum(), x)
    np.testing.assert_array_equal(g, [2.0, 2.0, 2.0])


@pytest.mark.parametrize(("src", "dst"), [("float32", "float64"), ("float64", "float32"), ("float64", "float16"),
                                          ("float32", "bfloat16")])
def test_cast_between_floats_returns_gradient_in_the_input_dtype(src: str, dst: str) -> None:
    """Casts through a narrower float cannot be central-differenced in float64, so
    check them exactly: d/dx sum(cast(x) * w) = w, in x's dtype."""
    x = np.array([0.5, -1.25, 2.0], dtype=src)
    w = np.array([1.0, 2.0, -0.5], dtype=dst if dst in ("float32", "float64") else "float32")
    g = tc.grad(lambda t: (tc.cast(t, dst) * tc.cast(tc.as_tensor(w), dst)).sum().astype("float32"))(x)
    assert g.dtype == tc.as_tensor(x).dtype
    np.testing.assert_array_equal(np.asarray(g), w.astype(src))


def test_gather_with_repeated_indices_accumulates() -> None:
    idx = np.array([0, 2, 2, 2])
    g = _grad(lambda t: tc.gather(t, idx, 0).sum(), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(g, [1.0, 0.0, 3.0])


def test_primitive_apply_is_what_the_strategies_call() -> None:
    """The strategies call primitives through ``apply``; make sure that builds exactly that op."""

    def f(x):  # noqa: ANN001, ANN202
        return apply("sum", [apply("tanh", [x])], {"axes": (0,)})

    graph = tc.jit(f).lower(np.ones(3)).graph
    assert [n.op for n in graph.nodes if n.op != "param"] == ["tanh", "sum"]
