"""``tc.jit``: caching by signature, recompile logging, static arguments, pytrees,
tracer errors, the printed graph and the verifier."""

from __future__ import annotations

import logging
import re
from collections import namedtuple
from typing import Any

import numpy as np
import pytest
from strategies import op_names

import tensorc as tc
from tensorc.ir.node import Attrs, Graph, Node
from tensorc.ir.verifier import VerifyError, verify


def f32(*shape: int) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) / 10


# ----------------------------------------------------------------------------- caching


def test_compiles_once_per_signature() -> None:
    calls = []

    @tc.jit
    def f(x: Any, y: Any) -> Any:
        calls.append(1)  # Python side effects run at trace time only
        return x * y + 1

    np.testing.assert_allclose(f(f32(3), f32(3)), f32(3) * f32(3) + 1)
    f(f32(3) + 1, f32(3))  # new values, same signature
    assert f.compile_count == 1 and len(calls) == 1
    f(f32(4), f32(4))  # new shape
    f(f32(3).astype(np.float64), f32(3))  # new dtype
    assert f.compile_count == 3
    f(f32(3), f32(3))  # back to the first signature: cached
    assert f.compile_count == 3 and len(calls) == 3
    f(tc.tensor(f32(3)), f32(3))  # an eager tensor has the same signature as its array
    assert f.compile_count == 3


def test_recompile_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    @tc.jit
    def step(params: Any, x: Any, scale: float) -> Any:
        return (x @ params["w"]) * scale

    p = {"w": f32(3, 2)}
    with caplog.at_level(logging.INFO, logger="tensorc"):
        step(p, f32(4, 3), 2.0)
        assert not [r for r in caplog.records if "recompil" in r.getMessage()]
        step(p, f32(5, 3), 2.0)
        step({"w": f32(3, 7)}, f32(5, 3), 2.0)
        step({"w": f32(3, 7)}, f32(5, 3), 3.0)
        step({"w": f32(3, 7)}, f32(5, 3).astype(np.float64), 3.0)
        step({"w": f32(3, 7), "b": f32(7)}, f32(5, 3), 3.0)
    messages = [r.getMessage() for r in caplog.records if r.name == "tensorc" and "recompil" in r.getMessage()]
    assert len(messages) == 5 and step.compile_count == 6
    # Each names the argument (by its parameter name and path) and says how it changed.
    assert "x: f32[4,3] -> f32[5,3]" in messages[0]
    assert "params['w']: f32[3,2] -> f32[3,7]" in messages[1]
    assert "scale: static 2.0 -> static 3.0" in messages[2]
    assert "x: f32[5,3] -> f64[5,3]" in messages[3]
    assert "argument structure changed: params: {'w': *} -> {'b': *, 'w': *}" in messages[4]
    assert all("jit(step)" in m for m in messages)


def test_python_scalars_are_static() -> None:
    f = tc.jit(lambda x, n, flag: x.reshape(n, -1) * (2.0 if flag else 3.0))
    x = f32(6)
    np.testing.assert_allclose(f(x, 2, True), x.reshape(2, 3) * 2)
    np.testing.assert_allclose(f(x, 3, False), x.reshape(3, 2) * 3)
    assert f.compile_count == 2
    graph = f.lower(x, 2, True).graph
    assert len(graph.inputs) == 1  # only the array is an input; n and flag are baked in
    consts = [n.attrs["value"].array.item() for n in graph.nodes if n.op == "const"]
    assert consts == [2.0]
    # numpy scalars are arrays, not static: a new value does not recompile
    g = tc.jit(lambda x, s: x * s)
    g(x, np.float32(2.0))
    np.testing.assert_allclose(g(x, np.float32(5.0)), x * 5)
    assert g.compile_count == 1


def test_static_argnums(caplog: pytest.LogCaptureFixture) -> None:
    f = tc.jit(lambda x, axes: x.sum(axis=axes), static_argnums=1)
    x = f32(2, 3, 4)
    with caplog.at_level(logging.INFO, logger="tensorc"):
        np.testing.assert_allclose(f(x, (0, 2)), x.sum(axis=(0, 2)), rtol=1e-6)
        np.testing.assert_allclose(f(x, (1,)), x.sum(axis=1), rtol=1e-6)
    assert f.compile_count == 2
    assert any("axes: static (0, 2) -> static (1,)" in r.getMessage() for r in caplog.records)
    # A Compiled for static arguments is called with the same arguments as lower().
    compiled = f.lower(x, (1,)).compile()
    np.testing.assert_allclose(compiled(x, (1,)), x.sum(axis=1), rtol=1e-6)
    with pytest.raises(tc.TensorcError, match=re.escape("axes: static (1,) -> static (0,)")):
        compiled(x, (0,))
    with pytest.raises(tc.TensorcError, match="neither an array nor hashable"):
        tc.jit(lambda x, opts: x)(x, {1, 2})  # a set: not a container jit knows, and unhashable


