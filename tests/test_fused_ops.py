"""Fused ops: numpy reference == DSL decomposition; gradients and second
derivatives through their VJP rules pass gradcheck; fully masked rows give 0."""

from __future__ import annotations

import numpy as np
import pytest

import tensorc as tc
from tensorc.autodiff.fused import DECOMPOSITIONS
from tensorc.frontend.tracing import apply
from tensorc.ir.node import Attrs
from tensorc.ir.registry import REGISTRY

rng = np.random.default_rng(0)
X = rng.standard_normal((3, 5))
W = rng.standard_normal(5)
B = rng.standard_normal(5)
T = np.array([1, -100, 4])
Q = rng.standard_normal((2, 4, 3))
K = rng.standard_normal((2, 5, 3))
V = rng.standard_normal((2, 5, 6))
BOOL_MASK = rng.random((2, 4, 5)) > 0.5
BOOL_MASK[0, 1] = False  # one fully masked row
ADD_MASK = rng.standard_normal((2, 4, 5))

LN = dict(n_axes=1, eps=1e-5, has_weight=True, has_bias=True)
XENT = dict(ignore_index=-100, reduction="none")
XENT_KINDS = [dict(ignore_index=-100, reduction=r) for r in ("none", "sum", "mean")] + [dict(ignore_index=None, reduction="mean")]
ATTN = {
    "bool": (dict(scale=0.5, causal=False, mask_kind="bool"), [BOOL_MASK]),
    "causal": (dict(scale=0.5, causal=True, mask_kind="none"), []),
    "add": (dict(scale=0.5, causal=False, mask_kind="add"), [ADD_MASK]),
}


def _both(op: str, attrs: dict, *arrays: np.ndarray) -> tuple:
    ts = [tc.tensor(a) for a in arrays]
    ref = apply(op, ts, attrs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    dec = DECOMPOSITIONS[op](Attrs(attrs), *ts)
    assert len(ref) == len(dec)
    for r, d in zip(ref, dec):
        assert r.shape == d.shape and r.dtype == d.dtype
        np.testing.assert_allclose(r.numpy(), d.numpy(), atol=1e-10, rtol=1e-10)
    return ref


def test_every_fused_op_has_a_decomposition_and_vjp():
    fused = [name for name, op in REGISTRY.items() if op.kind == "fused"]
    assert len(fused) == 6
    for name in fused:
        assert name in DECOMPOSITIONS, name
        assert REGISTRY[name].vjp is not None, name


def test_layernorm_reference_matches_decomposition():
    y, mean, rstd = _both("fused_layernorm", LN, X, W, B)
    np.testing.assert_allclose(mean.numpy(), X.mean(-1))
    _both("fused_layernorm_bwd", LN, rng.standard_normal((3, 5)), X, mean.numpy(), rstd.numpy(), W)


@pytest.mark.parametrize("attrs", XENT_KINDS, ids=str)
def test_softmax_xent_reference_matches_decomposition(attrs):
    targets = T if attrs["ignore_index"] is not None else np.array([1, 0, 4])
    loss, lse = _both("fused_softmax_xent", attrs, X, targets)
    logp = X - np.log(np.exp(X).sum(-1, keepdims=True))
    rows = -logp[np.arange(3), np.where(targets >= 0, targets, 0)] * (targets >= 0)
    expected = {"none": rows, "sum": rows.sum(), "mean": rows.sum() / (targets >= 0).sum()}[attrs["reduction"]]
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)
    g = rng.standard_normal(3) if attrs["reduction"] == "none" else np.array(0.7)
    (d,) = _both("fused_softmax_xent_bwd", attrs, g, X, targets, lse.numpy())
    if attrs["ignore_index"] is not None:
        assert np.all(d.numpy()[1] == 0.0)


@pytest.mark.parametrize("kind", sorted(ATTN))
def test_attention_reference_matches_decomposition(kind):
    attrs, mask = ATTN[kind]
    o, lse = _both("fused_attention", attrs, Q, K, V, *mask)
    _both("fused_attention_bwd", attrs, rng.standard_normal((2, 4, 6)), Q, K, V, o.numpy(), lse.numpy(), *mask)


def test_fully_masked_row_gives_zero_not_nan():
    attrs, mask = ATTN["bool"]
    o, lse = apply("fused_attention", [tc.tensor(Q), tc.tensor(K), tc.tensor(V), tc.tensor(BOOL_MASK)], attrs)
    assert np.all(o.numpy()[0, 1] == 0.0) and lse.numpy()[0, 1] == -np.inf
    grads = tc.grad(lambda q, k, v: apply("fused_attention", [q, k, v, tc.tensor(BOOL_MASK)], attrs)[0].sum(),
                    argnums=(0, 1, 2))(Q, K, V)
    for g in grads:
        assert np.isfinite(g.numpy()).all()
    assert np.all(grads[0].numpy()[0, 1] == 0.0)


def test_layernorm_gradients_first_and_second_order():
    def f(x, w, b):
        return apply("fused_layernorm", [tc.as_tensor(x), tc.as_tensor(w), tc.as_tensor(b)], LN)[0]

    assert tc.gradcheck(f, X, W, B)
    assert tc.gradgradcheck(f, X, W, B)


def test_layernorm_gradient_through_saved_statistics():
    # A cotangent on mean/rstd takes the decomposition path; it must still be right.
    def f(x, w, b):
        y, mean, rstd = apply("fused_layernorm", [tc.as_tensor(x), tc.as_tensor(w), tc.as_tensor(b)], LN)
        return y.sum() + (mean * 3.0).sum() + rstd.sum()

    assert tc.gradcheck(f, X, W, B)


@pytest.mark.parametrize("attrs", XENT_KINDS, ids=str)
def test_softmax_xent_gradients_first_and_second_order(attrs):
    targets = T if attrs["ignore_index"] is not None else np.array([1, 0, 4])

    def f(x):
        return apply("fused_softmax_xent", [tc.as_tensor(x), tc.tensor(targets)], attrs)[0]

    assert tc.gradcheck(f, X)
    assert tc.gradgradcheck(f, X)


@pytest.mark.parametrize("kind", sorted(ATTN))
def test_attention_gradients_first_and_second_order(kind):
    attrs, mask = ATTN[kind]

    def f(q, k, v, *m):
        return apply("fused_attention", [tc.as_tensor(q), tc.as_tensor(k), tc.as_tensor(v), *[tc.as_tensor(e) for e in m]],
                     attrs)[0]

    assert tc.gradcheck(f, Q, K, V, *mask)
    assert tc.gradgradcheck(f, Q, K, V, *mask)


def test_fused_costs_are_counted():
    q, k, v = (tc.tensor(a.astype(np.float32)) for a in (Q, K, V))
    with_graph = tc.jit(lambda q, k, v: apply("fused_attention", [q, k, v], ATTN["causal"][0])[0]).lower(q.numpy(), k.numpy(), v.numpy())
    node = next(n for n in with_graph.graph.nodes if n.op == "fused_attention")
    flops, nbytes = REGISTRY["fused_attention"].cost(node)
    assert flops >= 2 * 2 * 4 * 5 * (3 + 6)
    assert nbytes == 4 * (Q.size + K.size + V.size) + 4 * (2 * 4 * 6) + 4 * (2 * 4)
