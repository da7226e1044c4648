"""The simplification passes and the pass manager, one behaviour at a time."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import tensorc as tc
from tensorc.backends.reference import evaluate
from tensorc.ir.node import Graph
from tensorc.ir.verifier import VerifyError
from tensorc.passes import PassManager, cse, dce, optimize, simplify

X = np.arange(12, dtype=np.float32).reshape(3, 4)


def graph_of(fn, *args) -> Graph:  # noqa: ANN001
    return tc.jit(fn).lower(*args).graph


def ops(graph: Graph) -> Counter:
    return Counter(n.op for n in graph.nodes)


def same_results(a: Graph, b: Graph, *args: np.ndarray) -> None:
    for u, v in zip(evaluate(a, list(args)), evaluate(b, list(args))):
        np.testing.assert_array_equal(u, v)


def test_algebraic_identities_vanish():
    g = graph_of(lambda x: -(-((x + 0.0) * 1.0 - 0.0) / 1.0), X)
    s = simplify(g)
    assert not {"add", "mul", "sub", "div", "neg"} & set(ops(s))
    same_results(g, s, X)


def test_x_times_zero_is_kept_because_inf_times_zero_is_nan():
    g = graph_of(lambda x: x * 0.0, X)
    assert ops(simplify(g))["mul"] == 1


def test_movement_chains_fold():
    g = graph_of(lambda x: x.reshape(4, 3).reshape(12).reshape(3, 4).permute(1, 0).permute(1, 0).astype("float64").astype("float32"), X)
    s = simplify(g)
    assert ops(s)["reshape"] == 0 and ops(s)["permute"] == 0 and ops(s)["cast"] == 0
    same_results(g, s, X)


def test_lossy_cast_pairs_are_not_folded():
    g = graph_of(lambda x: x.astype("float16").astype("float32"), X + 0.1)
    assert ops(simplify(g))["cast"] == 2


def test_small_constants_fold_but_expanded_scalars_stay_views():
    g = graph_of(lambda x: x + (tc.tensor([0.0, 1.0, 2.0, 3.0]) * 2.0 + 1.0) + 5.0, X)
    s = simplify(g)
    consts = [n for n in s.nodes if n.op == "const"]
    assert ops(s)["mul"] == 0 and ops(s)["add"] == 2  # [0,1,2,3] * 2 + 1 became one constant
    assert all(c.attrs["value"].array.size <= 4 for c in consts)  # 5.0 stays one element, expanded as a view
    same_results(g, s, X)


def test_cse_merges_structurally_equal_nodes():
    g = graph_of(lambda x: tc.exp(x) + tc.exp(x) * tc.exp(x), X)
    c = cse(g)
    assert ops(g)["exp"] == 3 and ops(c)["exp"] == 1
    same_results(g, c, X)


def test_dce_drops_scan_outputs_nobody_reads():
    def f(xs):
        def body(h, x):
            h = tc.tanh(h + x)
            return h, (h * 2.0, tc.exp(h))  # only the first per-step output is used below

        h, (doubled, _unused) = tc.scan(body, tc.zeros(4), xs)
        return h, doubled

    xs = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    g = graph_of(f, xs)
    d = dce(g)
    scan = next(n for n in d.nodes if n.op == "scan")
    assert len(scan.dtype) == 2  # the carry and the one read output
    assert "exp" not in ops(scan.attrs["body"])
    same_results(g, d, xs)


def test_pass_manager_records_history_and_runs_the_verifier():
    g = graph_of(lambda x: tc.exp(x) + tc.exp(x) + 0.0, X)
    out, pm = optimize(g)
    assert [r.name for r in pm.history] == ["simplify", "cse", "fuse_patterns", "dce"]
    assert pm.history[0].nodes_after < pm.history[0].nodes_before
    assert "simplify" in pm.summary()
    broken = PassManager([("break_types", lambda graph: Graph(graph.inputs, [graph.outputs[0].replace(shape=(99,))]))])
    with tc.config(verify=1), pytest.raises(VerifyError, match="break_types|stores"):
        broken.run(g)


def test_debug_level_5_logs_the_graph_after_each_pass_and_dump_dir_writes_it(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    g = graph_of(lambda x: tc.exp(x) + 0.0, X)
    with caplog.at_level(logging.WARNING, logger="tensorc"), tc.config(debug=5, dump_dir=str(tmp_path)):
        optimize(g)
    assert any("after simplify" in r.getMessage() for r in caplog.records)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files and files[0].endswith("simplify.txt") and any(f.endswith("dce.txt") for f in files)
    assert "graph" in (tmp_path / files[0]).read_text()
