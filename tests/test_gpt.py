"""GPT (models/gpt.py): the GPT-2 Hugging Face layout against an independent numpy
forward, gradients against central differences, the KV cache against the full
forward, and dropout."""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import tensorc as tc
from models.gpt import GPT, PRESETS, Generator, GPTConfig, from_preset, generate, load_gpt2_hf


def tiny(**kw: Any) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=16), **kw})


def f64(tree: Any) -> Any:
    return tc.tree_map(lambda a: np.asarray(a, np.float64), tree)


# ----------------------------------------------------------------------------- GPT-2, Hugging Face layout


def hf_state_dict(rng: np.random.Generator, vocab: int, n_ctx: int, n_layer: int, n_embd: int, prefix: str = "",
                  buffers: bool = True) -> dict[str, np.ndarray]:
    """A random GPT-2 state dict as Hugging Face stores it: Conv1D weights are [in, out]."""
    def w(*shape: int, scale: float = 0.3) -> np.ndarray:
        return rng.standard_normal(shape) * scale

    sd = {"wte.weight": w(vocab, n_embd), "wpe.weight": w(n_ctx, n_embd)}
    for i in range(n_layer):
        h = f"h.{i}"
        sd.update({
            f"{h}.ln_1.weight": 1 + w(n_embd, scale=0.1), f"{h}.ln_1.bias": w(n_embd, scale=0.1),
            f"{h}.attn.c_attn.weight": w(n_embd, 3 * n_embd), f"{h}.attn.c_attn.bias": w(3 * n_embd, scale=0.1),
            f"{h}.attn.c_proj.weight": w(n_embd, n_embd), f"{h}.attn.c_proj.bias": w(n_embd, scale=0.1),
            f"{h}.ln_2.weight": 1 + w(n_embd, scale=0.1), f"{h}.ln_2.bias": w(n_embd, scale=0.1),
            f"{h}.mlp.c_fc.weight": w(n_embd, 4 * n_embd), f"{h}.mlp.c_fc.bias": w(4 * n_embd, scale=0.1),
            f"{h}.mlp.c_proj.weight": w(4 * n_embd, n_embd), f"{h}.mlp.c_proj.bias": w(n_embd, scale=0.1),
        })
        if buffers:  # the causal-mask buffers older checkpoints carry; not parameters
            sd[f"{h}.attn.bias"] = np.tril(np.ones((n_ctx, n_ctx)))[None, None]
            sd[f"{h}.attn.masked_bias"] = np.asarray(-1e4)
    sd["ln_f.weight"], sd["ln_f.bias"] = 1 + w(n_embd, scale=0.1), w(n_embd, scale=0.1)
    sd = {prefix + k: v for k, v in sd.items()}
    if prefix:  # GPT2LMHeadModel also stores the tied head
        sd["lm_head.weight"] = sd[prefix + "wte.weight"].copy()
    return sd


def np_gpt2_logits(sd: dict[str, np.ndarray], idx: np.ndarray, n_head: int, eps: float = 1e-5) -> np.ndarray:
    """GPT-2's forward written directly from the paper/HF code, in float64 numpy."""
    sd = {k.removeprefix("transformer."): np.asarray(v, np.float64) for k, v in sd.items()}

    def layer_norm(x: np.ndarray, name: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]

    def conv1d(x: np.ndarray, name: str) -> np.ndarray:
        return x @ sd[f"{name}.weight"] + sd[f"{name}.bias"]

    def gelu_tanh(x: np.ndarray) -> np.ndarray:
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    b, t = idx.shape
    c = sd["wte.weight"].shape[1]
    hs = c // n_head
    x = sd["wte.weight"][idx] + sd["wpe.weight"][:t]
    n_layer = len({k.split(".")[1] for k in sd if k.startswith("h.")})
    future = np.triu(np.ones((t, t), bool), 1)
    for i in range(n_layer):
        h = f"h.{i}"
        q, k, v = np.split(conv1d(layer_norm(x, f"{h}.ln_1"), f"{h}.attn.c_attn"), 3, axis=-1)
        q, k, v = (a.reshape(b, t, n_head, hs).transpose(0, 2, 1, 3) for a in (q, k, v))
        att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
        att = np.where(future, -np.inf, att)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(b, t, c)
        x = x + conv1d(y, f"{h}.attn.c_proj")
        x = x + conv1d(gelu_tanh(conv1d(layer_norm(x, f"{h}.ln_2"), f"{h}.mlp.c_fc")), f"{h}.mlp.c_proj")
    return layer_norm(x, "ln_f") @ sd["wte.weight"].T


