"""The scheduler: kernel counts, refused fusions, views, the buffer plan, roles, reports.

Fusion is tested by counting kernels and buffers. Most cases schedule the
*primitive* graph (pattern fusion switched off), so the counts measure the
scheduler, not the fused ops that pattern fusion would put in its place.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensorc as tc
from tensorc.backends.reference import ScheduledExecutable, evaluate, run_schedule
from tensorc.passes import cse, dce, optimize, simplify
from tensorc.schedule import Schedule, View, schedule_graph
from tensorc.schedule.report import report

F = tc.nn.functional
RNG = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.5).astype(np.float32)


@contextlib.contextmanager
def no_pattern_fusion(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep fused ops out: both the jit pipeline and autodiff's pre-passes look fusion up when they run."""
    import tensorc.passes.fusion as fusion

    with monkeypatch.context() as m:
        m.setattr(fusion, "fuse_patterns", lambda graph: graph)
        yield


def primitive_schedule(fn: Any, *args: Any) -> Schedule:
    """Schedule ``fn``'s graph after simplify, CSE and DCE only (no pattern fusion)."""
    graph, _ = optimize(tc.jit(fn).lower(*args).graph, [("simplify", simplify), ("cse", cse), ("dce", dce)])
    return schedule_graph(graph)


def check_runs_like_evaluate(s: Schedule, *args: Any) -> None:
    leaves = [np.asarray(a) for a in tc.tree_flatten(args)[0] if isinstance(a, (np.ndarray, np.generic))]
    got, want = run_schedule(s, leaves), evaluate(s.graph, leaves)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- kernel counts


def test_softmax_over_last_axis_is_one_kernel() -> None:
    x = rand(8, 16)
    s = primitive_schedule(lambda x: tc.softmax(x, -1), x)
    assert [k.pattern for k in s.kernels] == ["softmax-row"]
    assert s.kernels[0].ops == ["max", "sub", "exp", "sum", "div"]
    assert len(tc.jit(lambda x: tc.softmax(x, -1)).lower(x).kernels) == 1
    check_runs_like_evaluate(s, x)


def test_log_softmax_is_one_kernel() -> None:
    s = primitive_schedule(lambda x: tc.log_softmax(x, -1), rand(4, 32))
    assert [k.pattern for k in s.kernels] == ["log-softmax-row"]


def test_layernorm_forward_from_primitives_is_one_kernel() -> None:
    x, w, b = rand(2, 8, 32), rand(32), rand(32)
    fn = lambda x, w, b: F.layer_norm(x, 32, w, b)  # noqa: E731
    s = primitive_schedule(fn, x, w, b)
    assert [k.pattern for k in s.kernels] == ["layernorm-row"]
    assert s.kernels[0].ops.count("sum") == 2
    assert len(tc.jit(fn).lower(x, w, b).kernels) == 1  # with pattern fusion: one fused_layernorm
    check_runs_like_evaluate(s, x, w, b)


def test_cross_entropy_forward_is_at_most_two_kernels() -> None:
    x, t = rand(8, 16), np.arange(8) % 16
    s = primitive_schedule(lambda x, t: F.cross_entropy(x, t), x, t)
    assert len(s.kernels) <= 2
    assert s.kernels[0].pattern == "log-softmax-row"
    check_runs_like_evaluate(s, x, t)


def test_mlp_layer_is_one_matmul_kernel_with_epilogue() -> None:
    x, w, b = rand(8, 16), rand(16, 32), rand(32)
    s = primitive_schedule(lambda x, w, b: F.gelu(x @ w + b), x, w, b)
    assert len(s.kernels) == 1
    assert s.kernels[0].pattern == "matmul+bias+gelu"
    assert s.kernels[0].flops > 2 * 8 * 16 * 32
    check_runs_like_evaluate(s, x, w, b)


def test_elementwise_chain_is_one_kernel() -> None:
    x, y = rand(4, 5), rand(4, 5)
    s = primitive_schedule(lambda x, y: tc.tanh(tc.exp(x) * y + 1.0) - x / 3.0, x, y)
    assert [k.pattern for k in s.kernels] == ["elementwise"]
    k = s.kernels[0]
    assert k.bytes == 3 * 4 * 5 * 4  # two inputs read once, one output written
    assert k.intensity == k.flops / k.bytes


def test_matmul_takes_no_reduction_epilogue_and_says_why() -> None:
    s = primitive_schedule(lambda x, w: (x @ w).sum(-1), rand(4, 8), rand(8, 8))
    assert [k.pattern for k in s.kernels] == ["matmul", "row-reduce(sum)"]
    assert any("matmul epilogue must be elementwise" in r.reason for r in s.refusals)


