"""What each buffer is for: parameter, gradient, optimizer state, activation, ...

- **Arguments.** ``tc.jit(fn, arg_roles={"w": "parameter"})`` names roles
  explicitly (by argument name, or by a leaf path such as ``"params['w']"``).
  Otherwise an argument called ``params``/``parameters`` holds parameters,
  one called ``opt_state``/``optimizer_state``/``state`` holds optimizer
  state, and every other array argument is an input.
- **Outputs.** A leaf under a dict key or namedtuple field called
  ``grads``/``grad``/``gradients`` is a gradient (``params``... and
  ``opt_state``... name parameters and optimizer state the same way). When the
  jitted function is ``tc.grad(f)`` or ``tc.value_and_grad(f)``, the leaves
  of its gradient part are gradients. Every other output is an output.
- **Intermediates** (kernel-written buffers that are not outputs) are
  *activations* when they are forward values kept for the backward pass, and
  *temporaries* otherwise. A program that returns no gradient has no
  activations. Otherwise the *forward part* is found, best source first:
  when the jitted function is ``tc.grad(f)``/``tc.value_and_grad(f)``, ``f``
  is traced and optimized alone and the forward part is every node of the
  program structurally equal to a node of ``f``'s graph; else, when the
  program also returns the value it differentiates, it is every node that
  value depends on. An activation is then a forward value read by a kernel
  that computes something outside the forward part. When neither applies (a
  hand-written training step), the turn from forward to backward is taken to
  be the launch at which the most intermediate bytes are live (where training
  memory peaks), and the activations are the intermediates live across it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..ir.node import Graph, Node

PARAMETER_NAMES = ("params", "parameters")
OPTIMIZER_NAMES = ("opt_state", "optimizer_state", "state")
GRADIENT_NAMES = ("grads", "grad", "gradients")
_ROOT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*")


def name_role(name: str) -> str | None:
    if name in PARAMETER_NAMES:
        return "parameter"
    if name in OPTIMIZER_NAMES:
        return "optimizer_state"
    if name in GRADIENT_NAMES:
        return "gradient"
    return None


def argument_role(path: str, arg_roles: Mapping[str, str] | None = None) -> str:
    """The role of the input leaf at ``path`` (``"params['w']"``, ``"x"``)."""
    m = _ROOT.match(path)
    root = m.group(0) if m else path
    if arg_roles:
        for key in (path, root):
            if key in arg_roles:
                return arg_roles[key]
    role = name_role(root)
    return role if role in ("parameter", "optimizer_state") else "input"


def _leaf_labels(treedef: Any) -> list[list[Any]]:
    """For each leaf of ``treedef``, the labels (dict keys, field names, positions) above it."""
    if treedef.kind == "leaf":
        return [[]]
    if treedef.kind == "dict":
        labels = list(treedef.aux)
    elif treedef.kind == "namedtuple":
        labels = list(getattr(treedef.aux[0], "_fields", range(len(treedef.children))))
    else:
        labels = list(range(len(treedef.children)))
    out = []
    for label, child in zip(labels, treedef.children):
        out += [[label] + rest for rest in _leaf_labels(child)]
    return out


def _grad_transform(fn: Callable[..., Any] | None) -> tuple[str, bool] | None:
    """("grad" | "value_and_grad", has_aux) when ``fn`` is made by tc.grad / tc.value_and_grad."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    from ..autodiff import grad, value_and_grad

    free = dict(zip(code.co_freevars, (c.cell_contents for c in (fn.__closure__ or ()))))
    if code is getattr(grad(len), "__code__", None):
        return "grad", bool(free.get("has_aux", False))
    if code is getattr(value_and_grad(len), "__code__", None):
        return "value_and_grad", bool(free.get("has_aux", False))
    return None


def output_roles(out_tree: Any, fn: Callable[..., Any] | None = None) -> list[str]:
    """The role of each output leaf, in flatten order."""
    labels = _leaf_labels(out_tree)
    roles = []
    for path in labels:
        role = next((r for r in (name_role(str(lab)) for lab in path if isinstance(lab, str)) if r), None)
        roles.append(role or "output")
    transform = _grad_transform(fn)
    if transform is not None:
        kind, has_aux = transform
        # grad: g or (g, aux); value_and_grad: (value, g)
        grad_pos = 1 if kind == "value_and_grad" else (0 if has_aux else None)
        for i, path in enumerate(labels):
            if grad_pos is None or (path and path[0] == grad_pos):
                roles[i] = "gradient"
    return roles


def primal_graph(fn: Callable[..., Any] | None, signature: Any) -> Graph | None:
    """The optimized graph of ``f`` when ``fn`` is ``tc.grad(f)``/``tc.value_and_grad(f)``, traced
    on placeholders of ``signature``'s shapes; None when ``fn`` is neither (or ``f`` fails to trace)."""
    primal = getattr(fn, "__wrapped__", None)
    if _grad_transform(fn) is None or primal is None:
        return None
    import numpy as np

    from ..frontend import pytree
    from ..frontend.jit import _arg_names, _Static, trace_to_graph
    from ..passes import optimize

    leaves = [np.broadcast_to(np.zeros((), leaf[2].np), leaf[1]) if leaf[0] == "array" else leaf[2] for leaf in signature.leaves]
    args, kwargs = pytree.unflatten(signature.treedef, leaves)

    def call(*a: Any, **k: Any) -> Any:
        return primal(*[v.value if isinstance(v, _Static) else v for v in a], **k)

    try:
        graph, _, _ = trace_to_graph(call, args, kwargs, getattr(primal, "__name__", "f"), _arg_names(primal))
        return optimize(graph)[0]
    except Exception:  # the heuristic below still applies
        return None


def _matching_nodes(graph: Graph, other: Graph) -> set[int]:
    """Ids of the nodes of ``graph`` structurally equal to a node of ``other``, found inputs first
    (so each comparison is shallow, not a walk over the whole ancestry)."""
    by_hash: dict[int, list[Node]] = {}
    for m in other.nodes:
        by_hash.setdefault(hash(m), []).append(m)
    match: dict[int, Node] = {}
    for n in graph.nodes:
        for m in by_hash.get(hash(n), ()):
            if (m.op == n.op and m.shape == n.shape and m.dtype == n.dtype and m.attrs == n.attrs
                    and len(m.inputs) == len(n.inputs) and all(match.get(id(a)) is b for a, b in zip(n.inputs, m.inputs))):
                match[id(n)] = m
                break
    return set(match)


def forward_nodes(graph: Graph, output_roles: Sequence[str], primal: Graph | None = None) -> set[int] | None:
    """Ids of the forward part of a program that returns gradients (see the module docstring), or None."""
    if "gradient" not in output_roles:
        return None
    if primal is not None:
        return _matching_nodes(graph, primal)
    primal_outputs = [o for o, r in zip(graph.outputs, output_roles) if r != "gradient" and not o.is_tuple and o.dtype.is_float]
    if not primal_outputs:
        return None
    seen: set[int] = set()
    stack: list[Node] = list(primal_outputs)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(node.inputs)
    return seen
