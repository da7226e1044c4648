"""The recurrent models (models/rnn.py, models/lstm.py) and the window / n-gram LMs
(models/window_lm.py): forward and gradients against an independent numpy
implementation (and PyTorch when it is installed), float64 gradchecks, the
scan's constant compile cost, state-dict loading, and `tensorc train lstm`."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorc as tc
from models.lstm import GRU, GRULM, LSTM, LSTMLM, GRUCell, LSTMCell, load_state_dict, read_tensors, save_state_dict
from models.rnn import RNN, RNNLM, RecurrentLMConfig, RNNCell, generate
from models.window_lm import FixedWindowLM, NGramLM, WindowLMConfig

LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
LMS = {"rnn": RNNLM, "lstm": LSTMLM, "gru": GRULM}

# ----------------------------------------------------------------------------- an independent numpy implementation
#
# Written from the PyTorch documentation's formulas, in float64, with a
# hand-written backward (BPTT). A state is a tuple: (h,) or (h, c).


def sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def np_step(cell: str, x: np.ndarray, state: tuple[np.ndarray, ...], w: tuple[np.ndarray, ...]) -> tuple[tuple[np.ndarray, ...], Any]:
    w_ih, w_hh, b_ih, b_hh = w
    h = state[0]
    n_h = h.shape[1]
    a_x, a_h = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
    if cell == "rnn":
        h2 = np.tanh(a_x + a_h)
        return (h2,), (x, state, h2)
    if cell == "lstm":
        a = a_x + a_h
        i, f, g, o = sigmoid(a[:, :n_h]), sigmoid(a[:, n_h:2 * n_h]), np.tanh(a[:, 2 * n_h:3 * n_h]), sigmoid(a[:, 3 * n_h:])
        c2 = f * state[1] + i * g
        h2 = o * np.tanh(c2)
        return (h2, c2), (x, state, (i, f, g, o, c2))
    r = sigmoid(a_x[:, :n_h] + a_h[:, :n_h])
    z = sigmoid(a_x[:, n_h:2 * n_h] + a_h[:, n_h:2 * n_h])
    hn = a_h[:, 2 * n_h:]
    n = np.tanh(a_x[:, 2 * n_h:] + r * hn)
    return ((1 - z) * n + z * h,), (x, state, (r, z, n, hn))


def np_step_backward(cell: str, cache: Any, d_state: list[np.ndarray], w: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
    """(dx, d_state_prev, dW_ih, dW_hh, db_ih, db_hh) of one step."""
    w_ih, w_hh = w[0], w[1]
    x, state, saved = cache
    h = state[0]
    d_prev = [np.zeros_like(s) for s in state]
    if cell == "rnn":
        d_x_side = d_h_side = d_state[0] * (1 - saved ** 2)
    elif cell == "lstm":
        i, f, g, o, c2 = saved
        dh, dc = d_state
        tc2 = np.tanh(c2)
        dc = dc + dh * o * (1 - tc2 ** 2)
        d_prev[1] = dc * f
        d_x_side = d_h_side = np.concatenate([dc * g * i * (1 - i), dc * state[1] * f * (1 - f), dc * i * (1 - g ** 2),
                                              dh * tc2 * o * (1 - o)], axis=1)
    else:
        r, z, n, hn = saved
        dh = d_state[0]
        dn = dh * (1 - z) * (1 - n ** 2)
        dz = dh * (h - n) * z * (1 - z)
        dr = dn * hn * r * (1 - r)
        d_prev[0] += dh * z
        d_x_side = np.concatenate([dr, dz, dn], axis=1)
        d_h_side = np.concatenate([dr, dz, dn * r], axis=1)
    d_prev[0] += d_h_side @ w_hh
    return d_x_side @ w_ih, d_prev, d_x_side.T @ x, d_h_side.T @ h, d_x_side.sum(0), d_h_side.sum(0)


def np_weights(sd: dict[str, np.ndarray], sfx: str) -> tuple[np.ndarray, ...]:
    return tuple(sd[f"{n}{sfx}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def np_layer(cell: str, sd: dict[str, np.ndarray], x: np.ndarray, state0: tuple[np.ndarray, ...], num_layers: int,
             bidirectional: bool, d_out: np.ndarray | None = None, d_final: tuple[np.ndarray, ...] | None = None) -> Any:
    """nn.RNN/LSTM/GRU forward on x (T, B, I) from state0 (each (L*D, B, H)); with d_out/d_final, also the
    backward: returns (out, finals, grads, dx, d_state0)."""
    n_dir = 2 if bidirectional else 1
    n_steps = x.shape[0]
    layer_inputs, tapes, finals = [], [], [[] for _ in state0]
    for layer in range(num_layers):
        layer_inputs.append(x)
        outs = []
        for d in range(n_dir):
            idx, sfx = layer * n_dir + d, f"_l{layer}" + ("_reverse" if d else "")
            state, ys, caches = tuple(s[idx] for s in state0), [None] * n_steps, {}
            for t in (reversed(range(n_steps)) if d else range(n_steps)):
                state, caches[t] = np_step(cell, x[t], state, np_weights(sd, sfx))
                ys[t] = state[0]
            tapes.append((layer, d, sfx, caches))
            for k, s in enumerate(state):
                finals[k].append(s)
            outs.append(np.stack(ys))
        x = np.concatenate(outs, axis=-1)
    out, finals = x, tuple(np.stack(f) for f in finals)
    if d_out is None:
        return out, finals
    grads = {k: np.zeros_like(v) for k, v in sd.items()}
    d_state0 = [np.zeros_like(s) for s in state0]
    hidden = state0[0].shape[-1]
    for layer in reversed(range(num_layers)):
        dx = np.zeros_like(layer_inputs[layer])
        for _, d, sfx, caches in [tp for tp in tapes if tp[0] == layer]:
            idx = layer * n_dir + d
            d_state = [g[idx].copy() for g in d_final]
            for t in (range(n_steps) if d else reversed(range(n_steps))):
                d_state[0] += d_out[t][:, d * hidden:(d + 1) * hidden]
                dx_t, d_state, *dw = np_step_backward(cell, caches[t], d_state, np_weights(sd, sfx))
                dx[t] += dx_t
                for name, g in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), dw):
                    grads[name + sfx] += g
            for k, g in enumerate(d_state):
                d_state0[k][idx] = g
        d_out = dx
    return out, finals, grads, d_out, tuple(d_state0)


# ----------------------------------------------------------------------------- helpers


def random_case(cell: str, num_layers: int, bidirectional: bool, batch_first: bool, seed: int = 0, t: int = 5, b: int = 3,
                i: int = 4, h: int = 3) -> tuple[Any, dict[str, np.ndarray], np.ndarray, tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    module = LAYERS[cell](i, h, num_layers, batch_first=batch_first, bidirectional=bidirectional, dtype=np.float64)
    sd = {k: rng.uniform(-0.8, 0.8, v.shape) for k, v in module.init(tc.random.key(seed)).items()}
    x = rng.standard_normal((b, t, i) if batch_first else (t, b, i))
    n = num_layers * (2 if bidirectional else 1)
    state0 = tuple(rng.standard_normal((n, b, h)) * 0.5 for _ in range(2 if cell == "lstm" else 1))
    return module, sd, x, state0


def tc_state(cell: str, state0: tuple[Any, ...]) -> Any:
    return state0 if cell == "lstm" else state0[0]


def flat_final(cell: str, final: Any) -> tuple[Any, ...]:
    return tuple(final) if cell == "lstm" else (final,)


def projections(out_shape: tuple[int, ...], state0: tuple[np.ndarray, ...], seed: int = 9) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(out_shape), tuple(rng.standard_normal(s.shape) for s in state0)


CONFIGS = [(cell, layers, bidi, bf) for cell in ("rnn", "lstm", "gru")
           for layers, bidi, bf in [(1, False, False), (2, True, True), (2, False, False), (1, True, False)]]


@pytest.mark.parametrize("cell,num_layers,bidirectional,batch_first", CONFIGS)
def test_layers_match_numpy_forward_and_backward(cell: str, num_layers: int, bidirectional: bool, batch_first: bool) -> None:
    module, sd, x, state0 = random_case(cell, num_layers, bidirectional, batch_first)
    x_tb = x.transpose(1, 0, 2) if batch_first else x
    out_ref, finals_ref = np_layer(cell, sd, x_tb, state0, num_layers, bidirectional)
    out, final = module(sd, x, tc_state(cell, state0))
    out = out.numpy().transpose(1, 0, 2) if batch_first else out.numpy()
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(flat_final(cell, final), finals_ref):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)

    r_out, r_final = projections(out_ref.shape, state0)

    def objective(params: Any, x: Any, state: Any) -> tc.Tensor:
        o, f = module(params, x, state)
        o = tc.transpose(o, 0, 1) if batch_first else o  # (T, B, D*H)
        return (o * r_out).sum() + sum((s * r).sum() for s, r in zip(flat_final(cell, f), r_final))

    g_params, g_x, g_state = tc.grad(objective, argnums=(0, 1, 2))(sd, x, tc_state(cell, state0))
    _, _, grads_ref, dx_ref, d_state_ref = np_layer(cell, sd, x_tb, state0, num_layers, bidirectional, r_out, r_final)
    for name in sd:
        np.testing.assert_allclose(np.asarray(g_params[name]), grads_ref[name], rtol=1e-10, atol=1e-12, err_msg=name)
    g_x = np.asarray(g_x)
    np.testing.assert_allclose(g_x.transpose(1, 0, 2) if batch_first else g_x, dx_ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(flat_final(cell, g_state), d_state_ref):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_cells_match_one_numpy_step(cell: str) -> None:
    rng = np.random.default_rng(3)
    module = CELLS[cell](4, 3, dtype=np.float64)
    p = {k: rng.uniform(-0.8, 0.8, v.shape) for k, v in module.init(tc.random.key(0)).items()}
    x, state = rng.standard_normal((2, 4)), tuple(rng.standard_normal((2, 3)) for _ in range(2 if cell == "lstm" else 1))
    want, _ = np_step(cell, x, state, tuple(p[n] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    got = flat_final(cell, module(p, x, tc_state(cell, state)))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-12, atol=1e-12)
    assert module.init(tc.random.key(0))["weight_ih"].shape == ({"rnn": 1, "lstm": 4, "gru": 3}[cell] * 3, 4)


def test_state_defaults_to_zeros_and_no_bias_works() -> None:
    module, sd, x, state0 = random_case("lstm", 2, True, False)
    zeros = tuple(np.zeros_like(s) for s in state0)
    np.testing.assert_allclose(module(sd, x)[0].numpy(), np_layer("lstm", sd, x, zeros, 2, True)[0], rtol=1e-12, atol=1e-12)
    no_bias = GRU(4, 3, bias=False, dtype=np.float64)
    p = no_bias.init(tc.random.key(1))
    assert sorted(p) == ["weight_hh_l0", "weight_ih_l0"]
    sd0 = {**p, "bias_ih_l0": np.zeros(9), "bias_hh_l0": np.zeros(9)}
    np.testing.assert_allclose(no_bias(p, x)[0].numpy(), np_layer("gru", sd0, x, (np.zeros((1, 3, 3)),), 1, False)[0],
                               rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- PyTorch, when installed


@pytest.mark.parametrize("cell,num_layers,bidirectional,batch_first", [c for c in CONFIGS if c[1] == 2 or c[2]])
def test_layers_match_torch(cell: str, num_layers: int, bidirectional: bool, batch_first: bool) -> None:
    torch = pytest.importorskip("torch")
    module, sd, x, state0 = random_case(cell, num_layers, bidirectional, batch_first, seed=5)
    ref = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        4, 3, num_layers, batch_first=batch_first, bidirectional=bidirectional).double()
    assert sorted(ref.state_dict()) == sorted(sd)  # the same names
    ref.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    tx = torch.tensor(x, requires_grad=True)
    ts = tuple(torch.tensor(s, requires_grad=True) for s in state0)
    t_out, t_final = ref(tx, ts if cell == "lstm" else ts[0])
    r_out, r_final = projections(tuple(t_out.shape), state0)
    loss = (t_out * torch.tensor(r_out)).sum() + sum((f * torch.tensor(r)).sum() for f, r in zip(flat_final(cell, t_final), r_final))
    loss.backward()

    def objective(params: Any, x: Any, state: Any) -> tc.Tensor:
        o, f = module(params, x, state)
        return (o * r_out).sum() + sum((s * r).sum() for s, r in zip(flat_final(cell, f), r_final))

    value, (g_params, g_x, g_state) = tc.value_and_grad(objective, argnums=(0, 1, 2))(sd, x, tc_state(cell, state0))
    assert float(value) == pytest.approx(loss.item(), rel=1e-12)
    for name, param in ref.named_parameters():
        np.testing.assert_allclose(np.asarray(g_params[name]), param.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(np.asarray(g_x), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for got, want in zip(flat_final(cell, g_state), ts):
        np.testing.assert_allclose(np.asarray(got), want.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_torch_language_model_state_dict_loads(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    class TorchLSTMLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(11, 4)
            self.rnn = torch.nn.LSTM(4, 5, 2, batch_first=True)
            self.head = torch.nn.Linear(5, 11)

        def forward(self, idx: Any) -> Any:
            return self.head(self.rnn(self.embedding(idx))[0])

    torch.manual_seed(0)
    ref = TorchLSTMLM()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "lm.safetensors"))
    model = LSTMLM(RecurrentLMConfig(vocab_size=11, n_embd=4, hidden_size=5, num_layers=2))
    params = load_state_dict(model, tmp_path / "lm.safetensors")
    idx = np.random.default_rng(0).integers(0, 11, (2, 7))
    np.testing.assert_allclose(model(params, idx).numpy(), ref(torch.tensor(idx)).detach().numpy(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- gradchecks (float64, tiny)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradcheck_cells_and_layers(cell: str) -> None:
    c = CELLS[cell](2, 2)
    x1 = np.random.default_rng(0).standard_normal((2, 2))
    assert tc.gradcheck(lambda p, x: c(p, x), c.init(tc.random.key(0)), x1)
    # stacked and bidirectional; hidden size 1 keeps the element-by-element differences few
    # (the cell above, and the exact comparisons with numpy and PyTorch, cover wider matrices)
    module, sd, x, state0 = random_case(cell, 2, True, True, t=3, b=2, i=2, h=1)
    assert tc.gradcheck(lambda p, x, s: module(p, x, s), sd, x, tc_state(cell, state0))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradcheck_language_models(cell: str) -> None:
    model = LMS[cell](RecurrentLMConfig(vocab_size=4, n_embd=2, hidden_size=2))
    idx = np.array([[0, 3, 1]])
    assert tc.gradcheck(lambda p: model.loss(p, idx, np.array([[3, 1, 2]])), model.init(tc.random.key(1)))


def test_gradcheck_window_lm() -> None:
    model = FixedWindowLM(WindowLMConfig(vocab_size=4, context=2, n_embd=2, hidden_size=3))
    assert tc.gradcheck(lambda p: model.loss(p, np.array([[0, 3, 1]]), np.array([[3, 1, 2]])), model.init(tc.random.key(1)))


# ----------------------------------------------------------------------------- language models


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_language_model_loss_matches_numpy(cell: str) -> None:
    model = LMS[cell](RecurrentLMConfig(vocab_size=7, n_embd=3, hidden_size=4, num_layers=2))
    params = model.init(tc.random.key(2))
    assert model.config.cell == cell and tc.nn.named_parameters(params).keys() >= {"embedding.weight", "rnn.weight_ih_l1", "head.bias"}
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 7, (2, 5)), rng.integers(0, 7, (2, 5))
    p64 = tc.tree_map(lambda a: np.asarray(a, np.float64), params)
    emb = p64["embedding"]["weight"][idx].transpose(1, 0, 2)  # (T, B, E)
    zeros = tuple(np.zeros((2, 2, 4)) for _ in range(2 if cell == "lstm" else 1))
    h = np_layer(cell, p64["rnn"], emb, zeros, 2, False)[0].transpose(1, 0, 2)  # (B, T, H)
    logits = h @ p64["head"]["weight"].T + p64["head"]["bias"]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, targets[..., None], -1).mean()
    assert float(tc.jit(model.loss)(params, idx, targets)) == pytest.approx(want, rel=1e-5)


def test_stateful_generation_equals_recomputing_the_whole_sequence() -> None:
    model = LSTMLM(RecurrentLMConfig(vocab_size=9, n_embd=4, hidden_size=8))
    params = model.init(tc.random.key(3))
    tokens = generate(model, params, [1, 2], 6, temperature=0.0)
    full = tc.jit(lambda p, idx: model(p, idx)[:, -1])
    for n in range(2, len(tokens)):  # each greedy token is the argmax after the tokens before it
        assert tokens[n] == int(np.argmax(np.asarray(full(params, np.asarray([tokens[:n]])))[0]))
    sampled = generate(model, params, [1, 2], 6, temperature=1.0, top_k=3, seed=7)
    assert sampled == generate(model, params, [1, 2], 6, temperature=1.0, top_k=3, seed=7) and len(sampled) == 8
    assert model._generator._decode.compile_count == 1  # one compiled decode step for every position and call
    stopped = generate(model, params, [1], 20, temperature=0.0, stop_token=tokens[2])
    assert stopped[-1] == tokens[2] and len(stopped) <= 21


def test_dropout_needs_a_key_and_is_deterministic_given_one() -> None:
    model = GRULM(RecurrentLMConfig(vocab_size=5, n_embd=4, hidden_size=4, num_layers=2, dropout=0.5))
    params = model.init(tc.random.key(0))
    idx = np.zeros((2, 3), np.int64)
    with pytest.raises(tc.TensorcError, match="key"):
        model.loss(params, idx, idx, training=True)
    a = float(model.loss(params, idx, idx, key=tc.random.key(1), training=True))
    assert a == float(model.loss(params, idx, idx, key=tc.random.key(1), training=True))
    assert a != float(model.loss(params, idx, idx, key=tc.random.key(2), training=True))
    assert float(model.loss(params, idx, idx)) == float(model.loss(params, idx, idx, key=tc.random.key(1)))


def test_training_step_graph_does_not_grow_with_sequence_length(record_property: Any) -> None:
    """The recurrence is a scan: T=16 and T=256 trace to the same graph, and compile in about the same time."""
    model = LSTMLM(RecurrentLMConfig(vocab_size=65, n_embd=16, hidden_size=32))
    params = model.init(tc.random.key(0))
    opt = tc.optim.AdamW(1e-3)
    opt_state = opt.init(params)

    def train_step(params: Any, opt_state: Any, x: Any, y: Any) -> Any:
        loss, grads = tc.value_and_grad(lambda p: model.loss(p, x, y))(params)
        grads, _ = tc.optim.clip_grad_norm(grads, 1.0)
        params, opt_state = opt.update(grads, opt_state, params)
        return loss, params, opt_state

    def compile_graph(t: int) -> tuple[float, Any, Any]:
        x = np.zeros((4, t), np.int64)
        t0 = time.perf_counter()
        lowered = tc.jit(train_step).lower(params, opt_state, x, x)
        optimized = lowered.optimized  # trace + autodiff + passes
        return time.perf_counter() - t0, lowered.graph, optimized

    compile_graph(8)  # warm up imports and caches
    seconds: dict[int, float] = {}
    graphs = {}
    for t in (16, 256):
        runs = [compile_graph(t) for _ in range(3)]
        seconds[t] = min(r[0] for r in runs)
        graphs[t] = runs[0][1:]
    record_property("compile_seconds_T16", seconds[16])
    record_property("compile_seconds_T256", seconds[256])
    print(f"LSTM LM train step, trace + passes: T=16 {seconds[16] * 1e3:.1f} ms, T=256 {seconds[256] * 1e3:.1f} ms")
    (g16, o16), (g256, o256) = graphs[16], graphs[256]
    assert len(g16.nodes) == len(g256.nodes) and len(o16.nodes) == len(o256.nodes)
    ops16 = [n.op for n in g16.nodes]
    assert ops16 == [n.op for n in g256.nodes]
    assert ops16.count("scan") == 2  # forward, and its reverse scan (BPTT); nothing unrolled
    assert max(seconds.values()) < 2 * min(seconds.values()), seconds


# ----------------------------------------------------------------------------- state dicts


def test_state_dict_round_trip_uses_torch_names(tmp_path: Path) -> None:
    lstm = LSTM(3, 4, num_layers=2, bidirectional=True)
    params = lstm.init(tc.random.key(0))
    names = [f"{kind}_{side}_l{layer}{sfx}" for layer in range(2) for sfx in ("", "_reverse")
             for kind in ("weight", "bias") for side in ("ih", "hh")]
    assert sorted(params) == sorted(names)
    assert params["weight_ih_l1_reverse"].shape == (16, 8) and params["bias_hh_l0"].shape == (16,)
    for suffix in (".safetensors", ".npz"):
        path = save_state_dict(params, tmp_path / f"lstm{suffix}", prefix="rnn.")
        assert sorted(read_tensors(path)) == sorted("rnn." + n for n in names)
        loaded = load_state_dict(lstm, path, prefix="rnn.")
        for name in names:
            np.testing.assert_array_equal(loaded[name], params[name])
            assert loaded[name].dtype == np.float32
    model = GRULM(RecurrentLMConfig(vocab_size=6, n_embd=3, hidden_size=4))
    lm_params = model.init(tc.random.key(1))
    loaded = load_state_dict(model, save_state_dict(lm_params, tmp_path / "gru_lm.npz"))
    assert tc.nn.named_parameters(loaded).keys() == tc.nn.named_parameters(lm_params).keys()
    sd = {k: np.zeros(v.shape) for k, v in params.items()}
    with pytest.raises(tc.TensorcError, match="missing"):
        load_state_dict(lstm, {k: v for k, v in sd.items() if k != "bias_hh_l1"})
    with pytest.raises(tc.TensorcError, match="shape"):
        load_state_dict(lstm, {**sd, "weight_hh_l0": np.zeros((4, 4))})
    with pytest.raises(tc.TensorcError, match="unexpected"):
        load_state_dict(lstm, {**sd, "extra": np.zeros(1)})
    assert sorted(load_state_dict(lstm, {**sd, "extra": np.zeros(1)}, strict=False)) == sorted(names)


# ----------------------------------------------------------------------------- window LM and n-gram baseline


def test_window_lm_matches_numpy_and_sees_only_its_window() -> None:
    cfg = WindowLMConfig(vocab_size=8, context=3, n_embd=2, hidden_size=5)
    model = FixedWindowLM(cfg)
    p = tc.tree_map(lambda a: np.asarray(a, np.float64), model.init(tc.random.key(0)))
    idx = np.array([[1, 2, 3, 4, 5, 6]])
    table = np.concatenate([p["embedding"]["weight"], p["pad"][None]])  # id 8 = the pad vector
    padded = np.concatenate([[8, 8], idx[0]])
    e = np.stack([table[padded[t:t + 3]].reshape(-1) for t in range(6)])  # [e(t-2); e(t-1); e(t)]
    h = np.tanh(e @ p["hidden"]["weight"].T + p["hidden"]["bias"])
    want = h @ p["head"]["weight"].T + p["head"]["bias"]
    np.testing.assert_allclose(model(p, idx).numpy()[0], want, rtol=1e-12, atol=1e-12)
    from models.window_lm import generate as window_generate

    assert len(window_generate(model, p, [1], 4, temperature=0.0)) == 5
    changed = idx.copy()
    changed[0, 1] = 7  # outside the window of positions 4 and 5
    diff = np.abs(model(p, changed).numpy() - model(p, idx).numpy()).max(-1)[0]
    assert (diff[1:4] > 0).all() and (diff[4:] == 0).all() and diff[0] == 0


def test_ngram_probabilities_sum_to_one_and_perplexity_by_hand() -> None:
    tokens = [0, 1, 0, 1, 2]
    bigram = NGramLM(n=2, vocab_size=3, eps=0.5).fit(tokens)
    for ctx in ([0], [1], [2]):  # 2 is never a context: uniform
        assert bigram.probs(ctx).sum() == pytest.approx(1.0)
    np.testing.assert_allclose(bigram.probs([2]), [1 / 3] * 3)
    # count(0,1)=2, count(0)=2; count(1,2)=1, count(1)=2; count(2)=0
    by_hand = [(2 + 0.5) / (2 + 1.5), (1 + 0.5) / (2 + 1.5), 0.5 / 1.5]
    assert bigram.perplexity([0, 1, 2, 0]) == pytest.approx(math.exp(-sum(map(math.log, by_hand)) / 3))
    unigram = NGramLM(n=1, vocab_size=3, eps=1.0).fit(tokens)  # counts 2, 2, 1 of 5
    np.testing.assert_allclose(unigram.probs([]), [3 / 8, 3 / 8, 2 / 8])
    trigram = NGramLM(n=3, vocab_size=4, eps=0.1).fit(np.random.default_rng(0).integers(0, 4, 200))
    for ctx in ([0, 0], [3, 1], [2, 2]):
        assert trigram.probs(ctx).sum() == pytest.approx(1.0)
    # the same add-ε bigram as tensorc.training's baseline
    from tensorc.training import bigram_baseline

    rng = np.random.default_rng(1)
    train, heldout = rng.integers(0, 5, 300), rng.integers(0, 5, 50)
    nll, eps = bigram_baseline(train, heldout, 5)
    assert -NGramLM(2, 5, eps).fit(train).log_probs(heldout).mean() == pytest.approx(nll)


# ----------------------------------------------------------------------------- the command line


def test_tensorc_train_lstm_from_the_command_line(tmp_path: Path, capsys: Any) -> None:
    from tensorc import cli
    from tensorc.data import default_corpus

    data = tmp_path / "text.txt"
    data.write_text(default_corpus()[:4000])
    out = tmp_path / "run"
    argv = ["train", "lstm", "--preset", "nano", "--steps", "2", "--data", str(data), "--out", str(out), "--batch-size", "2",
            "--eval-every", "1", "--sample-tokens", "5", "--no-progress", "--warmup", "1"]
    assert cli.main(argv) == 0
    assert (out / "last").exists() and len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert "sample:" in capsys.readouterr().out
    assert cli.main(["generate", "--checkpoint", str(out), "--prompt", "Th", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("Th")


# ----------------------------------------------------------------------------- docs and doctests


def test_docs_page_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_docs import PAGES, run_page

    if "models-recurrent.md" in PAGES:
        pytest.skip("tests/test_docs.py runs this page")
    monkeypatch.chdir(tmp_path)
    with tc.config():
        run_page("models-recurrent.md", tmp_path)


@pytest.mark.parametrize("module", ["models.rnn", "models.lstm", "models.window_lm"])
def test_module_doctests(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