# ----------------------------------------------------------------------------- pytrees

Pair = namedtuple("Pair", ["left", "right"])


def test_pytrees_in_and_out() -> None:
    @tc.jit
    def f(params: dict[str, Any], batch: tuple[Any, ...], extras: list[Any]) -> Any:
        w, b = params["layer"]["w"], params["layer"]["b"]
        x, y = batch
        h = x @ w + b
        return {"h": h, "parts": [h.sum(), (y * 2, None)], "pair": Pair(extras[0] + 1, extras[1] - 1)}

    params = {"layer": {"w": f32(3, 2), "b": f32(2)}}
    x, y, e0, e1 = f32(4, 3), f32(5), f32(2, 2), f32(1)
    out = f(params, (x, y), [e0, e1])
    assert set(out) == {"h", "parts", "pair"}
    np.testing.assert_allclose(out["h"], x @ params["layer"]["w"] + params["layer"]["b"], rtol=1e-6)
    assert isinstance(out["parts"], list) and isinstance(out["parts"][1], tuple) and out["parts"][1][1] is None
    np.testing.assert_allclose(out["parts"][0], out["h"].sum(), rtol=1e-6)
    np.testing.assert_allclose(out["parts"][1][0], y * 2)
    assert isinstance(out["pair"], Pair)
    np.testing.assert_allclose(out["pair"].left, e0 + 1)
    np.testing.assert_allclose(out["pair"].right, e1 - 1)
    # Graph inputs are named after their paths.
    names = [p.attrs["name"] for p in f.lower(params, (x, y), [e0, e1]).graph.inputs]
    assert names == ["params['layer']['b']", "params['layer']['w']", "batch[0]", "batch[1]", "extras[0]", "extras[1]"]


def test_kwargs_and_non_tensor_outputs() -> None:
    f = tc.jit(lambda x, *, scale=1.0: {"y": x * scale, "n": 3})
    out = f(f32(2), scale=4.0)
    np.testing.assert_allclose(out["y"], f32(2) * 4)
    assert int(out["n"]) == 3
    with pytest.raises(tc.TensorcError, match="returned a str"):
        tc.jit(lambda x: (x, "text"))(f32(2))


def test_compiled_with_wrong_arguments_says_what_it_expected() -> None:
    f = tc.jit(lambda params, x: x @ params["w"])
    compiled = f.lower({"w": f32(3, 2)}, f32(4, 3)).compile()
    np.testing.assert_allclose(compiled({"w": f32(3, 2)}, f32(4, 3)), f32(4, 3) @ f32(3, 2), rtol=1e-6)
    with pytest.raises(tc.TensorcError) as e:
        compiled({"w": f32(3, 2), "b": f32(2)}, f32(4, 3))
    msg = str(e.value)
    assert "argument structure changed: params: {'w': *} -> {'b': *, 'w': *}" in msg and "expected structure: (({'w': *}, *), {})" in msg
    with pytest.raises(tc.TensorcError, match=r"x: f32\[4,3\] -> f32\[5,3\]"):
        compiled({"w": f32(3, 2)}, f32(5, 3))
    with pytest.raises(tc.TensorcError, match="expected structure"):
        compiled(f32(3, 2), f32(4, 3))


# ----------------------------------------------------------------------------- nesting and tracer errors


def test_nested_jit_is_inlined() -> None:
    inner = tc.jit(lambda a: tc.exp(a) * 2)

    @tc.jit
    def outer(x: Any) -> Any:
        return inner(x) + inner(x * 3)

    x = f32(3)
    np.testing.assert_allclose(outer(x), np.exp(x) * 2 + np.exp(x * 3) * 2, rtol=1e-6)
    assert inner.compile_count == 0  # traced into outer, never compiled on its own
    ops = op_names(outer.lower(x).graph)
    assert ops.count("exp") == 2 and all(op in tc.ir.REGISTRY for op in ops)


def test_leaked_tracer_is_an_error() -> None:
    leaked = []

    @tc.jit
    def f(x: Any) -> Any:
        y = x * 2
        leaked.append(y)  # marker: leak
        return y

    f(f32(3))
    (t,) = leaked
    with pytest.raises(tc.TracerError, match=r"test_jit\.py:\d+.*outside the function that traced it"):
        t + 1
    with pytest.raises(tc.TracerError, match="outside the function that traced it"):
        tc.jit(lambda a: a + t)(f32(3))
    with pytest.raises(tc.TracerError):
        t.numpy()
    with pytest.raises(tc.TracerError):
        tc.exp(t)


@pytest.mark.parametrize("use", [bool, float, int, lambda t: t.item(), lambda t: t.numpy(), lambda t: t.tolist(), np.asarray,
                                 lambda t: 1 if t > 0 else 0])
def test_concrete_value_of_a_traced_tensor_is_an_error(use: Any) -> None:
    with pytest.raises(tc.TracerError, match="concrete value"):
        tc.jit(lambda x: use(x.sum()))(f32(3))


