"""``grad``, ``value_and_grad`` and ``vjp``: the user-facing transforms.

Each traces the function into a Graph, builds its reverse-mode graph with
:func:`~tensorc.autodiff.transform.vjp_graph`, and runs that graph where it
was called: inlined into an enclosing ``jit`` (or another ``grad``), or
evaluated eagerly. They compose with ``jit`` and with each other in any order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import DTypeError, TensorcError
from ..frontend import pytree
from ..frontend.jit import _arg_names, _pretty_path
from ..frontend.ops import as_tensor
from ..frontend.tensor import Tensor
from ..frontend.tracing import call_graph, trace_scope
from ..ir.node import Graph
from .transform import vjp_graph


def _is_array(x: Any) -> bool:
    return isinstance(x, (Tensor, np.ndarray, np.generic))


def _trace(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], diff_leaf: Callable[[int, str], bool],
           name: str, fuse: bool = True) -> tuple[Graph, list[Tensor], list[int], Any, list[str]]:
    """Trace ``fn``; array leaves (and Python floats chosen by ``diff_leaf``) become inputs.

    Returns the graph (inputs: leaves then captured tensors), the tensors to
    call it with, the leaf position of each input, the output, and input paths.
    """
    with_path, treedef = pytree.flatten_with_path((args, kwargs))
    call_inputs: list[Tensor] = []
    positions: list[int] = []
    paths: list[str] = []
    with trace_scope(name) as tr:
        leaves = []
        for i, (path, leaf) in enumerate(with_path):
            if _is_array(leaf) or (isinstance(leaf, float) and diff_leaf(i, path)):
                t = as_tensor(leaf)
                node = tr.new_param(t.shape, t.dtype, path)
                leaves.append(Tensor._traced(node, tr))
                call_inputs.append(t)
                positions.append(i)
                paths.append(path)
            else:
                leaves.append(leaf)
        a, k = pytree.unflatten(treedef, leaves)
        out = fn(*a, **k)
        out_leaves, out_tree = pytree.flatten(out)
        out_nodes = [tr.lift(as_tensor(v)) for v in out_leaves]
    capture_params = [tr._capture_nodes[id(t)] for t in tr.captured]
    graph = Graph(tr.params + capture_params, out_nodes, name=name)
    if fuse:
        from ..passes.manager import PassManager, autodiff_prepasses

        graph = PassManager(autodiff_prepasses()).run(graph)
    return graph, call_inputs + list(tr.captured), positions, (out_tree, len(out_leaves)), paths


def _argnum_ranges(args: tuple[Any, ...], argnums: tuple[int, ...]) -> tuple[list[tuple[int, int]], list[Any]]:
    """Leaf-index ranges of each differentiated argument, in (args, kwargs) flattening order."""
    ranges, trees = [], []
    offset = 0
    for i, a in enumerate(args):
        n = pytree.flatten(a)[1].num_leaves
        if i in argnums:
            ranges.append((offset, offset + n))
            trees.append(pytree.flatten(a)[1])
        offset += n
    return ranges, trees


def value_and_grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable[..., Any]:
    """A function returning ``(fn(*args), gradient of fn w.r.t. args[argnums])``.

    ``fn`` must return a float scalar (or ``(scalar, aux)`` with ``has_aux``).
    Gradients are pytrees shaped like the differentiated arguments.

    >>> import tensorc as tc
    >>> v, g = tc.value_and_grad(lambda x: (x * x).sum())(tc.tensor([1.0, 2.0]))
    >>> float(v), g.tolist()
    (5.0, [2.0, 4.0])
    """
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    name = getattr(fn, "__name__", "fn")

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        for n in nums:
            if not -len(args) <= n < len(args):
                raise TensorcError(f"grad of {name}: argnums {n} is out of range for {len(args)} positional arguments")
        norm = tuple(n % len(args) for n in nums)
        ranges, trees = _argnum_ranges(args, norm)

        def diff_leaf(i: int, path: str) -> bool:
            return any(lo <= i < hi for lo, hi in ranges)

        graph, call_inputs, positions, (out_tree, n_out), paths = _trace(fn, args, kwargs, diff_leaf, f"grad_{name}")
        out_nodes = graph.outputs
        if has_aux:
            if out_tree.kind != "tuple" or len(out_tree.children) != 2:
                raise TensorcError(f"grad of {name} with has_aux=True: fn must return (value, aux)")
            n_value = out_tree.children[0].num_leaves
        else:
            n_value = n_out
        if n_value != 1 or out_nodes[0].shape != () or not out_nodes[0].dtype.is_float:
            got = ", ".join(o.type_str for o in out_nodes[:n_value])
            raise TensorcError(f"grad of {name}: fn must return a float scalar, got {got}; use tc.vjp for non-scalar outputs")
        wrt = []
        for k, pos in enumerate(positions):
            if diff_leaf(pos, paths[k]):
                p = graph.inputs[k]
                if not p.dtype.is_float:
                    arg = _pretty_path(paths[k], _arg_names(fn))
                    raise DTypeError(f"grad of {name}: argument {arg} is {p.type_str}; integer and bool inputs have no gradient "
                                     "(differentiate with respect to float arguments only, see argnums)")
                wrt.append(k)
        backward = vjp_graph(graph, wrt=wrt, ct_outputs=[0])
        seed = as_tensor(np.ones((), out_nodes[0].dtype.np))
        results = call_graph(backward, call_inputs + [seed])
        outs, grads = results[:len(out_nodes)], results[len(out_nodes):]
        value = pytree.unflatten(out_tree, outs)
        by_leaf = dict(zip((positions[k] for k in wrt), grads))
        grad_trees = [pytree.unflatten(td, [by_leaf.get(i) for i in range(lo, hi)]) for (lo, hi), td in zip(ranges, trees)]
        g = grad_trees[0] if isinstance(argnums, int) else tuple(grad_trees)
        return value, g

    return wrapped


def grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable[..., Any]:
    """The gradient of scalar-valued ``fn`` w.r.t. ``args[argnums]`` (with ``aux`` if ``has_aux``).

    >>> import tensorc as tc
    >>> tc.grad(lambda x: tc.tanh(x))(0.0)
    Tensor(1., dtype=float32)
    """
    vg = value_and_grad(fn, argnums, has_aux)

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        value, g = vg(*args, **kwargs)
        return (g, value[1]) if has_aux else g

    return wrapped


def vjp(fn: Callable[..., Any], *primals: Any, has_aux: bool = False) -> Any:
    """``(fn(*primals), vjp_fn)``; ``vjp_fn(cotangent)`` returns one gradient per primal
    (None for integer/bool primals).

    >>> import tensorc as tc
    >>> out, back = tc.vjp(lambda x: x * 3.0, tc.tensor([1.0, 2.0]))
    >>> back(tc.tensor([1.0, 10.0]))[0].tolist()
    [3.0, 30.0]
    """
    name = getattr(fn, "__name__", "fn")
    graph, call_inputs, positions, (out_tree, n_out), paths = _trace(fn, primals, {}, lambda i, p: True, f"vjp_{name}")
    if has_aux:
        if out_tree.kind != "tuple" or len(out_tree.children) != 2:
            raise TensorcError(f"vjp of {name} with has_aux=True: fn must return (out, aux)")
        n_primary = out_tree.children[0].num_leaves
        primary_tree = out_tree.children[0]
    else:
        n_primary, primary_tree = n_out, out_tree
    outs = call_graph(graph, call_inputs)
    result = pytree.unflatten(out_tree, outs)
    float_out = [i for i in range(n_primary) if graph.outputs[i].dtype.is_float]
    wrt = [k for k, p in enumerate(graph.inputs[:len(positions)]) if p.dtype.is_float]
    backward: list[Graph] = []
    _, primal_tree = pytree.flatten(primals)

    def vjp_fn(cotangent: Any) -> tuple[Any, ...]:
        ct_leaves, ct_tree = pytree.flatten(cotangent)
        if ct_tree != primary_tree:
            raise TensorcError(f"vjp of {name}: cotangent has structure {ct_tree}, output has {primary_tree}")
        cts = []
        for i in float_out:
            ct = as_tensor(ct_leaves[i])
            o = graph.outputs[i]
            if ct.shape != o.shape or ct.dtype != o.dtype:
                raise TensorcError(f"vjp of {name}: cotangent {i} is {ct.dtype.short}{list(ct.shape)}, output is {o.type_str}")
            cts.append(ct)
        if not backward:
            backward.append(vjp_graph(graph, wrt=wrt, ct_outputs=float_out))
        res = call_graph(backward[0], call_inputs + cts)[len(graph.outputs):]
        by_leaf = dict(zip((positions[k] for k in wrt), res))
        return tuple(pytree.unflatten(primal_tree, [by_leaf.get(i) for i in range(primal_tree.num_leaves)]))

    return (result[0], vjp_fn, result[1]) if has_aux else (result, vjp_fn)
