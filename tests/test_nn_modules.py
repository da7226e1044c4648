"""tc.nn modules: forward against numpy written here, initializers, dropout, parameter
names, gradients, jit vs eager, and (when PyTorch is installed) torch.nn with copied weights."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tensorc as tc
from tensorc import nn
from tensorc.errors import ShapeError, TensorcError

ATOL = 2e-5  # float32 forward; the references below run in float64


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run(y: object) -> np.ndarray:
    return np.asarray(y.numpy() if isinstance(y, tc.Tensor) else y)


def randomize(params: dict, seed: int = 1, scale: float = 0.3) -> dict:
    """Random values for every leaf (LayerNorm's ones/zeros would hide mistakes in the affine step)."""
    rng = np.random.default_rng(seed)
    return tc.tree_map(lambda a: (rng.standard_normal(np.shape(a)) * scale).astype(np.asarray(a).dtype), params)


# ----------------------------------------------------------------------------- numpy references


def np_linear(x, p):
    y = x.astype(np.float64) @ p["weight"].astype(np.float64).T  # PyTorch layout: weight is [out, in]
    return y + p["bias"] if "bias" in p else y


def np_layer_norm(x, p, eps=1e-5):
    x = x.astype(np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * p["weight"] + p["bias"] if p else y


_erf = np.vectorize(math.erf)


def np_gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def np_attention(x, p, n_heads, causal=False, context=None, fused=True):
    """Multi-head attention, one head at a time, with explicit loops over batch and head."""
    c = x.shape[-1]
    src = x if context is None else context
    if fused:
        w, b = p["qkv"]["weight"], p["qkv"]["bias"]
        q = np_linear(x, {"weight": w[:c], "bias": b[:c]})
        k = np_linear(src, {"weight": w[c:2 * c], "bias": b[c:2 * c]})
        v = np_linear(src, {"weight": w[2 * c:], "bias": b[2 * c:]})
    else:
        q, k, v = np_linear(x, p["q"]), np_linear(src, p["k"]), np_linear(src, p["v"])
    B, T, S, hs = x.shape[0], x.shape[1], src.shape[1], c // n_heads
    out = np.zeros((B, T, c))
    for bi in range(B):
        for h in range(n_heads):
            sl = slice(h * hs, (h + 1) * hs)
            scores = q[bi, :, sl] @ k[bi, :, sl].T / math.sqrt(hs)  # (T, S)
            if causal:
                scores = np.where(np.arange(S)[None, :] <= np.arange(T)[:, None], scores, -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            out[bi, :, sl] = probs @ v[bi, :, sl]
    return np_linear(out, p["proj"])


def np_ffn(x, p, activation):
    h = np_linear(x, p["fc"])
    h = np.maximum(h, 0) if activation == "relu" else np_gelu(h, "tanh" if activation == "gelu_tanh" else "none")
    return np_linear(h, p["proj"])


def np_block(x, p, n_heads, causal, pre_ln, activation="gelu", context=None):
    def sub(ln, fn, h):
        return h + fn(np_layer_norm(h, p[ln])) if pre_ln else np_layer_norm(h + fn(h), p[ln])

    x = sub("ln1", lambda h: np_attention(h, p["attn"], n_heads, causal), x.astype(np.float64))
    if context is not None:
        x = sub("ln_cross", lambda h: np_attention(h, p["cross_attn"], n_heads, context=context), x)
    return sub("ln2", lambda h: np_ffn(h, p["mlp"], activation), x)


# ----------------------------------------------------------------------------- forward vs numpy


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_numpy_pytorch_layout(bias):
    lin = nn.Linear(5, 3, bias=bias)
    p = lin.init(tc.random.key(0))
    assert p["weight"].shape == (3, 5) and ("bias" in p) == bias
    x = rand(2, 4, 5)
    np.testing.assert_allclose(run(lin(p, x)), np_linear(x, p), atol=ATOL)


def test_embedding_matches_numpy_and_rejects_out_of_range_ids():
    emb = nn.Embedding(7, 4)
    p = emb.init(tc.random.key(0))
    ids = np.array([[0, 6, 3], [3, 3, 1]])
    np.testing.assert_array_equal(run(emb(p, ids)), p["weight"][ids])
    jitted = tc.jit(lambda p, ids: emb(p, ids))
    np.testing.assert_array_equal(jitted(p, ids), p["weight"][ids])
    for bad in (np.array([0, 7]), np.array([-1, 0])):
        with pytest.raises(ShapeError, match="out of range"):
            run(emb(p, bad))
        with pytest.raises(ShapeError, match="out of range"):
            jitted(p, bad)


def test_layernorm_matches_numpy():
    ln = nn.LayerNorm(6)
    p = randomize(ln.init())
    x = rand(3, 4, 6) * 3 + 1
    np.testing.assert_allclose(run(ln(p, x)), np_layer_norm(x, p), atol=1e-4)
    plain = nn.LayerNorm(6, elementwise_affine=False)
    assert plain.init() == {}
    np.testing.assert_allclose(run(plain(plain.init(), x)), np_layer_norm(x, {}), atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("fused", [True, False])
def test_self_attention_matches_numpy(causal, fused):
    mha = nn.MultiHeadAttention(8, 2, causal=causal, fused_qkv=fused)
    p = mha.init(tc.random.key(3))
    x = rand(2, 5, 8)
    np.testing.assert_allclose(run(mha(p, x)), np_attention(x, p, 2, causal, fused=fused), atol=ATOL)


def test_causal_attention_ignores_the_future():
    mha = nn.MultiHeadAttention(8, 2, causal=True)
    p = mha.init(tc.random.key(0))
    x = rand(1, 6, 8)
    x2 = x.copy()
    x2[:, 4:] += 5.0
    y, y2 = run(mha(p, x)), run(mha(p, x2))
    np.testing.assert_allclose(y[:, :4], y2[:, :4], atol=1e-6)
    assert np.abs(y[:, 4:] - y2[:, 4:]).max() > 1e-3


def test_fused_and_separate_qkv_agree_with_copied_weights():
    fused, separate = nn.MultiHeadAttention(8, 4, causal=True), nn.MultiHeadAttention(8, 4, causal=True, fused_qkv=False)
    pf = fused.init(tc.random.key(0))
    w, b = pf["qkv"]["weight"], pf["qkv"]["bias"]
    ps = {name: {"weight": w[i * 8:(i + 1) * 8], "bias": b[i * 8:(i + 1) * 8]} for i, name in enumerate("qkv")}
    ps["proj"] = pf["proj"]
    assert sorted(ps) == sorted(separate.init(tc.random.key(0)))
    x = rand(2, 5, 8)
    np.testing.assert_allclose(run(fused(pf, x)), run(separate(ps, x)), atol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_cross_attention_with_a_different_context_length(fused):
    mha = nn.MultiHeadAttention(8, 2, causal=True, fused_qkv=fused)  # causal does not apply to cross-attention
    p = mha.init(tc.random.key(1))
    x, ctx = rand(2, 3, 8), rand(2, 7, 8, seed=1)
    y = run(mha(p, x, ctx))
    assert y.shape == (2, 3, 8)
    np.testing.assert_allclose(y, np_attention(x, p, 2, context=ctx, fused=fused), atol=ATOL)


def test_attention_bool_mask_matches_causal():
    mha = nn.MultiHeadAttention(8, 2)
    p = mha.init(tc.random.key(1))
    x = rand(2, 4, 8)
    mask = np.tril(np.ones((4, 4), bool))
    np.testing.assert_allclose(run(mha(p, x, mask=mask)), np_attention(x, p, 2, causal=True), atol=ATOL)


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
def test_feedforward_matches_numpy(activation):
    ff = nn.FeedForward(6, 12, activation)
    p = ff.init(tc.random.key(2))
    x = rand(2, 3, 6) * 2
    np.testing.assert_allclose(run(ff(p, x)), np_ffn(x, p, activation), atol=ATOL)


def test_feedforward_rejects_unknown_activation():
    with pytest.raises(TensorcError, match="activation"):
        nn.FeedForward(4, 8, "swish")


@pytest.mark.parametrize("pre_ln", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_transformer_block_matches_numpy(pre_ln, causal):
    blk = nn.TransformerBlock(8, 2, 16, causal=causal, pre_ln=pre_ln)
    p = randomize(blk.init(tc.random.key(0)), scale=0.4)
    x = rand(2, 5, 8)
    np.testing.assert_allclose(run(blk(p, x)), np_block(x, p, 2, causal, pre_ln), atol=1e-4)


@pytest.mark.parametrize("pre_ln", [True, False])
def test_transformer_block_with_cross_attention_matches_numpy(pre_ln):
    blk = nn.TransformerBlock(8, 2, 16, causal=True, pre_ln=pre_ln, cross_attention=True, activation="gelu_tanh")
    p = randomize(blk.init(tc.random.key(0)), scale=0.4)
    x, ctx = rand(2, 4, 8), rand(2, 6, 8, seed=5)
    got = run(blk(p, x, ctx))
    np.testing.assert_allclose(got, np_block(x, p, 2, True, pre_ln, "gelu_tanh", context=ctx), atol=1e-4)
    with pytest.raises(TensorcError, match="context"):
        blk(p, x)


def test_context_mask_equals_cropping_the_context():
    blk = nn.TransformerBlock(8, 2, 16, cross_attention=True)
    p = blk.init(tc.random.key(0))
    x, ctx = rand(2, 3, 8), rand(2, 5, 8, seed=1)
    keep = np.array([True, True, False, True, False])
    masked = run(blk(p, x, ctx, context_mask=keep))
    np.testing.assert_allclose(masked, run(blk(p, x, ctx[:, keep])), atol=1e-5)
    assert np.abs(masked - run(blk(p, x, ctx))).max() > 1e-4


def test_cross_attention_without_bias():
    mha = nn.MultiHeadAttention(8, 2, bias=False)
    p = mha.init(tc.random.key(0))
    assert sorted(nn.named_parameters(p)) == ["proj.weight", "qkv.weight"]
    x, ctx = rand(1, 3, 8), rand(1, 4, 8, seed=1)
    zero_bias = {"qkv": {**p["qkv"], "bias": np.zeros(24)}, "proj": {**p["proj"], "bias": np.zeros(8)}}
    np.testing.assert_allclose(run(mha(p, x, ctx)), np_attention(x, zero_bias, 2, context=ctx), atol=ATOL)


def test_mha_rejects_indivisible_heads():
    with pytest.raises(TensorcError, match="divisible"):
        nn.MultiHeadAttention(10, 4)


# ----------------------------------------------------------------------------- initializers


def test_linear_default_init_is_uniform_with_bound_one_over_sqrt_in():
    lin = nn.Linear(64, 512)
    p = lin.init(tc.random.key(0))
    bound = 1 / math.sqrt(64)
    for w in (p["weight"], p["bias"]):
        assert w.dtype == np.float32
        assert np.abs(w).max() <= bound
    w = p["weight"]
    assert w.min() < -0.98 * bound and w.max() > 0.98 * bound
    assert abs(w.mean()) < 0.02 * bound
    assert abs(w.var() - bound**2 / 3) < 0.05 * bound**2 / 3  # variance of U(-a, a) is a²/3
    assert np.abs(p["bias"]).max() > 0  # PyTorch draws the bias from the same range, not zeros
    assert not np.array_equal(lin.init(tc.random.key(1))["weight"], w)
    np.testing.assert_array_equal(lin.init(tc.random.key(0))["weight"], w)  # a key determines the values


def test_init_std_gives_normal_weights_and_zero_bias():
    p = nn.Linear(128, 256, init_std=0.02).init(tc.random.key(0))
    w = p["weight"]
    assert abs(w.std() - 0.02) < 0.001 and abs(w.mean()) < 0.001
    frac_within_1sd = np.mean(np.abs(w) < 0.02)
    assert abs(frac_within_1sd - 0.6827) < 0.01  # normal, not uniform (which would give 0.577 for this std)
    np.testing.assert_array_equal(p["bias"], 0)
    emb = nn.Embedding(1000, 64).init(tc.random.key(0))["weight"]
    assert abs(emb.std() - 1.0) < 0.02 and abs(emb.mean()) < 0.02
    wpe = nn.LearnedPositions(256, 64).init(tc.random.key(0))["weight"]
    assert abs(wpe.std() - 0.02) < 0.001


def test_layernorm_init_is_ones_and_zeros():
    p = nn.LayerNorm((3, 4), dtype=np.float64).init()
    np.testing.assert_array_equal(p["weight"], np.ones((3, 4)))
    np.testing.assert_array_equal(p["bias"], np.zeros((3, 4)))
    assert p["weight"].dtype == np.float64


def test_mha_out_init_std_applies_to_the_output_projection_only():
    p = nn.MultiHeadAttention(64, 4, init_std=0.02, out_init_std=0.002).init(tc.random.key(0))
    assert abs(p["qkv"]["weight"].std() - 0.02) < 0.002
    assert abs(p["proj"]["weight"].std() - 0.002) < 0.0002


def test_submodules_get_independent_keys():
    p = nn.MultiHeadAttention(8, 2, fused_qkv=False).init(tc.random.key(0))
    ws = [p[n]["weight"] for n in ("q", "k", "v", "proj")]
    for i in range(4):
        for j in range(i):
            assert not np.allclose(ws[i], ws[j])


# ----------------------------------------------------------------------------- dropout


def test_dropout_only_in_training_and_needs_a_key():
    drop = nn.Dropout(0.25)
    x = np.ones((200, 50), np.float32)
    np.testing.assert_array_equal(run(drop({}, x)), x)  # eval: identity, no key needed
    with pytest.raises(TensorcError, match="key"):
        drop({}, x, training=True)
    y = run(drop({}, x, key=tc.random.key(0), training=True))
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)  # inverted dropout
    np.testing.assert_array_equal(y, run(drop({}, x, key=tc.random.key(0), training=True)))
    assert not np.array_equal(y, run(drop({}, x, key=tc.random.key(1), training=True)))


def test_block_dropout_in_training_only():
    blk = nn.TransformerBlock(8, 2, 16, dropout=0.5)
    p = blk.init(tc.random.key(0))
    x = rand(2, 4, 8)
    eval_out = run(blk(p, x))
    np.testing.assert_allclose(eval_out, np_block(x, p, 2, False, True), atol=1e-4)
    with pytest.raises(TensorcError, match="key"):
        blk(p, x, training=True)
    a = run(blk(p, x, key=tc.random.key(0), training=True))
    b = run(blk(p, x, key=tc.random.key(1), training=True))
    assert not np.allclose(a, eval_out) and not np.allclose(a, b)


# ----------------------------------------------------------------------------- names and positions


def test_named_parameters_of_a_list_of_blocks_and_round_trip():
    blk = nn.TransformerBlock(8, 2, cross_attention=True)
    keys = tc.random.split(tc.random.key(0), 2)
    params = {"wte": nn.Embedding(10, 8).init(keys[0]), "blocks": [blk.init(keys[0]), blk.init(keys[1])],
              "ln_f": nn.LayerNorm(8).init()}
    flat = nn.named_parameters(params)
    assert "blocks.0.attn.qkv.weight" in flat and "blocks.1.cross_attn.proj.bias" in flat
    assert "blocks.1.ln_cross.weight" in flat and "wte.weight" in flat and "ln_f.bias" in flat
    assert flat["blocks.1.mlp.fc.weight"] is params["blocks"][1]["mlp"]["fc"]["weight"]
    attn = (8 * 24 + 24) + (8 * 8 + 8)  # qkv + proj
    mlp = (8 * 32 + 32) + (32 * 8 + 8)  # fc + proj
    per_block = 2 * attn + mlp + 3 * (8 + 8)  # self + cross attention, mlp, three norms
    assert nn.count_parameters(params) == 10 * 8 + 2 * per_block + 16
    assert len(flat) == 1 + 2 * 18 + 2
    back = nn.unflatten_parameters(flat, params)
    assert tc.tree_flatten(back)[1] == tc.tree_flatten(params)[1]
    assert isinstance(back["blocks"], list)
    for name, value in nn.named_parameters(back).items():
        assert value is flat[name]
    tup = nn.unflatten_parameters({"0.w": 1, "1.w": 2}, ({"w": 0}, {"w": 0}))
    assert tup == ({"w": 1}, {"w": 2})


def test_sinusoidal_positions_match_the_formula():
    for length, dim in [(7, 8), (5, 7), (3, 2)]:
        pe = nn.sinusoidal_positions(length, dim)
        assert pe.shape == (length, dim) and pe.dtype == np.float32
        for pos in range(length):
            for i in range(dim):
                angle = pos / 10000 ** (2 * (i // 2) / dim)  # PE(pos, 2k) = sin(pos / 10000^(2k/d)), 2k+1: cos
                want = math.sin(angle) if i % 2 == 0 else math.cos(angle)
                assert pe[pos, i] == pytest.approx(want, abs=1e-6), (length, dim, pos, i)


def test_learned_positions_pick_rows_with_offset():
    lp = nn.LearnedPositions(16, 4)
    p = lp.init(tc.random.key(0))
    np.testing.assert_array_equal(run(lp(p, 5)), p["weight"][:5])
    np.testing.assert_array_equal(run(lp(p, 3, offset=np.int64(10))), p["weight"][10:13])
    with pytest.raises(ShapeError, match="out of range"):
        run(lp(p, 4, offset=np.int64(14)))


# ----------------------------------------------------------------------------- gradients and jit


def test_transformer_block_gradcheck_float64():
    blk = nn.TransformerBlock(4, 2, 4, causal=True, dtype=np.float64)
    p = randomize(blk.init(tc.random.key(0)), scale=0.5)
    x = np.random.default_rng(0).standard_normal((1, 3, 4))
    assert tc.gradcheck(lambda p, x: blk(p, x), p, x)


def test_post_ln_cross_block_gradcheck_float64():
    blk = nn.TransformerBlock(4, 1, 4, pre_ln=False, cross_attention=True, activation="gelu_tanh", dtype=np.float64)
    p = randomize(blk.init(tc.random.key(0)), scale=0.5)
    rng = np.random.default_rng(1)
    x, ctx = rng.standard_normal((1, 2, 4)), rng.standard_normal((1, 3, 4))
    assert tc.gradcheck(lambda p, x, c: blk(p, x, c), p, x, ctx)


MODULE_CASES = {
    "linear": (nn.Linear(8, 6), lambda m, p, x, c: m(p, x)),
    "layernorm": (nn.LayerNorm(8), lambda m, p, x, c: m(p, x)),
    "mha_causal": (nn.MultiHeadAttention(8, 2, causal=True), lambda m, p, x, c: m(p, x)),
    "mha_cross": (nn.MultiHeadAttention(8, 2), lambda m, p, x, c: m(p, x, c)),
    "mha_separate_cross": (nn.MultiHeadAttention(8, 2, fused_qkv=False), lambda m, p, x, c: m(p, x, c)),
    "ffn": (nn.FeedForward(8, 16, "gelu_tanh"), lambda m, p, x, c: m(p, x)),
    "block_post_ln": (nn.TransformerBlock(8, 2, pre_ln=False, causal=True), lambda m, p, x, c: m(p, x)),
    "block_cross": (nn.TransformerBlock(8, 2, cross_attention=True), lambda m, p, x, c: m(p, x, c)),
}


@pytest.mark.parametrize("name", sorted(MODULE_CASES))
def test_modules_under_jit_equal_eager(name):
    module, call = MODULE_CASES[name]
    p = randomize(module.init(tc.random.key(0)))
    x, ctx = rand(2, 3, 8), rand(2, 5, 8, seed=1)
    eager = run(call(module, p, x, ctx))
    jitted = tc.jit(lambda p, x, c: call(module, p, x, c))
    np.testing.assert_allclose(jitted(p, x, ctx), eager, rtol=1e-5, atol=1e-6)
    assert jitted.compile_count == 1


def test_block_training_step_under_jit_equals_eager_with_dropout():
    blk = nn.TransformerBlock(8, 2, 16, causal=True, dropout=0.2)
    p = blk.init(tc.random.key(0))
    x = rand(2, 4, 8)

    def loss(p, x, key):
        return (blk(p, x, key=key, training=True) ** 2).mean()

    eager_loss, eager_grads = tc.value_and_grad(loss)(p, x, tc.random.key(7))
    jit_loss, jit_grads = tc.jit(tc.value_and_grad(loss))(p, x, tc.random.key(7).numpy())
    np.testing.assert_allclose(jit_loss, run(eager_loss), rtol=1e-5)
    for name, g in nn.named_parameters(eager_grads).items():
        np.testing.assert_allclose(nn.named_parameters(jit_grads)[name], run(g), rtol=1e-4, atol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------- against torch.nn


def _torch():
    return pytest.importorskip("torch")


def _t(a):
    import torch

    return torch.tensor(np.asarray(a), dtype=torch.float64)


def _load_mha(tm, p):
    import torch

    with torch.no_grad():
        tm.in_proj_weight.copy_(_t(p["qkv"]["weight"]))
        tm.in_proj_bias.copy_(_t(p["qkv"]["bias"]))
        tm.out_proj.weight.copy_(_t(p["proj"]["weight"]))
        tm.out_proj.bias.copy_(_t(p["proj"]["bias"]))


def _load_ln(tl, p):
    import torch

    with torch.no_grad():
        tl.weight.copy_(_t(p["weight"]))
        tl.bias.copy_(_t(p["bias"]))


def _load_linear(tl, p):
    _load_ln(tl, p)


@pytest.mark.parametrize("causal", [False, True])
def test_mha_matches_torch(causal):
    torch = _torch()
    mha = nn.MultiHeadAttention(8, 2, causal=causal)
    p = mha.init(tc.random.key(0))
    tm = torch.nn.MultiheadAttention(8, 2, batch_first=True).double().eval()
    _load_mha(tm, p)
    x = rand(2, 5, 8)
    mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1) if causal else None
    with torch.no_grad():
        want = tm(_t(x), _t(x), _t(x), attn_mask=mask, need_weights=False)[0].numpy()
    np.testing.assert_allclose(run(mha(p, x)), want, atol=ATOL)
    ctx = rand(2, 7, 8, seed=3)  # cross-attention: torch's query/key/value split of the same in_proj
    with torch.no_grad():
        want = tm(_t(x), _t(ctx), _t(ctx), need_weights=False)[0].numpy()
    np.testing.assert_allclose(run(mha(p, x, ctx)), want, atol=ATOL)


@pytest.mark.parametrize("pre_ln", [True, False])
def test_transformer_block_matches_torch_encoder_layer(pre_ln):
    torch = _torch()
    blk = nn.TransformerBlock(8, 2, 16, causal=True, pre_ln=pre_ln)
    p = randomize(blk.init(tc.random.key(0)), scale=0.4)
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu", batch_first=True,
                                             norm_first=pre_ln).double().eval()
    _load_mha(layer.self_attn, p["attn"])
    _load_linear(layer.linear1, p["mlp"]["fc"])
    _load_linear(layer.linear2, p["mlp"]["proj"])
    _load_ln(layer.norm1, p["ln1"])
    _load_ln(layer.norm2, p["ln2"])
    x = rand(2, 5, 8)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    with torch.no_grad():
        want = layer(_t(x), src_mask=mask, is_causal=True).numpy()
    np.testing.assert_allclose(run(blk(p, x)), want, atol=1e-4)


@pytest.mark.parametrize("pre_ln", [True, False])
def test_cross_attention_block_matches_torch_decoder_layer(pre_ln):
    torch = _torch()
    blk = nn.TransformerBlock(8, 2, 16, causal=True, pre_ln=pre_ln, cross_attention=True, activation="relu")
    p = randomize(blk.init(tc.random.key(0)), scale=0.4)
    layer = torch.nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, activation="relu", batch_first=True,
                                             norm_first=pre_ln).double().eval()
    _load_mha(layer.self_attn, p["attn"])
    _load_mha(layer.multihead_attn, p["cross_attn"])
    _load_linear(layer.linear1, p["mlp"]["fc"])
    _load_linear(layer.linear2, p["mlp"]["proj"])
    _load_ln(layer.norm1, p["ln1"])
    _load_ln(layer.norm2, p["ln_cross"])
    _load_ln(layer.norm3, p["ln2"])
    x, ctx = rand(2, 4, 8), rand(2, 6, 8, seed=2)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    with torch.no_grad():
        want = layer(_t(x), _t(ctx), tgt_mask=mask, tgt_is_causal=True).numpy()
    np.testing.assert_allclose(run(blk(p, x, ctx)), want, atol=1e-4)
