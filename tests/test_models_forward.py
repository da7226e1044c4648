"""Whole models traced with tc.jit against numpy written independently here, and
the ``tensorc.nn.functional`` building blocks they use."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import QUICK, assert_close, op_names

import tensorc as tc
import tensorc.nn.functional as F

# Model outputs pass through several matmuls and normalizations: float32 gets a looser bound than one op.
MODEL_TOL = {"float64": dict(rtol=1e-9, atol=1e-10), "float32": dict(rtol=2e-4, atol=2e-5)}

# ----------------------------------------------------------------------------- numpy oracles

_erf = np.vectorize(math.erf, otypes=[np.float64])


def np_gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def np_layer_norm(x: np.ndarray, w: np.ndarray | None, b: np.ndarray | None, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


def np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray | None = None,
                 add: np.ndarray | None = None, scale: float | None = None) -> np.ndarray:
    """softmax(q k^T * scale + add, only where allowed) v; rows with nothing allowed give 0."""
    s = q @ np.swapaxes(k, -1, -2) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if add is not None:
        s = s + add
    out = np.zeros(s.shape[:-1] + (v.shape[-1],))
    allowed = np.broadcast_to(np.ones(s.shape, bool) if allowed is None else allowed, s.shape)
    for idx in np.ndindex(*s.shape[:-1]):  # row by row: obviously right, if slow
        keep = allowed[idx]
        if keep.any():
            row = s[idx][keep]
            p = np.exp(row - row.max())
            out[idx] = (p / p.sum()) @ v[idx[:-1]][keep]
    return out


def np_cross_entropy(logits: np.ndarray, target: np.ndarray, ignore_index: int = -100, reduction: str = "mean",
                     label_smoothing: float = 0.0) -> np.ndarray:
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    losses = np.zeros(target.shape)
    for idx in np.ndindex(*target.shape):
        t = target[idx]
        if t != ignore_index:
            losses[idx] = -(1 - label_smoothing) * logp[idx][t] - label_smoothing * logp[idx].mean()
    n_valid = int((target != ignore_index).sum())
    return {"none": losses, "sum": losses.sum(), "mean": losses.sum() / max(n_valid, 1)}[reduction]


# ----------------------------------------------------------------------------- a 2-layer MLP


def mlp(params: dict[str, Any], x: tc.Tensor, y: tc.Tensor) -> tuple[tc.Tensor, tc.Tensor]:
    h = tc.tanh(x @ params["w1"] + params["b1"])  # (N, H)
    logits = F.linear(h, params["w2"], params["b2"])  # (N, C); w2 is [out, in]
    return logits, F.cross_entropy(logits, y)


def np_mlp(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.tanh(x @ p["w1"] + p["b1"])
    logits = h @ p["w2"].T + p["b2"]
    return logits, np_cross_entropy(logits, y)


def mlp_params(rng: np.random.Generator, d: int, h: int, c: int, dtype: str) -> dict[str, np.ndarray]:
    return {
        "w1": (rng.standard_normal((d, h)) / math.sqrt(d)).astype(dtype), "b1": (0.1 * rng.standard_normal(h)).astype(dtype),
        "w2": (rng.standard_normal((c, h)) / math.sqrt(h)).astype(dtype), "b2": (0.1 * rng.standard_normal(c)).astype(dtype),
    }


def _f64(tree: Any) -> Any:
    return tc.tree_map(lambda a: np.asarray(a, np.float64), tree)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mlp_forward(dtype: str) -> None:
    rng = np.random.default_rng(0)
    params = mlp_params(rng, 12, 32, 5, dtype)
    x = rng.standard_normal((16, 12)).astype(dtype)
    y = rng.integers(0, 5, 16)
    f = tc.jit(mlp)
    logits, loss = f(params, x, y)
    ref_logits, ref_loss = np_mlp(_f64(params), x.astype(np.float64), y)
    assert logits.dtype == np.dtype(dtype) and loss.dtype == np.dtype(dtype) and loss.shape == ()
    np.testing.assert_allclose(logits, ref_logits, **MODEL_TOL[dtype])
    np.testing.assert_allclose(loss, ref_loss, **MODEL_TOL[dtype])
    e_logits, e_loss = mlp({k: tc.tensor(v) for k, v in params.items()}, tc.tensor(x), tc.tensor(y))
    np.testing.assert_allclose(e_logits.numpy(), logits, **MODEL_TOL[dtype])
    np.testing.assert_allclose(e_loss.numpy(), loss, **MODEL_TOL[dtype])
    assert f.compile_count == 1


# ----------------------------------------------------------------------------- a GPT block


def gpt_block(p: dict[str, Any], x: tc.Tensor, n_head: int, use_sdpa: bool = True) -> tc.Tensor:
    """Pre-LN transformer block: x + attn(ln1(x)); x + mlp(ln2(x)); causal multi-head attention."""
    B, T, C = x.shape
    hs = C // n_head
    h = F.layer_norm(x, (C,), p["ln1_w"], p["ln1_b"])
    q, k, v = tc.split(F.linear(h, p["attn_w"], p["attn_b"]), C, dim=-1)  # 3 x (B, T, C)
    q = q.reshape(B, T, n_head, hs).permute(0, 2, 1, 3)  # (B, nh, T, hs)
    k = k.reshape(B, T, n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
    v = v.reshape(B, T, n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
    if use_sdpa:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
    else:
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, T)
        att = tc.where(tc.tril(tc.ones(T, T, dtype=tc.bool)), att, float("-inf"))
        y = F.softmax(att, dim=-1) @ v  # (B, nh, T, hs)
    y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
    x = x + F.linear(y, p["proj_w"], p["proj_b"])
    h = F.layer_norm(x, C, p["ln2_w"], p["ln2_b"])
    h = F.gelu(F.linear(h, p["fc_w"], p["fc_b"]), approximate="tanh")  # (B, T, 4C)
    return x + F.linear(h, p["fc2_w"], p["fc2_b"])


def np_gpt_block(p: dict[str, np.ndarray], x: np.ndarray, n_head: int) -> np.ndarray:
    B, T, C = x.shape
    hs = C // n_head
    h = np_layer_norm(x, p["ln1_w"], p["ln1_b"])
    qkv = h @ p["attn_w"].T + p["attn_b"]
    out = np.zeros_like(x)
    for b in range(B):
        for head in range(n_head):
            cols = slice(head * hs, (head + 1) * hs)
            q = qkv[b, :, :C][:, cols]
            k = qkv[b, :, C:2 * C][:, cols]
            v = qkv[b, :, 2 * C:][:, cols]
            s = q @ k.T / math.sqrt(hs)
            s[np.triu_indices(T, 1)] = -np.inf
            out[b, :, cols] = np_softmax(s) @ v
    x = x + out @ p["proj_w"].T + p["proj_b"]
    h = np_layer_norm(x, p["ln2_w"], p["ln2_b"])
    return x + np_gelu(h @ p["fc_w"].T + p["fc_b"], "tanh") @ p["fc2_w"].T + p["fc2_b"]


def gpt_params(rng: np.random.Generator, C: int, dtype: str) -> dict[str, np.ndarray]:
    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / math.sqrt(shape[-1])).astype(dtype)

    def b(n: int) -> np.ndarray:
        return (0.1 * rng.standard_normal(n)).astype(dtype)

    return {"ln1_w": (1 + b(C)).astype(dtype), "ln1_b": b(C), "attn_w": w(3 * C, C), "attn_b": b(3 * C),
            "proj_w": w(C, C), "proj_b": b(C), "ln2_w": (1 + b(C)).astype(dtype), "ln2_b": b(C),
            "fc_w": w(4 * C, C), "fc_b": b(4 * C), "fc2_w": w(C, 4 * C), "fc2_b": b(C)}


@pytest.mark.parametrize("use_sdpa", [True, False], ids=["sdpa", "manual"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gpt_block_forward(dtype: str, use_sdpa: bool) -> None:
    rng = np.random.default_rng(1)
    B, T, C, n_head = 2, 7, 16, 4
    params = gpt_params(rng, C, dtype)
    x = rng.standard_normal((B, T, C)).astype(dtype)
    f = tc.jit(gpt_block, static_argnums=(2, 3))
    got = f(params, x, n_head, use_sdpa)
    expected = np_gpt_block(_f64(params), x.astype(np.float64), n_head)
    assert got.shape == (B, T, C) and got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, expected, **MODEL_TOL[dtype])
    eager = gpt_block({k: tc.tensor(v) for k, v in params.items()}, tc.tensor(x), n_head, use_sdpa)
    np.testing.assert_allclose(eager.numpy(), got, **MODEL_TOL[dtype])
    # Causality: changing the last position changes only the last position's output.
    x2 = x.copy()
    x2[:, -1] += 1.0
    got2 = f(params, x2, n_head, use_sdpa)
    np.testing.assert_array_equal(got2[:, :-1], got[:, :-1])
    assert not np.allclose(got2[:, -1], got[:, -1])
    assert f.compile_count == 1


def test_gpt_block_graph_is_traced_once_and_verifies() -> None:
    from tensorc.ir.verifier import verify

    rng = np.random.default_rng(2)
    params = gpt_params(rng, 8, "float32")
    lowered = tc.jit(gpt_block, static_argnums=(2,)).lower(params, rng.standard_normal((1, 4, 8)).astype(np.float32), 2)
    verify(lowered.graph)
    ops = op_names(lowered.graph)
    assert ops.count("matmul") == 6  # qkv, q@k, p@v, proj, fc, fc2
    assert sorted(p.attrs["name"] for p in lowered.graph.inputs) == sorted(
        [f"p['{k}']" for k in params] + ["x"])


# ----------------------------------------------------------------------------- nn.functional


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_silu_linear_layer_norm(approximate: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5)) * 3
    assert_close(F.gelu(tc.tensor(x), approximate), np_gelu(x, approximate), "float64")
    assert_close(F.silu(tc.tensor(x)), x / (1 + np.exp(-x)), "float64")
    w, b = rng.standard_normal((4, 5)), rng.standard_normal(4)
    assert_close(F.linear(tc.tensor(x), tc.tensor(w), tc.tensor(b)), x @ w.T + b, "float64")
    assert_close(F.linear(tc.tensor(x), tc.tensor(w)), x @ w.T, "float64")
    g, beta = rng.standard_normal(5), rng.standard_normal(5)
    assert_close(F.layer_norm(tc.tensor(x), 5, tc.tensor(g), tc.tensor(beta)), np_layer_norm(x, g, beta), "float64")
    assert_close(F.layer_norm(tc.tensor(x), (5,)), np_layer_norm(x, None, None), "float64")
    x3 = rng.standard_normal((2, 3, 4))
    flat = np_layer_norm(x3.reshape(2, 12), None, None).reshape(2, 3, 4)
    assert_close(F.layer_norm(tc.tensor(x3), (3, 4)), flat, "float64")
    with pytest.raises(tc.ShapeError, match="layer_norm"):
        F.layer_norm(tc.tensor(x), (4,))
    with pytest.raises(tc.TensorcError, match="approximate"):
        F.gelu(tc.tensor(x), "fast")
    assert_close(F.mse_loss(tc.tensor(x), tc.tensor(x * 0)), (x**2).mean(), "float64")
    assert_close(F.mse_loss(tc.tensor(x), tc.tensor(x * 0), "sum"), (x**2).sum(), "float64")


@QUICK
@given(reduction=st.sampled_from(["mean", "sum", "none"]), smoothing=st.sampled_from([0.0, 0.1]),
       lead=st.sampled_from([(6,), (2, 3), (1,)]), ignore=st.sampled_from([-100, 2]), seed=st.integers(0, 2**16))
def test_cross_entropy(reduction: str, smoothing: float, lead: tuple[int, ...], ignore: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    C = 5
    logits = rng.standard_normal(lead + (C,)) * 4
    target = rng.integers(0, C, lead)
    target.flat[0] = ignore  # at least one ignored position
    expected = np_cross_entropy(logits, target, ignore, reduction, smoothing)
    got = F.cross_entropy(tc.tensor(logits), tc.tensor(target), ignore_index=ignore, reduction=reduction, label_smoothing=smoothing)
    assert_close(got, expected, "float64")
    jitted = tc.jit(lambda a, t: F.cross_entropy(a, t, ignore_index=ignore, reduction=reduction, label_smoothing=smoothing))
    assert_close(jitted(logits.astype(np.float32), target), expected, "float32", scale=5)
    if reduction == "none":
        assert got.numpy().reshape(-1)[0] == 0.0  # ignored positions contribute nothing


def test_cross_entropy_errors() -> None:
    x = tc.tensor(np.zeros((3, 5), np.float32))
    with pytest.raises(tc.ShapeError, match="cross_entropy"):
        F.cross_entropy(x, tc.tensor([1, 2]))
    with pytest.raises(tc.DTypeError, match="cross_entropy"):
        F.cross_entropy(x, tc.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(tc.TensorcError, match="reduction"):
        F.cross_entropy(x, tc.tensor([1, 2, 3]), reduction="max")
    # A class id outside [0, C) is an error, not a read of another row's logits.
    for bad in ([7, 0, 1], [1, -3, 1], [0, 0, 5]):
        with pytest.raises(tc.TensorcError, match="out of range"):
            F.cross_entropy(x, tc.tensor(bad))
        with pytest.raises(tc.TensorcError, match="out of range"):
            tc.jit(F.cross_entropy)(x.numpy(), np.array(bad))


def test_embedding() -> None:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((10, 3)).astype(np.float32)
    ids = np.array([[1, 9, 1], [0, 0, 4]])
    np.testing.assert_array_equal(F.embedding(tc.tensor(ids), tc.tensor(w)).numpy(), w[ids])
    np.testing.assert_array_equal(tc.jit(F.embedding)(ids, w), w[ids])
    with pytest.raises(tc.TensorcError, match="index 10 out of range"):
        F.embedding(tc.tensor([10]), tc.tensor(w))
    with pytest.raises(tc.TensorcError, match="index -1 out of range"):
        tc.jit(F.embedding)(np.array([-1]), w)
    with pytest.raises(tc.DTypeError, match="embedding"):
        F.embedding(tc.tensor([1.0]), tc.tensor(w))
    with pytest.raises(tc.ShapeError, match="embedding"):
        F.embedding(tc.tensor([1]), tc.tensor(w[0]))


def test_dropout() -> None:
    x = tc.tensor(np.full((200, 500), 2.0, np.float32))
    key = tc.random.key(7)
    y = F.dropout(x, 0.3, key=key).numpy()
    dropped = y == 0
    assert abs(dropped.mean() - 0.3) < 0.01  # 100,000 samples: sd of the mean is 0.0015
    np.testing.assert_allclose(y[~dropped], 2.0 / 0.7, rtol=1e-6)  # kept values are scaled by 1/(1-p)
    np.testing.assert_array_equal(F.dropout(x, 0.3, key=key).numpy(), y)  # same key, same mask
    assert not np.array_equal(F.dropout(x, 0.3, key=tc.random.key(8)).numpy(), y)
    np.testing.assert_array_equal(tc.jit(lambda a, k: F.dropout(a, 0.3, key=k))(x.numpy(), key.numpy()), y)
    assert F.dropout(x, 0.0) is x  # p=0: the input itself, no key needed
    assert F.dropout(x, 0.5, training=False) is x
    assert not F.dropout(x, 1.0, key=key).numpy().any()
    with pytest.raises(tc.TensorcError, match="key"):
        F.dropout(x, 0.5)
    with pytest.raises(tc.TensorcError, match="probability"):
        F.dropout(x, 1.5, key=key)


def test_sdpa_masks() -> None:
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal((2, 3, 4, 8)), rng.standard_normal((2, 3, 6, 8)), rng.standard_normal((2, 3, 6, 5))
    T = lambda a: tc.tensor(a)  # noqa: E731
    sdpa = F.scaled_dot_product_attention
    assert_close(sdpa(T(q), T(k), T(v)), np_attention(q, k, v), "float64")
    assert_close(sdpa(T(q), T(k), T(v), scale=0.3), np_attention(q, k, v, scale=0.3), "float64")
    causal = np.tril(np.ones((4, 6), bool))
    assert_close(sdpa(T(q), T(k), T(v), is_causal=True), np_attention(q, k, v, allowed=causal), "float64")
    bool_mask = rng.random((4, 6)) > 0.5  # broadcast over batch and heads
    bool_mask[2] = False  # a fully masked row
    got = sdpa(T(q), T(k), T(v), attn_mask=T(bool_mask)).numpy()
    assert np.isfinite(got).all() and not got[:, :, 2].any()  # zeros, not NaN
    assert_close(got, np_attention(q, k, v, allowed=bool_mask), "float64")
    both = sdpa(T(q), T(k), T(v), attn_mask=T(bool_mask), is_causal=True)
    assert_close(both, np_attention(q, k, v, allowed=bool_mask & causal), "float64")
    float_mask = rng.standard_normal((2, 1, 4, 6))
    assert_close(sdpa(T(q), T(k), T(v), attn_mask=T(float_mask)), np_attention(q, k, v, add=float_mask), "float64")
    # A float mask of -inf everywhere in a row is also a fully masked row.
    inf_mask = np.where(bool_mask, 0.0, -np.inf)
    got = tc.jit(lambda a, b, c, m: sdpa(a, b, c, attn_mask=m))(q, k, v, inf_mask)
    assert np.isfinite(got).all() and not got[:, :, 2].any()
    assert_close(got, np_attention(q, k, v, allowed=bool_mask), "float64")
    with pytest.raises(tc.ShapeError, match="scaled_dot_product_attention"):
        sdpa(T(q), T(k[..., :4]), T(v))


def test_one_hot_and_activations() -> None:
    assert F.one_hot(tc.tensor([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert F.one_hot(tc.tensor([2, 0]), 3).dtype == tc.int64
    x = np.array([-2.0, 0.0, 3.0])
    assert F.relu(tc.tensor(x)).tolist() == [0.0, 0.0, 3.0]
    assert_close(F.sigmoid(tc.tensor(x)), 1 / (1 + np.exp(-x)), "float64")
    assert_close(F.tanh(tc.tensor(x)), np.tanh(x), "float64")
    assert_close(F.softmax(tc.tensor(x), -1), np_softmax(x), "float64")
    assert_close(F.log_softmax(tc.tensor(x), -1), np.log(np_softmax(x)), "float64")