@pytest.mark.parametrize("prefix", ["", "transformer."])
def test_gpt2_hf_layout_matches_numpy_gpt2(prefix: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vocab, n_ctx, n_layer, n_embd, n_head = 23, 12, 2, 16, 4
    sd = hf_state_dict(rng, vocab, n_ctx, n_layer, n_embd, prefix)
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    loaded = load_file(str(tmp_path / "model.safetensors"))
    config, params = load_gpt2_hf(loaded, GPTConfig(vocab_size=vocab, block_size=n_ctx, n_layer=n_layer, n_head=n_head,
                                                    n_embd=n_embd))
    model = GPT(config)
    idx = rng.integers(0, vocab, (3, n_ctx))
    want = np_gpt2_logits(sd, idx, n_head)
    got = np.asarray(tc.jit(model)(params, idx))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    # the converted parameters have the names and shapes the model's own init uses
    assert tc.tree_map(np.shape, params) == tc.tree_map(np.shape, model.init(tc.random.key(0)))


def test_gpt2_hf_config_is_inferred() -> None:
    rng = np.random.default_rng(1)
    sd = hf_state_dict(rng, vocab=9, n_ctx=6, n_layer=3, n_embd=128, buffers=False)
    config, params = load_gpt2_hf(sd)
    assert (config.vocab_size, config.block_size, config.n_layer, config.n_head, config.n_embd) == (9, 6, 3, 2, 128)
    idx = rng.integers(0, 9, (1, 6))
    np.testing.assert_allclose(np.asarray(GPT(config)(params, idx)), np_gpt2_logits(sd, idx, 2), rtol=1e-9, atol=1e-9)
    with pytest.raises(tc.TensorcError, match="wte"):
        load_gpt2_hf({"foo.weight": np.zeros(3)})


def test_presets() -> None:
    assert from_preset("gpt2").to_dict() == {**GPTConfig().to_dict(), **PRESETS["gpt2"]}
    assert from_preset("mini", vocab_size=7).vocab_size == 7
    with pytest.raises(tc.TensorcError, match="preset"):
        from_preset("huge")


# ----------------------------------------------------------------------------- gradients


def test_gpt_loss_gradcheck_float64() -> None:
    cfg = GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=2, n_embd=8)
    model = GPT(cfg)
    params = f64(model.init(tc.random.key(3)))
    # larger-than-init weights so every path (attention included) carries gradient signal
    params = tc.tree_map(lambda a: a + np.random.default_rng(a.size).standard_normal(a.shape) * 0.3, params)
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 7, (2, 4)), rng.integers(0, 7, (2, 4))
    # Every parameter is checked element by element, except the three largest matrices (700 of the 976
    # numbers): those are checked along 4 random directions each, W = W0 + sum_i c_i D_i, d loss/d c_i
    # = <d loss/d W, D_i>. That keeps the test to a few seconds on the reference backend.
    names = [("attn", "qkv"), ("mlp", "fc"), ("mlp", "proj")]
    base = {f"{m}.{n}": params["blocks"][0][m][n]["weight"] for m, n in names}
    directions = {name: rng.standard_normal((4, *w.shape)) for name, w in base.items()}
    small = tc.tree_map(lambda a: a, params)  # a copy without those three weights
    for m, n in names:
        del small["blocks"][0][m][n]["weight"]
    coeffs = {name: np.zeros(4) for name in base}

    def loss(small: dict[str, Any], coeffs: dict[str, Any]) -> tc.Tensor:
        full = tc.tree_map(lambda a: a, small)
        for m, n in names:
            name = f"{m}.{n}"
            full["blocks"][0][m][n]["weight"] = base[name] + (tc.reshape(coeffs[name], (4, 1, 1)) * directions[name]).sum(0)
        return model.loss(full, idx, targets)

    assert "weight" not in small["blocks"][0]["mlp"]["fc"] and "weight" in params["blocks"][0]["mlp"]["fc"]
    grads = tc.grad(loss, argnums=(0, 1))(small, coeffs)
    assert all(np.abs(np.asarray(g)).max() > 1e-4 for g in tc.tree_flatten(grads)[0])  # no vacuous zero gradients
    assert tc.gradcheck(loss, small, coeffs)


# ----------------------------------------------------------------------------- KV cache


def test_prefill_and_decode_match_full_forward_at_every_position() -> None:
    cfg = tiny()
    model = GPT(cfg)
    params = model.init(tc.random.key(1))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, (2, cfg.block_size))
    full = np.asarray(tc.jit(model)(params, tokens))  # (B, T, V); causal, so position p sees tokens[:p+1]
    gen = Generator(model)
    prompt = 3
    logits, cache = gen.prefill(params, tokens[:, :prompt])
    np.testing.assert_allclose(logits, full[:, prompt - 1], rtol=1e-4, atol=1e-5)
    for pos in range(prompt, cfg.block_size):
        logits, cache = gen.decode(params, tokens[:, pos:pos + 1], cache, pos)
        np.testing.assert_allclose(logits, full[:, pos], rtol=1e-4, atol=1e-5, err_msg=f"position {pos}")
    assert gen._decode.compile_count == 1
    assert gen._prefill.compile_count == 1
    short = Generator(model, max_len=4)  # a cache shorter than the window
    _, cache = short.prefill(params, tokens[:, :prompt])
    with pytest.raises(tc.TensorcError, match="outside the KV cache"):
        short.decode(params, tokens[:, 4:5], cache, 4)
    with pytest.raises(tc.TensorcError):
        short.prefill(params, tokens[:, :5])


