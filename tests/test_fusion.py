"""Pattern fusion: which spellings are recognised, which near-misses are not,
and that fused programs (forward and backward) compute what unfused ones do."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

import tensorc as tc
import tensorc.nn.functional as F
from tensorc.backends.reference import evaluate
from tensorc.passes import cse, optimize, simplify
from tensorc.passes.fusion import apply_matches
from tensorc.passes.manager import PassManager

rng = np.random.default_rng(0)
B, H, T, D = 2, 3, 6, 4
Q, K, V = (rng.standard_normal((B, H, T, D)).astype(np.float32) for _ in range(3))
X = rng.standard_normal((5, 8)).astype(np.float32)
W = (1 + 0.1 * rng.standard_normal(8)).astype(np.float32)
BIAS = (0.1 * rng.standard_normal(8)).astype(np.float32)
TARGETS = np.array([1, 2, -100, 3, 7])


def fused_patterns(fn, *args) -> tuple[list[str], object, object]:
    """Trace, simplify + CSE, fuse; return the patterns found and both graphs."""
    graph = PassManager([("simplify", simplify), ("cse", cse)]).run(tc.jit(fn).lower(*args).graph)
    found: list[str] = []
    fused = apply_matches(graph, found=found)
    return found, graph, fused


def assert_same_results(fn, *args, rtol=1e-5, atol=1e-5):
    found, graph, fused = fused_patterns(fn, *args)
    for a, b in zip(evaluate(graph, args), evaluate(fused, args)):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)
    return found


def _causal_mask_bool():
    return tc.tril(tc.ones(T, T)) > 0


ATTENTION_VARIANTS = {
    "library_causal": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    "library_plain": lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
    "scale_on_scores_div": lambda q, k, v: tc.softmax(q @ k.transpose(-2, -1) / math.sqrt(D), -1) @ v,
    "scale_on_q": lambda q, k, v: tc.softmax((q * D ** -0.5) @ k.transpose(-2, -1), -1) @ v,
    "scale_on_k": lambda q, k, v: tc.softmax(q @ (k.transpose(-2, -1) * D ** -0.5), -1) @ v,
    "causal_iota_where": lambda q, k, v: tc.softmax(
        tc.where(tc.iota((T, T), 1) <= tc.iota((T, T), 0), q @ k.transpose(-2, -1) * 0.5, float("-inf")), -1) @ v,
    "causal_tril_constant_where": lambda q, k, v: tc.softmax(
        tc.where(_causal_mask_bool(), q @ k.mT * 0.5, float("-inf")), -1) @ v,
    "causal_additive_large_negative": lambda q, k, v: tc.softmax(
        q @ k.mT * 0.5 + tc.where(tc.tril(tc.ones(T, T)) > 0, 0.0, -1e9), -1) @ v,
    "causal_masked_fill_-1e9_where": lambda q, k, v: tc.softmax(
        tc.where(tc.tril(tc.ones(T, T)) > 0, q @ k.mT * 0.5, -1e9), -1) @ v,
    "multi_head_from_reshape": lambda q, k, v: (
        tc.softmax(q.reshape(B, T, H, D).permute(0, 2, 1, 3) @ k.reshape(B, T, H, D).permute(0, 2, 3, 1) * 0.5, -1)
        @ v.reshape(B, T, H, D).permute(0, 2, 1, 3)),
}


@pytest.mark.parametrize("name", sorted(ATTENTION_VARIANTS))
def test_attention_variants_are_recognised(name):
    fn = ATTENTION_VARIANTS[name]
    args = (Q, K, V)
    found = assert_same_results(fn, *args)
    assert found == ["attention"], found


def test_causal_variants_become_the_causal_flag():
    for name in ("library_causal", "causal_iota_where", "causal_tril_constant_where", "causal_additive_large_negative"):
        _, _, fused = fused_patterns(ATTENTION_VARIANTS[name], Q, K, V)
        node = next(n for n in fused.nodes if n.op == "fused_attention")
        assert node.attrs["causal"] and node.attrs["mask_kind"] == "none", name
        assert len(node.inputs) == 3


def test_data_dependent_masks_are_inputs():
    mask = rng.random((B, H, T, T)) > 0.3
    found, _, fused = fused_patterns(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), Q, K, V, mask)
    assert found == ["attention"]
    node = next(n for n in fused.nodes if n.op == "fused_attention")
    assert node.attrs["mask_kind"] == "bool"
    add = rng.standard_normal((B, H, T, T)).astype(np.float32)
    found = assert_same_results(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), Q, K, V, add)
    assert found == ["attention"]


NEAR_MISSES = {
    "softmax_over_wrong_axis": lambda q, k, v: tc.softmax(q @ k.mT * 0.5, -2) @ v,
    "probabilities_also_returned": lambda q, k, v: (tc.softmax(q @ k.mT, -1) @ v, tc.softmax(q @ k.mT, -1)),
    "exp_without_normalising": lambda q, k, v: tc.exp(q @ k.mT) @ v,
    "normalised_by_wrong_sum": lambda q, k, v: (tc.exp(q @ k.mT) / tc.exp(q @ k.mT).sum(-2, keepdims=True)) @ v,
    "scores_plus_data_scale": lambda q, k, v: tc.softmax(q @ k.mT * q[..., :1], -1) @ v,
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_attention_near_misses_are_not_fused(name):
    found = assert_same_results(NEAR_MISSES[name], Q, K, V)
    assert "attention" not in found


LAYERNORM_VARIANTS = {
    "library_affine": lambda x, w, b: F.layer_norm(x, 8, w, b),
    "library_plain": lambda x, w, b: F.layer_norm(x, 8),
    "sqrt_div": lambda x, w, b: (x - x.mean(-1, keepdims=True)) / tc.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b,
    "rsqrt_mean_times_inverse_n": lambda x, w, b: (x - x.sum(-1, keepdims=True) * (1 / 8)) * tc.rsqrt(
        ((x - x.sum(-1, keepdims=True) * (1 / 8)) ** 2).mean(-1, keepdims=True) + 1e-6) * w,
    "reciprocal_of_sqrt": lambda x, w, b: (x - x.mean(-1, keepdims=True)) * (1.0 / tc.sqrt(
        ((x - x.mean(-1, keepdims=True)) ** 2).mean(-1, keepdims=True) + 1e-5)) + b,
}


@pytest.mark.parametrize("name", sorted(LAYERNORM_VARIANTS))
def test_layernorm_variants_are_recognised(name):
    found = assert_same_results(LAYERNORM_VARIANTS[name], X, W, BIAS)
    assert found == ["layernorm"], found


def test_layernorm_affine_is_absorbed():
    _, _, fused = fused_patterns(LAYERNORM_VARIANTS["library_affine"], X, W, BIAS)
    ops = Counter(n.op for n in fused.nodes)
    assert ops["fused_layernorm"] == 1 and ops["mul"] == 0 and ops["add"] == 0


def test_layernorm_near_misses():
    # normalising over the wrong axis, or the variance of something else
    found = assert_same_results(lambda x: (x - x.mean(0, keepdims=True)) * tc.rsqrt(x.var(0, keepdims=True) + 1e-5), X)
    assert found == []
    found = assert_same_results(lambda x: (x - x.mean(-1, keepdims=True)) * tc.rsqrt((x * x).mean(-1, keepdims=True) + 1e-5), X)
    assert found == []


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_is_recognised(reduction):
    logits = rng.standard_normal((5, 9)).astype(np.float32)
    found = assert_same_results(lambda x, t: F.cross_entropy(x, t, reduction=reduction), logits, TARGETS)
    assert found == ["softmax_xent"]
    found = assert_same_results(lambda x, t: F.cross_entropy(x, t, ignore_index=-1, reduction=reduction), logits, np.abs(TARGETS) % 9)
    assert found == ["softmax_xent"]


def test_cross_entropy_over_a_batch_of_sequences():
    logits = rng.standard_normal((2, 3, 7)).astype(np.float32)
    t = rng.integers(0, 7, (2, 3))
    assert assert_same_results(lambda x, t: F.cross_entropy(x, t), logits, t) == ["softmax_xent"]


def _block(p, x):
    b, t, c = x.shape
    h = F.layer_norm(x, c, p["ln_w"], p["ln_b"])
    q, k, v = tc.split(h @ p["w_qkv"], c, -1)
    q, k, v = (z.reshape(b, t, 2, c // 2).permute(0, 2, 1, 3) for z in (q, k, v))  # (B, nh, T, hs)
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True).permute(0, 2, 1, 3).reshape(b, t, c)
    x = x + a @ p["w_o"]
    return x + F.gelu(F.layer_norm(x, c) @ p["w_fc"], approximate="tanh") @ p["w_proj"]


def _loss(p, x, t):
    logits = _block(p, x) @ p["w_out"]
    return F.cross_entropy(logits.reshape(-1, 5), t.reshape(-1))


def _params(c=8, dtype=np.float64):
    r = np.random.default_rng(1)
    shapes = {"ln_w": (c,), "ln_b": (c,), "w_qkv": (c, 3 * c), "w_o": (c, c), "w_fc": (c, 4 * c), "w_proj": (4 * c, c), "w_out": (c, 5)}
    return {k: (r.standard_normal(s) * (0.3 if len(s) == 2 else 0.1) + (1.0 if k == "ln_w" else 0.0)).astype(dtype)
            for k, s in shapes.items()}


def test_gpt_block_gradients_are_fused_and_correct():
    p = _params()
    x = rng.standard_normal((2, 6, 8))
    t = rng.integers(0, 5, (2, 6))
    lowered = tc.jit(tc.value_and_grad(_loss)).lower(p, x, t)
    ops = Counter(n.op for n in lowered.graph.nodes)
    assert ops["fused_attention"] == 1 and ops["fused_attention_bwd"] == 1
    assert ops["fused_layernorm"] == 2 and ops["fused_layernorm_bwd"] == 2
    assert ops["fused_softmax_xent"] == 1 and ops["fused_softmax_xent_bwd"] == 1
    # no T x T value anywhere in the fused forward + backward program
    assert not any(not n.is_tuple and n.shape[-2:] == (6, 6) for n in lowered.optimized.nodes)
    assert tc.gradcheck(lambda p: _loss(p, x, t), p)


def test_fused_and_unfused_gradients_agree_in_float32():
    p = _params(dtype=np.float32)
    x = rng.standard_normal((2, 6, 8)).astype(np.float32)
    t = rng.integers(0, 5, (2, 6))
    fused = tc.grad(_loss)(p, x, t)
    from tensorc.autodiff import api

    unfused_trace = api._trace

    def no_fusion(*a, **k):
        k["fuse"] = False
        return unfused_trace(*a, **k)

    api._trace = no_fusion
    try:
        plain = tc.grad(_loss)(p, x, t)
    finally:
        api._trace = unfused_trace
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    exact = tc.grad(_loss)(p64, x.astype(np.float64), t)
    for k in p:
        err_fused = np.abs(fused[k].numpy() - exact[k].numpy()).max()
        err_plain = np.abs(plain[k].numpy() - exact[k].numpy()).max()
        assert err_fused <= 2 * err_plain + 1e-7, (k, err_fused, err_plain)


def test_pipeline_reports_fusion_and_keeps_results():
    lowered = tc.jit(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)).lower(Q, K, V)
    opt, pm = optimize(lowered.graph)
    assert [r.name for r in pm.history][:3] == ["simplify", "cse", "fuse_patterns"]
    assert any(n.op == "fused_attention" for n in opt.nodes)
    np.testing.assert_allclose(evaluate(opt, [Q, K, V])[0], evaluate(lowered.graph, [Q, K, V])[0], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- kernel and buffer counts (the must-shows)


def _ln_vjp(x, w, b, dy):
    y, back = tc.vjp(lambda x, w, b: F.layer_norm(x, x.shape[-1], w, b), x, w, b)
    return y, back(dy)


def _attn_vjp(q, k, v, do):
    y, back = tc.vjp(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v)
    return y, back(do)


def test_layernorm_forward_is_one_kernel_and_forward_backward_at_most_three():
    x = rng.standard_normal((64, 32)).astype(np.float32)
    w, b = np.ones(32, np.float32), np.zeros(32, np.float32)
    assert len(tc.jit(lambda x, w, b: F.layer_norm(x, 32, w, b)).lower(x, w, b).kernels) == 1
    assert len(tc.jit(_ln_vjp).lower(x, w, b, x).kernels) <= 3
    dy = rng.standard_normal((64, 32)).astype(np.float32)
    weighted = tc.jit(tc.value_and_grad(lambda x, w, b: (F.layer_norm(x, 32, w, b) * dy).sum(), argnums=(0, 1, 2)))
    assert len(weighted.lower(x, w, b).kernels) <= 3


def test_softmax_forward_is_one_kernel():
    x = rng.standard_normal((64, 32)).astype(np.float32)
    assert len(tc.jit(lambda x: tc.softmax(x, -1)).lower(x).kernels) == 1


def test_causal_attention_kernels_and_no_t_by_t_buffer():
    b, h, t, d = 2, 3, 32, 8
    q = rng.standard_normal((b, h, t, d)).astype(np.float32)
    forward = tc.jit(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)).lower(q, q, q)
    both = tc.jit(_attn_vjp).lower(q, q, q, q)
    assert len(forward.kernels) == 1
    assert len(both.kernels) <= 3
    for lowered in (forward, both):
        sizes = [int(np.prod(buf.shape)) for buf in lowered.buffers]
        assert max(sizes) < b * h * t * t, sizes  # nothing of B*H*T*T elements is ever stored
    summary = both.fusion_summary()
    assert "fused_attention_bwd x1" in summary and "decomposed into primitives" in summary


def test_cross_entropy_forward_backward_is_at_most_two_kernels():
    logits = rng.standard_normal((64, 32)).astype(np.float32)
    t = rng.integers(0, 32, 64)
    lowered = tc.jit(tc.value_and_grad(lambda x, t: F.cross_entropy(x, t))).lower(logits, t)
    assert len(lowered.kernels) <= 2
    assert {k.pattern for k in lowered.kernels} == {"fused_softmax_xent", "fused_softmax_xent_bwd"}


def test_gpt_block_report_shows_kernels_before_and_after_fusion():
    p = _params(dtype=np.float32)
    x = rng.standard_normal((2, 6, 8)).astype(np.float32)
    t = rng.integers(0, 5, (2, 6))
    lowered = tc.jit(tc.value_and_grad(_loss)).lower(p, x, t)
    report = lowered.report()
    assert "pattern fusion" in report and "decomposed into primitives" in report
    with_fused = len(lowered.kernels)
    plain = int(report.split("decomposed into primitives: ")[1].split(" kernels")[0])
    assert with_fused < plain