def test_refused_merge_that_would_create_a_cycle_has_a_reason() -> None:
    def fn(x: Any, w: Any) -> Any:
        e = tc.exp(x)                          # (8, 16): read by a reduction and by the matmul
        return e.sum(-1) + (e @ w).sum(-1)     # the matmul sits between the two row reductions

    s = primitive_schedule(fn, rand(8, 16), rand(16, 16))
    assert len(s.kernels) == 3
    cycles = [r for r in s.refusals if "would create a cycle through kernel" in r.reason]
    assert cycles, [str(r) for r in s.refusals]
    via = int(re.search(r"kernel (\d+)$", cycles[0].reason).group(1))
    assert s.kernels[via].pattern == "matmul"
    assert "refused fusions" in report(s) and cycles[0].reason in report(s)


def test_different_iteration_spaces_are_refused_with_both_spaces_named() -> None:
    s = primitive_schedule(lambda x: x.sum(0) * x.sum(1).sum(), rand(8, 16))
    reasons = " | ".join(r.reason for r in s.refusals)
    assert "different iteration spaces" in reasons and "(8, 16)" in reasons


def test_row_value_broadcast_along_another_axis_is_not_fused() -> None:
    # out[i, j] needs the sum of row j, which a row kernel has not computed when it is at row i.
    x = rand(8, 8)
    s = primitive_schedule(lambda x: x + x.sum(1)[None, :], x)
    assert len(s.kernels) == 2
    assert any("computed once per row" in r.reason and "expand" in r.reason for r in s.refusals)
    fused = primitive_schedule(lambda x: x + x.sum(1)[:, None], x)  # the same row: one kernel
    assert len(fused.kernels) == 1


def test_fused_ops_are_opaque() -> None:
    x, w, b = rand(4, 16), rand(16), rand(16)
    lowered = tc.jit(lambda x, w, b: tc.exp(F.layer_norm(x, 16, w, b))).lower(x, w, b)
    patterns = [k.pattern for k in lowered.kernels]
    assert "fused_layernorm" in patterns and len(patterns) == 2
    assert any(r.reason == "fused op fused_layernorm is opaque" for r in lowered.schedule.refusals)


# ----------------------------------------------------------------------------- views and buffers


def test_no_buffer_is_allocated_for_pure_views() -> None:
    x = rand(4, 6)
    s = primitive_schedule(lambda x: tc.exp(x.T.reshape(3, 2, 4)[:, 1:, ::2] * 2.0), x)
    assert len(s.kernels) == 1
    assert sorted(b.role for b in s.buffers if b.role != "constant") == ["input", "output"]
    assert not any(b.node.op in ("reshape", "permute", "slice") for b in s.buffers)
    assert s.materializations == []
    check_runs_like_evaluate(s, x)


def test_concat_and_pad_are_read_as_masked_views() -> None:
    a, b = rand(3, 4), rand(3, 2)
    s = primitive_schedule(lambda a, b: tc.exp(tc.concat([a, b], 1)) + tc.pad(a, [(0, 0), (1, 1)], 1.0), a, b)
    assert len(s.kernels) == 1
    assert [b.role for b in s.buffers if b.role != "constant"] == ["input", "input", "output"]
    check_runs_like_evaluate(s, a, b)


def test_view_that_no_strided_view_expresses_is_materialized_and_reported() -> None:
    x, w = rand(2, 4, 3, 5), rand(12, 7)

    def fn(x: Any, w: Any) -> Any:
        return x.permute(0, 3, 1, 2).reshape(10, 12) @ w  # merges axes a permute made non-adjacent

    s = primitive_schedule(fn, x, w)
    assert len(s.materializations) == 1
    forced = s.materializations[0]
    assert forced.node.op == "permute" and "cannot read" in forced.reason
    assert s.kernels[0].pattern == "copy" and s.buffer_of[id(forced.node)].role == "temporary"
    assert "forced materializations" in report(s) and forced.reason in report(s)
    check_runs_like_evaluate(s, x, w)


def test_buffer_plan_reuses_dead_buffers() -> None:
    ws = [rand(32, 32) for _ in range(8)]

    def chain(x: Any, ws: Any) -> Any:
        for w in ws:
            x = tc.tanh(x @ w)
        return x

    s = primitive_schedule(chain, rand(16, 32), ws)
    assert len(s.kernels) == 8 and all(k.pattern == "matmul+tanh" for k in s.kernels)
    plan = s.plan
    assert plan.peak_bytes < plan.total_bytes
    assert plan.arena_bytes <= 2 * 16 * 32 * 4  # ping-pong between two activation buffers
    assert plan.peak_live_bytes <= plan.peak_bytes