@pytest.mark.parametrize("sampling", [dict(temperature=0.0), dict(temperature=1.0), dict(top_k=3), dict(top_p=0.8),
                                      dict(temperature=0.7, top_k=5, top_p=0.9)])
def test_generate_with_and_without_cache_agree(sampling: dict[str, Any]) -> None:
    cfg = tiny(n_layer=1)
    model = GPT(cfg)
    params = model.init(tc.random.key(2))
    gen = Generator(model)
    outputs = set()
    for seed in range(3):
        cached = generate(model, params, [1, 2, 3], 6, seed=seed, use_cache=True, generator=gen, **sampling)
        uncached = generate(model, params, [1, 2, 3], 6, seed=seed, use_cache=False, **sampling)
        assert cached == uncached, f"seed {seed}"
        assert len(cached) == 9 and cached[:3] == [1, 2, 3]
        outputs.add(tuple(cached))
    assert gen._decode.compile_count == 1
    if sampling.get("temperature") != 0.0:
        assert len(outputs) > 1  # the seed matters when sampling


def test_generate_stops_and_slides_past_the_window() -> None:
    cfg = tiny(n_layer=1, block_size=8)
    model = GPT(cfg)
    params = model.init(tc.random.key(4))
    greedy = generate(model, params, [5], 6, temperature=0.0)
    stop = greedy[3]
    first = greedy.index(stop, 1)
    assert generate(model, params, [5], 6, temperature=0.0, stop_token=stop) == greedy[:first + 1]
    # longer than block_size: the window slides (no cache), no error
    long = generate(model, params, [1, 2, 3, 4, 5, 6], 5, temperature=0.0)
    assert len(long) == 11
    with pytest.raises(tc.TensorcError):
        generate(model, params, [], 3)


def test_decode_latency_is_flat_in_position() -> None:
    cfg = GPTConfig(vocab_size=17, block_size=512, n_layer=1, n_head=2, n_embd=16)
    model = GPT(cfg)
    params = model.init(tc.random.key(0))
    gen = Generator(model)
    _, cache = gen.prefill(params, np.ones((1, 4), np.int64))
    token = np.ones((1, 1), np.int64)

    def seconds(pos: int) -> float:
        t0 = time.perf_counter()
        gen.decode(params, token, cache, pos)
        return time.perf_counter() - t0

    for pos in (10, 500):  # warm-up (the compile happens on the first call)
        seconds(pos)
    order = random.Random(0)
    for _ in range(3):  # a loaded machine can make one round noisy; flat means some round shows it
        # both positions in a random order each time, so they see the same background load
        timings: dict[int, list[float]] = {10: [], 500: []}
        for _ in range(21):
            for pos in order.sample([10, 500], 2):
                timings[pos].append(seconds(pos))
        early, late = statistics.median(timings[10]), statistics.median(timings[500])
        if late < 2 * early:
            break
    assert gen._decode.compile_count == 1
    assert late < 2 * early, f"decode at position 500 took {late * 1e3:.2f} ms, at 10 {early * 1e3:.2f} ms"


# ----------------------------------------------------------------------------- dropout


def test_dropout_in_training_changes_outputs_and_needs_a_key() -> None:
    model = GPT(tiny(dropout=0.2))
    params = model.init(tc.random.key(0))
    idx = np.random.default_rng(0).integers(0, 13, (2, 8))
    plain = np.asarray(model(params, idx))
    np.testing.assert_array_equal(np.asarray(model(params, idx, key=tc.random.key(1))), plain)  # eval mode: no dropout
    a = np.asarray(model(params, idx, key=tc.random.key(1), training=True))
    b = np.asarray(model(params, idx, key=tc.random.key(2), training=True))
    again = np.asarray(model(params, idx, key=tc.random.key(1), training=True))
    assert not np.allclose(a, plain) and not np.allclose(a, b)
    np.testing.assert_array_equal(a, again)  # a key fixes the mask
    with pytest.raises(tc.TensorcError, match="key"):
        model(params, idx, training=True)
    # without dropout, training mode is the eval forward
    no_drop = GPT(tiny())
    np.testing.assert_array_equal(np.asarray(no_drop(params, idx, training=True)), plain)