def test_traced_tensor_repr_and_shape_are_available() -> None:
    seen = {}

    def f(x: Any) -> Any:
        seen["repr"], seen["shape"], seen["len"] = repr(x), x.shape, len(x)
        return x

    tc.jit(f)(f32(4, 2))
    assert seen == {"repr": "Tensor<traced f32[4,2] param>", "shape": (4, 2), "len": 4}


# ----------------------------------------------------------------------------- printer and verifier


def golden(x: Any, w: Any, b: Any) -> Any:
    h = tc.tanh(x @ w + b)
    return h.sum(axis=0), h[:, ::2]


GOLDEN = """\
graph golden(%x: f32[2,3], %w: f32[3,4], %b: f32[4]) -> (f32[4], f32[2,2]):
  %0 = matmul %x, %w                                        : f32[2,4]  # test_jit.py:{a}
  %1 = reshape %b {{shape=(1, 4)}}                            : f32[1,4]  # test_jit.py:{a}
  %2 = expand %1 {{shape=(2, 4)}}                             : f32[2,4]  # test_jit.py:{a}
  %3 = add %0, %2                                           : f32[2,4]  # test_jit.py:{a}
  %4 = tanh %3                                              : f32[2,4]  # test_jit.py:{a}
  %5 = sum %4 {{axes=(0,)}}                                   : f32[4]    # test_jit.py:{b}
  %6 = slice %4 {{starts=(0, 0), steps=(1, 2), stops=(2, 3)}} : f32[2,2]  # test_jit.py:{b}
  return %5, %6"""


def test_printer_golden_text() -> None:
    lowered = tc.jit(golden).lower(f32(2, 3), f32(3, 4), f32(4))
    first = golden.__code__.co_firstlineno
    assert str(lowered.graph) == GOLDEN.format(a=first + 1, b=first + 2)
    assert lowered.as_text() == str(lowered.graph)
    # Tracing again gives an equal graph with the same text (structural equality, stable names).
    again = tc.jit(golden).lower(f32(2, 3), f32(3, 4), f32(4)).graph
    assert again == lowered.graph and hash(again) == hash(lowered.graph) and str(again) == str(lowered.graph)


def test_scan_bodies_are_printed_after_the_graph() -> None:
    def cumsum(xs: Any) -> Any:
        return tc.scan(lambda c, x: (c + x, c), tc.zeros(2), xs)

    text = str(tc.jit(cumsum).lower(f32(5, 2)).graph)
    head, body = text.split("\n\n")
    assert head.startswith("graph cumsum(%xs: f32[5,2]) -> (f32[2], f32[5,2]):")
    assert "scan" in head and "body=@body0" in head and "n_carry=1" in head and "length=5" in head
    assert body.startswith("graph @body0(%carry0: f32[2], %x0: f32[2]) -> (f32[2], f32[2]):")


def test_verifier_accepts_traced_graphs() -> None:
    from test_models_forward import gpt_block, gpt_params

    graphs = [tc.jit(golden).lower(f32(2, 3), f32(3, 4), f32(4)).graph,
              tc.jit(lambda xs: tc.scan(lambda c, x: (c * x, c), tc.ones(2), xs)).lower(f32(3, 2)).graph,
              tc.jit(gpt_block, static_argnums=2).lower(gpt_params(np.random.default_rng(0), 8, "float32"), f32(1, 3, 8), 2).graph]
    for g in graphs:
        assert verify(g) is g
    with tc.config(verify=1):  # verify-on-lower mode
        tc.jit(golden).lower(f32(2, 3), f32(3, 4), f32(4))


def test_verifier_rejects_malformed_graphs() -> None:
    x = Node("param", (), Attrs({"shape": (2,), "dtype": tc.float32, "name": "x", "index": 0}), (2,), tc.float32)
    stray = Node("param", (), Attrs({"shape": (2,), "dtype": tc.float32, "name": "y", "index": 1}), (2,), tc.float32)
    wrong_type = Node("exp", (x,), Attrs(), (3,), tc.float32)
    with pytest.raises(VerifyError, match="stores f32\\[3\\]"):
        verify(Graph([x], [wrong_type]))
    with pytest.raises(VerifyError, match="not a graph input"):
        verify(Graph([x], [Node("add", (x, stray), Attrs(), (2,), tc.float32)]))
    with pytest.raises(VerifyError, match="type rule fails"):
        verify(Graph([x], [Node("exp", (Node("cast", (x,), Attrs({"dtype": tc.int32}), (2,), tc.int32),), Attrs(), (2,), tc.int32)]))
    with pytest.raises(VerifyError, match="unknown op"):
        verify(Graph([x], [Node("frobnicate", (x,), Attrs(), (2,), tc.float32)]))
    with pytest.raises(VerifyError, match="listed twice"):
        verify(Graph([x, x], [x]))
