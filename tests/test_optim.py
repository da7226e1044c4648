"""tc.optim against numpy references of PyTorch's update rules, clipping, schedules, a
jitted training step that compiles once, and (when installed) torch.optim itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tensorc as tc
from tensorc import nn, optim
from tensorc.errors import TensorcError


def as_np(x: object) -> np.ndarray:
    return np.asarray(x.numpy() if isinstance(x, tc.Tensor) else x)


def tree_np(tree: object) -> object:
    return tc.tree_map(as_np, tree)


def make_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((3, 4)).astype(dtype), "b": rng.standard_normal(4).astype(dtype),
            "blocks": [{"k": rng.standard_normal((2, 2, 2)).astype(dtype)}]}


def grad_sequence(params, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [tc.tree_map(lambda p: rng.standard_normal(np.shape(p)).astype(np.asarray(p).dtype), params) for _ in range(steps)]


def run_optimizer(opt, params, grads_seq):
    state = opt.init(params)
    for g in grads_seq:
        params, state = opt.update(g, state, params)
        params, state = tree_np(params), tree_np(state)
    return params, state


# ----------------------------------------------------------------------------- numpy references (PyTorch's formulas)


def ref_sgd(params, grads_seq, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    names = nn.named_parameters(params)
    p = {k: v.astype(np.float64).copy() for k, v in names.items()}
    buf: dict[str, np.ndarray] = {}
    for grads in grads_seq:
        g_all = nn.named_parameters(grads)
        for k in p:
            g = g_all[k] + weight_decay * p[k]
            if momentum:
                buf[k] = g.copy() if k not in buf else momentum * buf[k] + g  # dampening 0
                g = g + momentum * buf[k] if nesterov else buf[k]
            p[k] = p[k] - lr * g
    return p


def ref_adam(params, grads_seq, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False, decays=None):
    """torch.optim.Adam (decoupled=False, L2 in the gradient) / AdamW (decoupled: p -= lr*wd*p first)."""
    b1, b2 = betas
    p = {k: v.astype(np.float64).copy() for k, v in nn.named_parameters(params).items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, grads in enumerate(grads_seq, start=1):
        g_all = nn.named_parameters(grads)
        step_lr = lr(t - 1) if callable(lr) else lr
        for k in p:
            wd = weight_decay if decays is None or decays[k] else 0.0
            g = g_all[k].astype(np.float64)
            if decoupled:
                p[k] = p[k] * (1 - step_lr * wd)
            else:
                g = g + wd * p[k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            p[k] = p[k] - step_lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def assert_params_close(got, want, **tol):
    got = nn.named_parameters(got)
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_allclose(as_np(got[k]), want[k], err_msg=k, **tol)


# ----------------------------------------------------------------------------- update rules


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 0.0), (0.8, True, 0.05)])
def test_sgd_matches_reference(momentum, nesterov, wd):
    params = make_params()
    grads = grad_sequence(params, 4)
    got, state = run_optimizer(optim.SGD(lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd), params, grads)
    assert_params_close(got, ref_sgd(params, grads, 0.1, momentum, nesterov, wd), rtol=1e-12, atol=1e-12)
    assert int(state["step"]) == 4
    assert ("momentum" in state) == bool(momentum)


def test_nesterov_differs_from_plain_momentum():
    params = make_params()
    grads = grad_sequence(params, 3)
    plain, _ = run_optimizer(optim.SGD(lr=0.1, momentum=0.9), params, grads)
    nest, _ = run_optimizer(optim.SGD(lr=0.1, momentum=0.9, nesterov=True), params, grads)
    assert not np.allclose(plain["w"], nest["w"])
    with pytest.raises(TensorcError, match="Nesterov"):
        optim.SGD(nesterov=True)


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_reference(wd):
    params = make_params()
    grads = grad_sequence(params, 5)
    got, state = run_optimizer(optim.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=wd), params, grads)
    want = ref_adam(params, grads, 0.01, (0.8, 0.99), 1e-6, wd)
    assert_params_close(got, want, rtol=1e-10, atol=1e-12)
    assert int(state["step"]) == 5


def test_adamw_matches_reference_with_decoupled_decay_and_schedule():
    params = make_params()
    grads = grad_sequence(params, 6)
    sched = optim.warmup_cosine(0.05, 2, 6, min_lr=0.005)
    opt = optim.AdamW(lr=sched, weight_decay=0.3, decay_mask=lambda name, p: True)
    got, _ = run_optimizer(opt, params, grads)

    def lr(s):  # the schedule's formula, written out
        return 0.05 * (s + 1) / 2 if s < 2 else 0.005 + 0.5 * (0.05 - 0.005) * (1 + math.cos(math.pi * (s - 2) / 4))

    want = ref_adam(params, grads, lr, weight_decay=0.3, decoupled=True)
    assert_params_close(got, want, rtol=1e-6, atol=1e-9)  # the schedule runs in float32
    # decoupled decay is not Adam's L2 decay
    l2 = ref_adam(params, grads, lr, weight_decay=0.3, decoupled=False)
    assert not np.allclose(want["w"], l2["w"], rtol=1e-4)


def test_float32_params_stay_float32():
    params = make_params(np.float32)
    got, state = run_optimizer(optim.AdamW(lr=0.01), params, grad_sequence(params, 3))
    assert all(v.dtype == np.float32 for v in nn.named_parameters(got).values())
    assert all(v.dtype == np.float32 for k, v in nn.named_parameters(state).items() if k != "step")
    want = ref_adam(params, grad_sequence(params, 3), 0.01, weight_decay=0.01, decoupled=True,
                    decays={k: np.ndim(v) >= 2 for k, v in nn.named_parameters(params).items()})
    assert_params_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make_opt", [optim.SGD, optim.Adam, optim.AdamW])
def test_a_schedule_returning_a_numpy_float64_does_not_promote_float32_params(make_opt):
    opt = make_opt(lr=lambda step: np.float64(0.1))
    params = make_params(np.float32)
    got, state = run_optimizer(opt, params, grad_sequence(params, 2))
    assert {v.dtype for v in nn.named_parameters(got).values()} == {np.dtype(np.float32)}
    assert {v.dtype for k, v in nn.named_parameters(state).items() if k != "step"} <= {np.dtype(np.float32)}


def test_adamw_default_decay_mask_skips_vectors_and_scalars():
    params = {"w": np.ones((2, 3)), "b": np.ones(3), "gain": np.ones(()), "blocks": [{"conv": np.ones((1, 2, 2))}]}
    zero = tc.tree_map(np.zeros_like, params)
    got, _ = run_optimizer(optim.AdamW(lr=0.1, weight_decay=0.5), params, [zero])  # zero gradient: only decay moves p
    np.testing.assert_allclose(got["w"], 1 - 0.1 * 0.5)
    np.testing.assert_allclose(got["blocks"][0]["conv"], 1 - 0.1 * 0.5)
    np.testing.assert_array_equal(got["b"], 1.0)
    np.testing.assert_array_equal(got["gain"], 1.0)


def test_adamw_decay_mask_gets_dotted_parameter_names():
    params = {"wte": {"weight": np.ones((2, 2))}, "blocks": [{"fc": {"weight": np.ones((2, 2)), "bias": np.ones(2)}}]}
    seen = []

    def mask(name, p):
        seen.append((name, tuple(p.shape)))
        return name != "wte.weight"

    zero = tc.tree_map(np.zeros_like, params)
    got, _ = run_optimizer(optim.AdamW(lr=0.1, weight_decay=0.5, decay_mask=mask), params, [zero])
    assert sorted(seen) == sorted([(n, np.shape(v)) for n, v in nn.named_parameters(params).items()])
    np.testing.assert_array_equal(got["wte"]["weight"], 1.0)
    np.testing.assert_allclose(got["blocks"][0]["fc"]["weight"], 0.95)
    np.testing.assert_allclose(got["blocks"][0]["fc"]["bias"], 0.95)


def test_step_counter_keeps_counting_past_float32_integers():
    opt = optim.SGD(lr=optim.warmup_cosine(1.0, 0, 2**25))
    params = {"w": np.ones(1, np.float32)}
    state = {"step": np.asarray(2**24, opt.init(params)["step"].dtype)}
    _, state = opt.update({"w": np.ones(1, np.float32)}, state, params)
    assert int(as_np(state["step"])) == 2**24 + 1
    adam = optim.AdamW()
    s = {**adam.init(params), "step": np.asarray(2**24 + 1, np.int32)}
    assert int(as_np(adam.update({"w": np.ones(1, np.float32)}, s, params)[1]["step"])) == 2**24 + 2


def test_learning_rate_reads_the_state_step():
    opt = optim.AdamW(lr=optim.warmup_cosine(1.0, 4, 8))
    state = opt.init({"w": np.ones(2, np.float32)})
    assert float(as_np(opt.learning_rate(state))) == pytest.approx(0.25)
    _, state = opt.update({"w": np.ones(2, np.float32)}, state, {"w": np.ones(2, np.float32)})
    assert float(as_np(opt.learning_rate(state))) == pytest.approx(0.5)


def test_gradient_structure_must_match_params():
    opt = optim.SGD(lr=0.1)
    params = {"w": np.ones(2), "b": np.ones(2)}
    with pytest.raises(TensorcError, match="structure"):
        opt.update({"w": np.ones(2)}, opt.init(params), params)


# ----------------------------------------------------------------------------- clipping and schedules


def test_global_norm_and_clip():
    grads = {"a": np.array([3.0, 0.0], np.float32), "b": [np.array([[4.0]], np.float32)], "c": np.zeros((), np.float32)}
    assert float(as_np(optim.global_norm(grads))) == pytest.approx(5.0)
    clipped, norm = optim.clip_grad_norm(grads, 1.0)
    assert float(as_np(norm)) == pytest.approx(5.0)  # the norm before clipping
    np.testing.assert_allclose(as_np(clipped["a"]), [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(as_np(clipped["b"][0]), [[0.8]], rtol=1e-5)
    assert float(as_np(optim.global_norm(clipped))) == pytest.approx(1.0, rel=1e-5)
    # below the threshold the gradients are returned unchanged, bit for bit
    same, norm = optim.clip_grad_norm(grads, 10.0)
    assert float(as_np(norm)) == pytest.approx(5.0)
    for k in ("a", "c"):
        np.testing.assert_array_equal(as_np(same[k]), grads[k])
    np.testing.assert_array_equal(as_np(same["b"][0]), grads["b"][0])


def test_global_norm_of_half_precision_accumulates_in_float32():
    g = {"x": np.full(4096, 300.0, np.float16)}  # sum of squares 3.7e8 overflows float16
    assert float(as_np(optim.global_norm(g))) == pytest.approx(300.0 * 64, rel=1e-3)


def test_clip_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    tensors = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g)
    want_norm = float(torch.nn.utils.clip_grad_norm_(tensors, 0.5))
    clipped, norm = optim.clip_grad_norm(grads, 0.5)
    assert float(as_np(norm)) == pytest.approx(want_norm, rel=1e-6)
    for c, t in zip(clipped, tensors):
        np.testing.assert_allclose(as_np(c), t.grad.numpy(), rtol=1e-6)


def test_warmup_cosine_values():
    base, warmup, total, floor = 3e-3, 10, 110, 3e-4
    f = optim.warmup_cosine(base, warmup, total, floor)

    def at(s):
        return float(as_np(f(tc.tensor(np.int32(s)))))

    for s in range(warmup):  # linear warmup, reaching base_lr at the last warmup step
        assert at(s) == pytest.approx(base * (s + 1) / warmup, rel=1e-6)
    assert at(warmup) == pytest.approx(base, rel=1e-6)
    assert at(warmup + 50) == pytest.approx((base + floor) / 2, rel=1e-6)  # cosine mid-point
    assert at(warmup + 25) == pytest.approx(floor + (base - floor) * (1 + math.cos(math.pi / 4)) / 2, rel=1e-6)
    values = [at(s) for s in range(warmup, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    for s in (total, total + 1, 10 * total):
        assert at(s) == pytest.approx(floor, rel=1e-6)
    assert optim.constant(0.1)(tc.tensor(np.int32(5))) == 0.1
    no_warmup = optim.warmup_cosine(1.0, 0, 10)
    assert float(as_np(no_warmup(tc.tensor(np.int32(0))))) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- a compiled training step


def tiny_mlp():
    fc1, fc2 = nn.Linear(4, 16), nn.Linear(16, 1)
    k1, k2 = tc.random.split(tc.random.key(0), 2)
    params = {"fc1": fc1.init(k1), "fc2": fc2.init(k2)}

    def loss_fn(params, x, y):
        return nn.functional.mse_loss(fc2(params["fc2"], nn.functional.relu(fc1(params["fc1"], x))), y)

    return params, loss_fn


def make_train_step(loss_fn, opt, max_norm):
    def train_step(params, opt_state, x, y):
        loss, grads = tc.value_and_grad(loss_fn)(params, x, y)
        grads, norm = optim.clip_grad_norm(grads, max_norm)
        params, opt_state = opt.update(grads, opt_state, params)
        return params, opt_state, loss, norm

    return train_step


def test_jitted_train_step_compiles_once_and_matches_eager_and_reference():
    params, loss_fn = tiny_mlp()
    opt = optim.AdamW(lr=optim.warmup_cosine(1e-2, 2, 5), weight_decay=0.1)
    step_fn = make_train_step(loss_fn, opt, max_norm=0.5)
    jitted = tc.jit(step_fn)
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32))
               for _ in range(5)]
    jp, js = params, opt.init(params)
    ep, es = params, opt.init(params)
    ref = {k: v.astype(np.float64) for k, v in nn.named_parameters(params).items()}
    m = {k: np.zeros_like(v) for k, v in ref.items()}
    v = {k: np.zeros_like(x) for k, x in ref.items()}
    clipped_once = False
    for t, (x, y) in enumerate(batches, start=1):
        # reference: numpy clip + AdamW on tensorc's gradients at the reference parameters
        grads = nn.named_parameters(tree_np(tc.grad(loss_fn)(nn.unflatten_parameters(
            {k: a.astype(np.float32) for k, a in ref.items()}, params), x, y)))
        gnorm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
        scale = min(0.5 / (gnorm + 1e-6), 1.0)
        clipped_once |= scale < 1.0
        lr = 1e-2 * t / 2 if t - 1 < 2 else 0.5 * 1e-2 * (1 + math.cos(math.pi * (t - 1 - 2) / 3))
        for k in ref:
            g = grads[k] * scale
            if ref[k].ndim >= 2:
                ref[k] = ref[k] * (1 - lr * 0.1)
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            ref[k] = ref[k] - lr * (m[k] / (1 - 0.9**t)) / (np.sqrt(v[k] / (1 - 0.999**t)) + 1e-8)

        jp, js, jloss, jnorm = jitted(jp, js, x, y)
        ep, es, eloss, enorm = tree_np(step_fn(ep, es, x, y))
        assert float(jnorm) == pytest.approx(gnorm, rel=1e-4)
        np.testing.assert_allclose(jloss, eloss, rtol=1e-5)
    assert jitted.compile_count == 1  # the step counter is a tensor: no recompiles as it (and the lr) change
    assert clipped_once
    assert int(js["step"]) == 5 and js["step"].dtype == np.int32
    assert_params_close(jp, ref, rtol=1e-4, atol=1e-6)
    assert_params_close(jp, {k: v.astype(np.float64) for k, v in nn.named_parameters(ep).items()}, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("make_opt", [lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True), lambda: optim.Adam(lr=0.05)],
                         ids=["sgd_nesterov", "adam"])
def test_linear_regression_converges(make_opt):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    true_w, true_b = np.array([[1.5, -2.0, 0.5]], np.float32), np.array([0.3], np.float32)
    y = x @ true_w.T + true_b
    lin = nn.Linear(3, 1)
    params = lin.init(tc.random.key(0))

    def loss_fn(p, x, y):
        return nn.functional.mse_loss(lin(p, x), y)

    opt = make_opt()
    step = tc.jit(make_train_step(loss_fn, opt, max_norm=10.0))
    state = opt.init(params)
    first = None
    for _ in range(300):
        params, state, loss, _ = step(params, state, x, y)
        first = float(loss) if first is None else first
    assert float(loss) < 1e-5 * first + 1e-6
    np.testing.assert_allclose(params["weight"], true_w, atol=1e-3)
    np.testing.assert_allclose(params["bias"], true_b, atol=1e-3)
    assert step.compile_count == 1


# ----------------------------------------------------------------------------- against torch.optim


@pytest.mark.parametrize("name", ["adamw", "adam_l2", "sgd_nesterov_wd"])
def test_matches_torch_optim(name):
    torch = pytest.importorskip("torch")
    params = make_params(np.float32)
    grads = grad_sequence(params, 5)
    names = list(nn.named_parameters(params))
    tparams = [torch.nn.Parameter(torch.tensor(nn.named_parameters(params)[n])) for n in names]
    if name == "adamw":
        ours = optim.AdamW(lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, decay_mask=lambda n, p: True)
        theirs = torch.optim.AdamW(tparams, lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    elif name == "adam_l2":
        ours = optim.Adam(lr=0.01, weight_decay=0.1)
        theirs = torch.optim.Adam(tparams, lr=0.01, weight_decay=0.1)
    else:
        ours = optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
        theirs = torch.optim.SGD(tparams, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    for g in grads:
        for t, n in zip(tparams, names):
            t.grad = torch.tensor(nn.named_parameters(g)[n])
        theirs.step()
    got, _ = run_optimizer(ours, params, grads)
    assert_params_close(got, {n: t.detach().numpy() for n, t in zip(names, tparams)}, rtol=1e-5, atol=1e-6)