def test_views_compose_like_numpy() -> None:
    base = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    chains = [
        [("permute", (2, 0, 1)), ("slice", ((1, 0, 0), (4, 2, 3), (2, 1, 2)))],
        [("reshape", (6, 4)), ("slice", ((1, 0), (6, 4), (2, 3))), ("expand_axis", 1)],
        [("pad", ((0, 1, 0), (1, 0, 2))), ("slice", ((0, 1, 1), (3, 4, 6), (1, 1, 2)))],
        [("reshape", (2, 12)), ("permute", (1, 0)), ("reshape", (3, 4, 2))],
    ]
    for chain in chains:
        view: View | None = View.contiguous(base.shape)
        ref = base
        for op, arg in chain:
            if op == "permute":
                view, ref = view.permute(arg), ref.transpose(arg)
            elif op == "reshape":
                view, ref = view.reshape(arg), ref.reshape(arg)
            elif op == "slice":
                view, ref = view.slice(*arg), ref[tuple(slice(a, b, c) for a, b, c in zip(*arg))]
            elif op == "pad":
                view, ref = view.pad(arg[0], arg[1], -1.0), np.pad(ref, list(zip(*arg)), constant_values=-1.0)
            elif op == "expand_axis":
                shape = ref.shape[:arg] + (1,) + ref.shape[arg:]
                view, ref = view.reshape(shape).expand(shape[:arg] + (5,) + shape[arg + 1:]), np.broadcast_to(
                    ref.reshape(shape), shape[:arg] + (5,) + shape[arg + 1:])
            if view is None:
                break
        if view is None:  # the last chain merges permuted axes: not one strided view
            assert chain is chains[-1]
            continue
        flat = base.reshape(-1)
        got = np.empty(view.shape, np.float32)
        for idx in np.ndindex(*view.shape):
            inside = view.mask is None or all(lo <= i < hi for i, (lo, hi) in zip(idx, view.mask))
            got[idx] = flat[view.offset + sum(i * s for i, s in zip(idx, view.strides))] if inside else view.fill
        np.testing.assert_array_equal(got, ref)


# ----------------------------------------------------------------------------- roles


def test_argument_and_output_roles() -> None:
    params = {"w": rand(4, 4), "b": rand(4)}
    opt_state = {"m": np.zeros((4, 4), np.float32)}
    x = rand(2, 4)

    def step(params: Any, opt_state: Any, x: Any) -> Any:
        loss = tc.tanh(x @ params["w"] + params["b"]).sum()
        return {"loss": loss, "grads": {"w": params["w"] * 2.0}, "opt_state": {"m": opt_state["m"] + 1.0}}

    roles = {b.name: b.role for b in tc.jit(step).lower(params, opt_state, x).buffers}
    assert roles["%params_w"] == roles["%params_b"] == "parameter"
    assert roles["%opt_state_m"] == "optimizer_state" and roles["%x"] == "input"
    assert sorted(r for r in roles.values() if r not in ("constant",)) == sorted(
        ["parameter", "parameter", "optimizer_state", "input", "temporary", "output", "gradient", "optimizer_state"])
    explicit = tc.jit(lambda w, x: (x @ w).sum(), arg_roles={"w": "parameter"}).lower(params["w"], x)
    assert [b.role for b in explicit.buffers if b.node.op == "param"] == ["parameter", "input"]


def test_grad_outputs_are_gradients_and_saved_forward_values_are_activations() -> None:
    params = {"w1": rand(8, 16), "w2": rand(16, 4)}
    x = rand(5, 8)

    def loss(params: Any, x: Any) -> Any:
        return (tc.tanh(x @ params["w1"]) @ params["w2"]).sum()

    for fn in (tc.grad(loss), tc.value_and_grad(loss)):
        lowered = tc.jit(fn).lower(params, x)
        roles = [b.role for b in lowered.buffers]
        assert roles.count("gradient") == 2 and roles.count("parameter") == 2
        saved = [b for b in lowered.buffers if b.role == "activation"]
        assert [b.node.shape for b in saved] == [(5, 16)]  # tanh(x @ w1), read by both gradients
        assert "activation" in lowered.report()


# ----------------------------------------------------------------------------- a GPT block, forward and backward


def gpt_block_loss(params: Any, x: Any, y: Any) -> Any:
    B, T, C = x.shape
    nh = 4
    h = F.layer_norm(x, C, params["ln1_w"], params["ln1_b"])
    q, k, v = tc.split(h @ params["attn_w"] + params["attn_b"], C, 2)
    q = q.reshape(B, T, nh, C // nh).permute(0, 2, 1, 3)  # (B, nh, T, hs)
    k = k.reshape(B, T, nh, C // nh).permute(0, 2, 1, 3)
    v = v.reshape(B, T, nh, C // nh).permute(0, 2, 1, 3)
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True).permute(0, 2, 1, 3).reshape(B, T, C)
    x = x + a @ params["proj_w"] + params["proj_b"]
    h = F.layer_norm(x, C, params["ln2_w"], params["ln2_b"])
    x = x + F.gelu(h @ params["fc_w"] + params["fc_b"]) @ params["fc2_w"] + params["fc2_b"]
    logits = x @ params["head"]  # (B, T, V)
    return F.cross_entropy(logits.reshape(B * T, -1), y.reshape(B * T))


def gpt_block_args() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    C, V = 16, 24
    params = {"ln1_w": 1 + rand(C), "ln1_b": rand(C), "attn_w": rand(C, 3 * C), "attn_b": rand(3 * C),
              "proj_w": rand(C, C), "proj_b": rand(C), "ln2_w": 1 + rand(C), "ln2_b": rand(C),
              "fc_w": rand(C, 4 * C), "fc_b": rand(4 * C), "fc2_w": rand(4 * C, C), "fc2_b": rand(C), "head": rand(C, V)}
    return params, rand(2, 6, C), RNG.integers(0, V, (2, 6))


@pytest.mark.parametrize("pattern_fusion", [False, True])
def test_gpt_block_forward_backward_runs_kernel_by_kernel_like_evaluate(pattern_fusion: bool,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    args = gpt_block_args()
    leaves = [np.asarray(a) for a in tc.tree_flatten(args)[0]]
    with contextlib.ExitStack() as stack:
        if not pattern_fusion:
            stack.enter_context(no_pattern_fusion(monkeypatch))
        lowered = tc.jit(tc.grad(gpt_block_loss)).lower(*args)
        s = lowered.schedule
        got, want = run_schedule(s, leaves), evaluate(lowered.optimized, leaves)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    if pattern_fusion:
        # Fused nodes already stand for whole subgraphs, so compare with the schedule of the unfused graph.
        with no_pattern_fusion(monkeypatch):
            unfused = tc.jit(tc.grad(gpt_block_loss)).lower(*args).schedule
        assert len(s.kernels) < len(unfused.kernels)
        assert {"fused_attention", "fused_attention_bwd", "fused_layernorm", "fused_layernorm_bwd", "fused_softmax_xent",
                "fused_softmax_xent_bwd"} <= {k.pattern for k in s.kernels}
    else:
        assert len(s.kernels) < len([n for n in s.graph.nodes if n.op not in ("param", "const", "reshape", "expand")]) / 3
    roles = {b.role for b in s.buffers}
    assert {"parameter", "gradient", "activation", "input"} <= roles
    assert s.plan.peak_bytes < s.plan.total_bytes
    if not pattern_fusion:  # the attention output's head merge is a transpose no view can express
        assert any(m.node.op == "permute" for m in s.materializations)


def test_compile_runs_the_schedule() -> None:
    args = gpt_block_args()
    compiled = tc.jit(tc.value_and_grad(gpt_block_loss)).lower(*args).compile("reference")
    assert isinstance(compiled.executable, ScheduledExecutable)
    value, grads = compiled(*args)
    want = evaluate(compiled.lowered.optimized, [np.asarray(a) for a in tc.tree_flatten(args)[0]])
    np.testing.assert_allclose(value, want[0], rtol=1e-5)
    assert set(grads) == set(args[0])


def test_scan_is_its_own_kernel_with_a_scheduled_body() -> None:
    def rnn(h: Any, xs: Any, w: Any) -> Any:
        return tc.scan(lambda h, x: (tc.tanh(h @ w + x), h.sum()), h, xs)

    h, xs, w = rand(2, 4), rand(5, 2, 4), rand(4, 4)
    lowered = tc.jit(rnn).lower(h, xs, w)
    scans = [k for k in lowered.kernels if k.pattern == "scan"]
    assert len(scans) == 1 and scans[0].body is not None
    assert [k.pattern for k in scans[0].body.kernels] == ["matmul+tanh", "reduce(sum)"]
    assert "body (5 steps" in lowered.report()
    got = tc.jit(rnn, target="reference")(h, xs, w)  # the schedule run kernel by kernel, against the interpreter
    want = evaluate(lowered.optimized, [h, xs, w])
    for g, w_ in zip(tc.tree_flatten(got)[0], want):
        np.testing.assert_allclose(g, w_, rtol=1e-6)


def test_outputs_that_are_inputs_views_or_constants() -> None:
    x = rand(3, 4)
    fn = tc.jit(lambda x: (x, x.T, x.reshape(12), tc.zeros(2), tc.exp(x), tc.iota((3, 2), 1).reshape(6), tc.tensor(2.0)))
    lowered = fn.lower(x)
    assert [k.pattern for k in lowered.kernels].count("copy") == 3  # x.T, the broadcast zeros, the iota
    want_all = (x, x.T, x.reshape(12), np.zeros(2), np.exp(x), np.array([0, 1, 0, 1, 0, 1]), np.float32(2.0))
    for got, want in zip(fn(x), want_all):
        np.testing.assert_allclose(got, want, rtol=1e-6)


STEPS = st.lists(st.tuples(st.sampled_from(["exp", "tanh", "mul", "add", "row", "col", "all", "matmul", "transpose",
                                              "slice", "pad", "concat"]), st.integers(0, 7)), min_size=1, max_size=8)


@settings(deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_random_programs_schedule_and_run_like_evaluate(steps: list[tuple[str, int]]) -> None:
    """Random chains of elementwise ops, row/column/full reductions broadcast back, matmuls and views."""
    x, y, w = rand(4, 6), rand(4, 6), rand(6, 6)

    def program(x: Any, y: Any, w: Any) -> Any:
        values = [x, y]
        v = x
        for op, k in steps:
            other = values[k % len(values)]
            if op == "exp":
                v = tc.exp(v * 0.1)
            elif op == "tanh":
                v = tc.tanh(v)
            elif op == "mul":
                v = v * other
            elif op == "add":
                v = v + other
            elif op == "row":
                v = v - v.max(-1, keepdims=True)
            elif op == "col":
                v = v / (tc.abs(v).sum(0, keepdims=True) + 1.0)
            elif op == "all":
                v = v * v.mean()
            elif op == "matmul":
                v = v @ w
            elif op == "transpose":
                v = (v.T * 2.0).T
            elif op == "slice":
                v = tc.pad(v[:, 1:], [(0, 0), (0, 1)], 0.5)
            elif op == "pad":
                v = tc.pad(v, [(1, 0), (0, 0)])[:4] + other
            elif op == "concat":
                v = tc.concat([v[:, :2], other[:, 2:]], 1)
            values.append(v)
        return v, values[len(values) // 2].sum(-1)

    s = primitive_schedule(program, x, y, w)
    check_runs_like_evaluate(s, x, y, w)
    assert len(s.kernels) <= len([n for n in s.graph.nodes if n.op not in ("param", "const", "reshape", "expand")])
    assert s.plan.arena_bytes <= sum(b.nbytes for b in s.buffers if b.producer is not None)


# ----------------------------------------------------------------------------- reports


def test_report_has_every_section() -> None:
    params = {"w": rand(8, 8), "b": rand(8)}
    text = tc.jit(tc.grad(lambda params, x: F.gelu(x @ params["w"] + params["b"]).sum())).lower(params, rand(4, 8)).report()
    for section in ("kernels (launch order)", "totals", "buffers", "peak memory", "memory by role",
                    "B/param", "forced materializations", "refused fusions"):
        assert section in text, section
    assert "matmul+bias+gelu" in text and "FLOP/B" in text and "gradient" in text


def test_to_dot_has_one_cluster_per_kernel() -> None:
    lowered = tc.jit(lambda x, w: tc.softmax(tc.tanh(x @ w), -1).sum(0)).lower(rand(4, 8), rand(8, 8))
    dot = lowered.to_dot()
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
    clusters = re.findall(r"subgraph cluster_(\d+) \{", dot)
    assert [int(c) for c in clusters] == list(range(len(lowered.kernels)))
    assert dot.count("{") == dot.count("}")
    names = set(re.findall(r"^\s*(n\d+) \[", dot, re.M))
    edges = re.findall(r"^\s*(n\d+) -> (n\d+);", dot, re.M)
    assert edges and all(a in names and b in names for a, b in edges)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_debug_levels_log_the_schedule(level: int, caplog: pytest.LogCaptureFixture) -> None:
    fn = tc.jit(lambda x: tc.softmax(x, -1) * 2.0)
    with tc.config(debug=level), caplog.at_level(logging.WARNING, logger="tensorc"):
        fn(rand(4, 8))
    text = caplog.text
    assert "1 kernel (" in text and "schedule" in text and "ms" in text
    assert ("kernel   0 softmax-row" in text) == (level == 2)
    assert ("refused fusions" in text) == (level >= 3)
